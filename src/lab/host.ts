/**
 * Host primitives of the lab: network namespaces, one persistent mount namespace per simulated
 * node, bridges, veth pairs, commands and long-running processes inside a node. Every object the
 * lab creates is written to `<root>/<prefix>/state.json` BEFORE it is created, so `down` removes
 * exactly what this lab created (and nothing else), in the right order, even after a crashed `up`.
 *
 * All commands go through an injected {@link Runner}; {@link systemRunner} is the real one.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

/** Default directory holding one sub-directory per lab prefix. */
export const DEFAULT_LAB_ROOT = '/run/weft-lab';

/** Directories inside every node's mount namespace that are private to that node. */
export const NODE_MOUNTPOINTS = { wireguard: '/run/wireguard', state: '/var/lib/weft', run: '/run/weft' } as const;

/** A command the lab ran failed (non-zero exit, timeout, or it could not start). */
export class LabCommandError extends Error {
  override name = 'LabCommandError';
  readonly code: number | null;
  readonly stderr: string;
  constructor(message: string, code: number | null, stderr: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.stderr = stderr;
  }
}

/** The lab cannot run on this host (not root, a tool missing, ...). The message says what to install. */
export class LabRequirementError extends Error {
  override name = 'LabRequirementError';
}

/** The lab's state is unusable (bad prefix, a lab already up, an object exists that the lab did not create). */
export class LabStateError extends Error {
  override name = 'LabStateError';
}

/** What a finished command returned. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of {@link Runner.run}. */
export interface RunOptions {
  /** Written to the command's stdin. */
  readonly input?: string;
  /** Extra environment variables (merged over the runner's base environment). */
  readonly env?: Readonly<Record<string, string>>;
  /** Kill the command after this long; default 30 s. */
  readonly timeoutMs?: number;
  /** When true (default), a non-zero exit rejects with {@link LabCommandError}. */
  readonly check?: boolean;
}

/** Options of {@link Runner.spawnDetached}. */
export interface SpawnOptions {
  /** stdout and stderr are appended to this file. */
  readonly logFile: string;
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * Runs host commands. Must not use a shell; argv is passed as is. Implementations are stateless
 * so several labs (and tests) can share one.
 */
export interface Runner {
  /** Runs argv to completion and returns its output. */
  run(argv: readonly string[], opts?: RunOptions): Promise<CommandResult>;
  /** Starts argv detached from the caller (it outlives the lab command) and returns its PID. */
  spawnDetached(argv: readonly string[], opts: SpawnOptions): Promise<number>;
  /** Sends a signal; false when the process does not exist. */
  kill(pid: number, signal: NodeJS.Signals): boolean;
  /** The start time of a process (field 22 of /proc/<pid>/stat), undefined when it does not exist or is a zombie. */
  startTime(pid: number): string | undefined;
}

/** The real {@link Runner}: child_process without a shell, /proc for process identity. */
export function systemRunner(baseEnv: Readonly<Record<string, string | undefined>> = process.env): Runner {
  return {
    run(argv, opts = {}) {
      const [file, ...args] = argv;
      if (!file) return Promise.reject(new LabCommandError('lab: empty command', null, ''));
      return new Promise((resolve, reject) => {
        const child = execFile(
          file,
          args,
          { env: { ...baseEnv, ...opts.env }, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 << 20, encoding: 'utf8', killSignal: 'SIGKILL' },
          (err, stdout, stderr) => {
            const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
            if (err && (opts.check ?? true)) {
              const why = code === null ? ((err as { killed?: boolean }).killed ? 'timed out' : err.message) : `exit ${code}`;
              reject(new LabCommandError(`lab: ${shortArgv(argv)}: ${why}: ${stderr.trim().slice(0, 500)}`, code, stderr, { cause: err }));
              return;
            }
            resolve({ code: code ?? -1, stdout, stderr });
          },
        );
        // A command may exit without reading its stdin (EPIPE): its exit status tells what happened.
        child.stdin?.on('error', () => {});
        if (opts.input !== undefined) child.stdin?.end(opts.input);
        else child.stdin?.end();
      });
    },
    spawnDetached(argv, opts) {
      const [file, ...args] = argv;
      if (!file) return Promise.reject(new LabCommandError('lab: empty command', null, ''));
      const fd = openSync(opts.logFile, 'a', 0o600);
      try {
        const child = spawn(file, args, { detached: true, stdio: ['ignore', fd, fd], env: { ...baseEnv, ...opts.env } });
        return new Promise((resolve, reject) => {
          child.once('error', (err) => reject(new LabCommandError(`lab: spawn ${shortArgv(argv)}: ${err.message}`, null, '', { cause: err })));
          child.once('spawn', () => {
            child.unref();
            resolve(child.pid!);
          });
        });
      } finally {
        closeSync(fd);
      }
    },
    kill(pid, signal) {
      try {
        process.kill(pid, signal);
        return true;
      } catch {
        return false;
      }
    },
    startTime(pid) {
      try {
        const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
        // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
        if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
        return rest[19];
      } catch {
        return undefined;
      }
    },
  };
}

function shortArgv(argv: readonly string[]): string {
  const s = argv.join(' ');
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}

/** One object the lab created, as recorded in the state file. */
export type LabObject =
  | { readonly kind: 'dir'; readonly path: string }
  /** A directory bind-mounted onto itself and made private (holds the mount namespace files). */
  | { readonly kind: 'privmount'; readonly path: string }
  /** A mount point directory created on the host because it was missing (removed when empty). */
  | { readonly kind: 'hostdir'; readonly path: string }
  | { readonly kind: 'netns'; readonly name: string }
  /** A persistent mount namespace, bind-mounted on `path`. */
  | { readonly kind: 'mountns'; readonly node: string; readonly path: string }
  /** A link; `netns` undefined = the host namespace. */
  | { readonly kind: 'link'; readonly name: string; readonly netns?: string }
  /** A process started by the lab; `cmd` is the basename of the command run inside the namespace. */
  | { readonly kind: 'process'; readonly pid: number; readonly start: string; readonly label: string; readonly netns?: string; readonly cmd?: string };

/** The state file: what was created, in creation order, plus free-form metadata of the layer above. */
export interface LabStateFile {
  readonly version: 1;
  readonly prefix: string;
  readonly createdAt: string;
  objects: LabObject[];
  meta: Record<string, unknown>;
}

/** Where a command runs: a network namespace, and optionally a node's mount namespace. */
export interface NsTarget {
  readonly netns: string;
  /** Path of the persistent mount namespace file; undefined = the host's mount namespace. */
  readonly mountns?: string;
}

/** A simulated node's namespaces and its private host directories. */
export interface NodeHandle extends NsTarget {
  readonly name: string;
  readonly mountns: string;
  /** Host directory bind-mounted on /var/lib/weft inside the node. */
  readonly stateDir: string;
  /** Host directory bind-mounted on /run/weft inside the node. */
  readonly runDir: string;
  /** Host directory for this node's logs. */
  readonly logDir: string;
}

/** Options of {@link LabHost}. */
export interface LabHostOptions {
  readonly prefix: string;
  readonly root?: string;
  readonly runner?: Runner;
  /** How long `down` waits after SIGTERM before SIGKILL; default 3000 ms. */
  readonly termGraceMs?: number;
  /** Called with one line per cleanup problem that `down` worked around (never throws for those). */
  readonly warn?: (msg: string) => void;
}

/** Lab prefixes: short, lowercase, usable in node names, netns names and DNS labels. */
export const PREFIX_RE = /^[a-z][a-z0-9]{0,9}$/;

/** Throws {@link LabStateError} unless `prefix` matches {@link PREFIX_RE}. */
export function validatePrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) throw new LabStateError(`lab: prefix ${JSON.stringify(prefix)} must be 1-10 lowercase letters or digits, starting with a letter`);
  return prefix;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * One lab's host objects. Not safe for concurrent use by two processes on the same prefix (the lab
 * CLI takes care of that by refusing `up` while a state file exists); calls within one process are
 * serialized where they write the state file.
 */
export class LabHost {
  readonly prefix: string;
  readonly root: string;
  readonly dir: string;
  readonly stateFile: string;
  readonly runner: Runner;
  readonly #grace: number;
  readonly #warn: (msg: string) => void;
  #state: LabStateFile | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(opts: LabHostOptions) {
    this.prefix = validatePrefix(opts.prefix);
    this.root = opts.root ?? DEFAULT_LAB_ROOT;
    this.dir = join(this.root, this.prefix);
    this.stateFile = join(this.dir, 'state.json');
    this.runner = opts.runner ?? systemRunner();
    this.#grace = opts.termGraceMs ?? 3000;
    this.#warn = opts.warn ?? (() => {});
  }

  /** True when a state file exists for this prefix (a lab is up, or a crashed one awaits `down`). */
  exists(): boolean {
    return existsSync(this.stateFile);
  }

  /** Reads the state file; undefined when there is none. Throws {@link LabStateError} on a corrupt file. */
  async load(): Promise<LabStateFile | undefined> {
    let text: string;
    try {
      text = await readFile(this.stateFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const s = JSON.parse(text) as LabStateFile;
      if (s.version !== 1 || s.prefix !== this.prefix || !Array.isArray(s.objects)) throw new Error('unexpected shape');
      s.meta ??= {};
      this.#state = s;
      return s;
    } catch (err) {
      throw new LabStateError(`lab: ${this.stateFile} is corrupt (${(err as Error).message}); remove the lab's objects by hand`, { cause: err });
    }
  }

  /** Starts a new lab: creates the lab directory and an empty state file. Refuses when one exists. */
  async init(): Promise<void> {
    if (this.exists()) {
      throw new LabStateError(`lab: a lab with prefix ${this.prefix} is already up (or crashed); run \`weft lab down --prefix ${this.prefix}\` first`);
    }
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.#state = { version: 1, prefix: this.prefix, createdAt: new Date().toISOString(), objects: [], meta: {} };
    await this.#save();
  }

  /** The loaded state; throws when neither `init` nor `load` ran. */
  get state(): LabStateFile {
    if (!this.#state) throw new LabStateError(`lab: no state loaded for prefix ${this.prefix}`);
    return this.#state;
  }

  /** Merges `meta` into the state file's metadata and saves it. */
  async setMeta(meta: Record<string, unknown>): Promise<void> {
    Object.assign(this.state.meta, meta);
    await this.#save();
  }

  async #record(obj: LabObject): Promise<void> {
    this.state.objects.push(obj);
    await this.#save();
  }

  async #forget(pred: (o: LabObject) => boolean): Promise<void> {
    this.state.objects = this.state.objects.filter((o) => !pred(o));
    await this.#save();
  }

  #save(): Promise<void> {
    const next = this.#writing.then(async () => {
      const tmp = `${this.stateFile}.tmp`;
      await writeFile(tmp, `${JSON.stringify(this.state, null, 1)}\n`, { mode: 0o600 });
      await rename(tmp, this.stateFile);
    });
    this.#writing = next.catch(() => {});
    return next;
  }

  /** Creates a directory under the lab directory (recorded); returns its path. */
  async makeDir(...parts: string[]): Promise<string> {
    const path = join(this.dir, ...parts);
    if (!path.startsWith(`${this.dir}/`)) throw new LabStateError(`lab: ${path} is outside ${this.dir}`);
    await mkdir(path, { recursive: true, mode: 0o755 });
    return path;
  }

  /** Creates network namespace `name` with loopback up. Refuses a namespace that exists but is not this lab's. */
  async addNetns(name: string): Promise<void> {
    if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(name)) throw new LabStateError(`lab: bad namespace name ${JSON.stringify(name)}`);
    if (existsSync(`/run/netns/${name}`)) {
      throw new LabStateError(`lab: network namespace ${name} already exists and was not created by lab ${this.prefix}; remove it or pick another --prefix`);
    }
    await this.#record({ kind: 'netns', name });
    await this.runner.run(['ip', 'netns', 'add', name]);
    await this.runner.run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  }

  /** Deletes a namespace this lab created (and the links inside it); idempotent. */
  async deleteNetns(name: string): Promise<void> {
    await this.#killNetnsProcesses([name]);
    if (existsSync(`/run/netns/${name}`)) await this.runner.run(['ip', 'netns', 'delete', name], { check: false });
    await this.#forget((o) => (o.kind === 'netns' && o.name === name) || (o.kind === 'link' && o.netns === name) || (o.kind === 'process' && o.netns === name));
  }

  /**
   * Creates a simulated node: network namespace `name` plus a persistent mount namespace in which
   * `/run/wireguard` is a private tmpfs and `/var/lib/weft`, `/run/weft` are bind mounts of this
   * node's host directories (so state survives agent restarts and sockets are per node). Host
   * mounts under /run/netns still propagate in (slave propagation), so pods created later are visible.
   */
  async addNode(name: string): Promise<NodeHandle> {
    await this.addNetns(name);
    await this.#ensurePrivateMountDir();
    for (const p of Object.values(NODE_MOUNTPOINTS)) await this.#ensureHostDir(p);
    const node = this.node(name);
    await mkdir(node.stateDir, { recursive: true, mode: 0o700 });
    await mkdir(node.runDir, { recursive: true, mode: 0o755 });
    await mkdir(node.logDir, { recursive: true, mode: 0o755 });
    await writeFile(node.mountns, '', { mode: 0o600 });
    await this.#record({ kind: 'mountns', node: name, path: node.mountns });
    const script = 'mount -t tmpfs -o mode=0700,size=16m weft-lab-wg "$1" && mount --bind "$2" "$3" && mount --bind "$4" "$5"';
    await this.runner.run([
      'unshare', `--mount=${node.mountns}`, '--propagation', 'slave', '--', '/bin/sh', '-c', script, 'sh',
      NODE_MOUNTPOINTS.wireguard, node.stateDir, NODE_MOUNTPOINTS.state, node.runDir, NODE_MOUNTPOINTS.run,
    ]);
    return node;
  }

  /** The handle of node `name` (paths only; does not check that it exists). */
  node(name: string): NodeHandle {
    const base = join(this.dir, 'nodes', name);
    return { name, netns: name, mountns: join(this.dir, 'mnt', name), stateDir: join(base, 'state'), runDir: join(base, 'run'), logDir: join(base, 'log') };
  }

  /** Removes a node: its processes (wireguard-go only after its interface), mount namespace and network namespace; idempotent. */
  async removeNode(name: string): Promise<void> {
    const node = this.node(name);
    const mine = this.state.objects.filter((o): o is Extract<LabObject, { kind: 'process' }> => o.kind === 'process' && o.netns === name && this.#alive(o));
    await this.#stopPids(mine.filter((p) => p.cmd !== 'wireguard-go').map((p) => ({ pid: p.pid, start: this.runner.startTime(p.pid) ?? '' })), this.#grace);
    await this.#deleteTunnels([name]);
    await this.#killNetnsProcesses([name]);
    await this.#unmountNs(node.mountns);
    await this.deleteNetns(name);
    await this.#forget((o) => o.kind === 'mountns' && o.node === name);
    await rm(join(this.dir, 'nodes', name), { recursive: true, force: true });
  }

  async #ensurePrivateMountDir(): Promise<string> {
    const path = join(this.dir, 'mnt');
    if (this.state.objects.some((o) => o.kind === 'privmount' && o.path === path)) return path;
    await mkdir(path, { recursive: true, mode: 0o700 });
    await this.#record({ kind: 'privmount', path });
    // A persistent mount namespace can only be bind-mounted on a mount that is not shared.
    await this.runner.run(['mount', '--bind', path, path]);
    await this.runner.run(['mount', '--make-private', path]);
    return path;
  }

  async #ensureHostDir(path: string): Promise<void> {
    if (existsSync(path)) return;
    await this.#record({ kind: 'hostdir', path });
    await mkdir(path, { recursive: true, mode: 0o755 });
  }

  /** The argv that runs `argv` inside `target`'s namespaces. */
  wrap(target: NsTarget, argv: readonly string[]): string[] {
    const ns = [`--net=/run/netns/${target.netns}`];
    if (target.mountns) ns.push(`--mount=${target.mountns}`);
    return ['nsenter', ...ns, '--', ...argv];
  }

  /** Runs a command inside `target`'s namespaces. */
  exec(target: NsTarget, argv: readonly string[], opts?: RunOptions): Promise<CommandResult> {
    return this.runner.run(this.wrap(target, argv), opts);
  }

  /**
   * Starts a long-running process inside `target` (recorded with its PID and start time, so `down`
   * never signals a recycled PID) and returns the PID.
   */
  async spawn(target: NsTarget, argv: readonly string[], opts: SpawnOptions & { label: string }): Promise<number> {
    const pid = await this.runner.spawnDetached(this.wrap(target, argv), opts);
    const start = this.runner.startTime(pid) ?? '';
    await this.#record({ kind: 'process', pid, start, label: opts.label, netns: target.netns, cmd: basename(argv[0] ?? '') });
    return pid;
  }

  /** Recorded processes with `label` that are still running. */
  processes(label?: string): Array<Extract<LabObject, { kind: 'process' }>> {
    return this.state.objects.filter(
      (o): o is Extract<LabObject, { kind: 'process' }> => o.kind === 'process' && (label === undefined || o.label === label) && this.#alive(o),
    );
  }

  #alive(o: { pid: number; start: string }): boolean {
    const now = this.runner.startTime(o.pid);
    return now !== undefined && (o.start === '' || now === o.start);
  }

  /** Stops recorded processes with `label` (SIGTERM, then SIGKILL after the grace time), or SIGKILLs them at once. */
  async stopProcesses(label: string, how: 'term' | 'kill' = 'term'): Promise<number[]> {
    const procs = this.state.objects.filter((o): o is Extract<LabObject, { kind: 'process' }> => o.kind === 'process' && o.label === label);
    const pids = procs.filter((p) => this.#alive(p)).map((p) => ({ pid: p.pid, start: this.runner.startTime(p.pid)! }));
    await this.#stopPids(pids, how === 'kill' ? 0 : this.#grace);
    await this.#forget((o) => o.kind === 'process' && o.label === label);
    return pids.map((p) => p.pid);
  }

  async #stopPids(pids: Array<{ pid: number; start: string }>, graceMs: number): Promise<void> {
    const live = (): Array<{ pid: number; start: string }> => pids.filter((p) => this.runner.startTime(p.pid) === p.start);
    if (graceMs > 0) {
      for (const p of live()) this.runner.kill(p.pid, 'SIGTERM');
      for (let waited = 0; waited < graceMs && live().length > 0; waited += 50) await sleep(50);
    }
    for (const p of live()) this.runner.kill(p.pid, 'SIGKILL');
    for (let waited = 0; waited < 3000 && live().length > 0; waited += 50) await sleep(50);
    for (const p of live()) this.#warn(`lab: process ${p.pid} did not exit after SIGKILL`);
  }

  /** Creates a bridge `name` in `netns` (undefined = host namespace, recorded as a host link), up. */
  async addBridge(name: string, netns?: string): Promise<void> {
    await this.#addLink(name, netns, ['type', 'bridge']);
    await this.runner.run([...ipIn(netns), 'link', 'set', name, 'up']);
  }

  /** Creates a veth pair `a.name`@`a.netns` <-> `b.name`@`b.netns`, both up. */
  async addVeth(a: { name: string; netns?: string }, b: { name: string; netns?: string }): Promise<void> {
    const peer = ['peer', 'name', b.name, ...(b.netns ? ['netns', b.netns] : [])];
    await this.#addLink(a.name, a.netns, ['type', 'veth', ...peer], { name: b.name, netns: b.netns });
    await this.runner.run([...ipIn(a.netns), 'link', 'set', a.name, 'up']);
    await this.runner.run([...ipIn(b.netns), 'link', 'set', b.name, 'up']);
  }

  async #addLink(name: string, netns: string | undefined, rest: string[], also?: { name: string; netns?: string }): Promise<void> {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name) || (also && !/^[A-Za-z0-9_.-]{1,15}$/.test(also.name))) throw new LabStateError(`lab: bad link name ${name}`);
    for (const l of [{ name, netns }, ...(also ? [also] : [])]) {
      const shown = await this.runner.run([...ipIn(l.netns), 'link', 'show', 'dev', l.name], { check: false });
      if (shown.code === 0) throw new LabStateError(`lab: link ${l.name} already exists${l.netns ? ` in ${l.netns}` : ''} and was not created by lab ${this.prefix}`);
    }
    await this.#record({ kind: 'link', name, netns });
    if (also) await this.#record({ kind: 'link', name: also.name, netns: also.netns });
    await this.runner.run([...ipIn(netns), 'link', 'add', 'name', name, ...rest]);
  }

  /** Adds an address to a link and sets it up. */
  async addAddress(netns: string | undefined, dev: string, cidr: string): Promise<void> {
    await this.runner.run([...ipIn(netns), 'addr', 'add', cidr, 'dev', dev]);
    await this.runner.run([...ipIn(netns), 'link', 'set', dev, 'up']);
  }

  /**
   * Removes everything recorded in the state file, in order: the processes the lab started (by PID
   * and start time: SIGTERM, then SIGKILL), WireGuard/TUN interfaces in the lab's namespaces (before
   * wireguard-go is signalled), any process left inside a lab namespace, mount namespaces, network
   * namespaces, host links,
   * private mounts, host mount point directories, the lab directory. Idempotent; tolerates a state
   * file written by a crashed `up`. Returns the number of objects it found recorded.
   */
  async down(): Promise<number> {
    const state = await this.load();
    if (!state) {
      // Nothing recorded: at most an empty directory from a crash before the first write.
      if (existsSync(this.dir) && (await readdir(this.dir)).length === 0) await rmdir(this.dir).catch(() => {});
      return 0;
    }
    const objs = [...state.objects].reverse();
    const netnses = objs.filter((o) => o.kind === 'netns').map((o) => o.name);
    const existing = netnses.filter((n) => existsSync(`/run/netns/${n}`));

    // 1. Processes the lab started (agents, captures, probes), so no agent re-creates an interface
    //    while the lab takes it away; a wireguard-go the lab started waits for step 3.
    const live = objs
      .filter((o): o is Extract<LabObject, { kind: 'process' }> => o.kind === 'process')
      .filter((p) => this.#alive(p));
    const pidOf = (p: { pid: number }): { pid: number; start: string } => ({ pid: p.pid, start: this.runner.startTime(p.pid) ?? '' });
    await this.#stopPids(live.filter((p) => p.cmd !== 'wireguard-go').map(pidOf), this.#grace);

    // 2. Tunnels before their processes: deleting a wireguard-go interface makes it exit cleanly.
    await this.#deleteTunnels(existing);

    // 3. Whatever still runs: wireguard-go that did not exit, strays inside the lab's namespaces.
    await this.#stopPids(live.filter((p) => p.cmd === 'wireguard-go' && this.#alive(p)).map(pidOf), this.#grace);
    await this.#killNetnsProcesses(existing);

    // 4. Mount namespaces.
    for (const o of objs) if (o.kind === 'mountns') await this.#unmountNs(o.path);

    // 5. Network namespaces (their links go with them).
    for (const n of existing) {
      const r = await this.runner.run(['ip', 'netns', 'delete', n], { check: false });
      if (r.code !== 0) this.#warn(`lab: ip netns delete ${n}: ${r.stderr.trim()}`);
    }

    // 6. Host links (only those recorded without a namespace).
    for (const o of objs) {
      if (o.kind !== 'link' || o.netns !== undefined) continue;
      const shown = await this.runner.run(['ip', 'link', 'show', 'dev', o.name], { check: false });
      if (shown.code === 0) await this.runner.run(['ip', 'link', 'del', 'dev', o.name], { check: false });
    }

    // 7. Private bind mounts.
    for (const o of objs) if (o.kind === 'privmount') await this.#umount(o.path);

    // 8. Host mount point directories we created, when empty and no other lab still uses them.
    const others = await this.#otherLabs();
    for (const o of objs) {
      if (o.kind !== 'hostdir') continue;
      if (others.length > 0) {
        this.#warn(`lab: leaving ${o.path} in place: lab(s) ${others.join(', ')} still use it`);
        continue;
      }
      await rmdir(o.path).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') this.#warn(`lab: rmdir ${o.path}: ${err.message}`);
      });
    }

    // 9. The lab directory, state file last so an interrupted down can be re-run.
    for (const entry of await readdir(this.dir).catch(() => [] as string[])) {
      if (entry !== 'state.json') await rm(join(this.dir, entry), { recursive: true, force: true });
    }
    await rm(this.stateFile, { force: true });
    await rmdir(this.dir).catch(() => {});
    this.#state = undefined;
    return state.objects.length;
  }

  async #otherLabs(): Promise<string[]> {
    const names = await readdir(this.root).catch(() => [] as string[]);
    const out: string[] = [];
    for (const n of names) {
      if (n === this.prefix) continue;
      if (await stat(join(this.root, n, 'state.json')).then(() => true, () => false)) out.push(n);
    }
    return out;
  }

  /** Deletes WireGuard and TUN interfaces inside the given (lab) namespaces. */
  async #deleteTunnels(netnses: readonly string[]): Promise<void> {
    for (const n of netnses) {
      if (!existsSync(`/run/netns/${n}`)) continue;
      const r = await this.runner.run(['ip', '-n', n, '-j', '-d', 'link', 'show'], { check: false });
      if (r.code !== 0) continue;
      let links: Array<{ ifname?: string; linkinfo?: { info_kind?: string } }> = [];
      try {
        links = JSON.parse(r.stdout || '[]');
      } catch {
        this.#warn(`lab: unreadable link list in ${n}`);
      }
      for (const l of links) {
        const kind = l.linkinfo?.info_kind;
        if (l.ifname && (kind === 'wireguard' || kind === 'tun')) {
          await this.runner.run(['ip', '-n', n, 'link', 'del', 'dev', l.ifname], { check: false });
        }
      }
    }
    // Give wireguard-go a moment to notice its TUN is gone and exit on its own.
    if (netnses.length > 0) await sleep(100);
  }

  /** Stops every process running inside the given (lab) namespaces. */
  async #killNetnsProcesses(netnses: readonly string[]): Promise<void> {
    const pids: Array<{ pid: number; start: string }> = [];
    for (const n of netnses) {
      if (!existsSync(`/run/netns/${n}`)) continue;
      const r = await this.runner.run(['ip', 'netns', 'pids', n], { check: false });
      for (const tok of r.stdout.split(/\s+/)) {
        const pid = Number(tok);
        if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
        const start = this.runner.startTime(pid);
        if (start !== undefined) pids.push({ pid, start });
      }
    }
    await this.#stopPids(pids, this.#grace);
  }

  async #unmountNs(path: string): Promise<void> {
    await this.#umount(path);
    await rm(path, { force: true });
  }

  async #umount(path: string): Promise<void> {
    if (!(await isMountPoint(path))) return;
    const r = await this.runner.run(['umount', path], { check: false });
    if (r.code !== 0) {
      const lazy = await this.runner.run(['umount', '-l', path], { check: false });
      if (lazy.code !== 0) this.#warn(`lab: umount ${path}: ${lazy.stderr.trim()}`);
    }
  }
}

function ipIn(netns: string | undefined): string[] {
  return netns ? ['ip', '-n', netns] : ['ip'];
}

/** True when `path` is a mount point in this process's mount namespace (per /proc/self/mountinfo). */
export async function isMountPoint(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const esc = path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return info.split('\n').some((line) => line.split(' ')[4] === esc);
}

/** Which WireGuard implementation the lab will use, and what is missing for it. */
export interface Requirements {
  readonly kernelModule: boolean;
  readonly backend: 'kernel' | 'userspace';
  readonly missing: readonly string[];
}

/**
 * Checks that the lab can run: root, `ip`, `nsenter`, `unshare`, `mount`, and wireguard-go when the
 * kernel has no WireGuard module (or `backend` is userspace). Throws {@link LabRequirementError}
 * with one line per missing thing and how to get it.
 */
export async function checkRequirements(runner: Runner, backend: 'auto' | 'kernel' | 'userspace', extraTools: readonly string[] = []): Promise<Requirements> {
  const missing: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) missing.push('root: the lab creates namespaces and mounts; run it with sudo');
  const have = async (tool: string): Promise<boolean> => (await runner.run(['sh', '-c', 'command -v "$1"', 'sh', tool], { check: false })).code === 0;
  const tools: Array<[string, string]> = [
    ['ip', 'iproute2'], ['nsenter', 'util-linux'], ['unshare', 'util-linux'], ['mount', 'mount'], ['umount', 'mount'],
    ...extraTools.map((t): [string, string] => [t, t]),
  ];
  for (const [tool, pkg] of tools) if (!(await have(tool))) missing.push(`${tool}: not found on PATH (install ${pkg})`);
  const kernelModule = existsSync('/sys/module/wireguard');
  let chosen: 'kernel' | 'userspace' = backend === 'kernel' || (backend === 'auto' && kernelModule) ? 'kernel' : 'userspace';
  if (backend === 'kernel' && !kernelModule) missing.push('wireguard kernel module: not loaded (modprobe wireguard, or use --backend userspace)');
  if (chosen === 'userspace' && !(await have('wireguard-go'))) {
    missing.push(`wireguard-go: not found on PATH and ${kernelModule ? 'the userspace backend was asked for' : 'there is no WireGuard kernel module'} (install wireguard-go)`);
  }
  if (backend === 'auto' && !kernelModule) chosen = 'userspace';
  if (missing.length > 0) throw new LabRequirementError(`lab: this host cannot run the lab:\n  - ${missing.join('\n  - ')}`);
  return { kernelModule, backend: chosen, missing };
}

/**
 * A prefix `<base><random>` that no lab under `root` uses, for tests that must not collide with
 * another run of themselves on the same host. `base` plus 3 random characters must fit {@link PREFIX_RE}.
 */
export function uniquePrefix(base: string, root = DEFAULT_LAB_ROOT): string {
  for (;;) {
    const p = validatePrefix(`${base}${Math.random().toString(36).slice(2, 5).padEnd(3, '0')}`);
    if (!existsSync(join(root, p))) return p;
  }
}

/**
 * Removes labs whose prefix matches `pattern`, created more than `minAgeMs` ago (default 5 min) and
 * none of whose recorded processes is still running: labs left by a crashed run. A lab that a live
 * run is still building or using is left alone. Returns the prefixes removed.
 */
export async function removeStaleLabs(pattern: RegExp, opts: { root?: string; runner?: Runner; minAgeMs?: number; now?: number } = {}): Promise<string[]> {
  const root = opts.root ?? DEFAULT_LAB_ROOT;
  const cutoff = (opts.now ?? Date.now()) - (opts.minAgeMs ?? 5 * 60_000);
  const removed: string[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!PREFIX_RE.test(name) || !pattern.test(name)) continue;
    const h = new LabHost({ prefix: name, root, runner: opts.runner });
    const state = await h.load().catch(() => undefined);
    if (state && (h.processes().length > 0 || Date.parse(state.createdAt) > cutoff)) continue;
    if (!state && (await stat(join(root, name)).then((st) => st.mtimeMs > cutoff, () => true))) continue;
    await h.down();
    removed.push(name);
  }
  return removed;
}
