/**
 * The userspace backend: supervises `wireguard-go` processes and configures them over the UAPI
 * socket `<socketDir>/<if>.sock` (see `uapi.ts`).
 *
 * Process lifetime. weft starts `wireguard-go -f <if>` detached (its own session, stdio to a log
 * file, never a pipe), so it outlives the agent: an agent that is SIGKILLed or restarted leaves the
 * datapath running, and the next agent adopts the device through its UAPI socket without touching
 * it. The PID and its start time are written to `<stateDir>/<if>.pid`, so that a later agent can
 * still stop the process it started; before signalling, the PID is checked against /proc (same
 * start time, a `wireguard-go` command line naming the interface), so a recycled PID is never hit.
 * Processes are never looked up or signalled by name.
 *
 * Deletion order: the link is deleted first (`ip link del`), which makes wireguard-go exit by
 * itself; only if it has not exited after a grace period is it sent SIGTERM, then SIGKILL. Killing
 * it first can leave it spinning in the kernel for minutes.
 *
 * Partial application: see {@link UserspaceWireGuardBackend.setDevice}.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { WgBackendKind, WgDevice, WgDeviceUpdate, WireGuardBackend } from './backend.ts';
import { checkIfname, normalizeUpdate } from './addr.ts';
import { UapiError, WireGuardError } from './errors.ts';
import { DEFAULT_PARSE_LIMITS, ParseCache, encodeSet, isNoDaemon, parseGet, uapiRequest } from './uapi.ts';

/** Options of {@link UserspaceWireGuardBackend}. */
export interface UserspaceOptions {
  readonly logger: Logger;
  /** Directory of the UAPI sockets as seen by this process. Default `/var/run/wireguard`. */
  readonly socketDir?: string;
  /** Where pid files and wireguard-go logs go. Default `/run/weft/wireguard-go`. */
  readonly stateDir?: string;
  /** The wireguard-go executable. Default `wireguard-go` (looked up on PATH). */
  readonly wireguardGo?: string;
  /** The iproute2 `ip` executable. Default `ip`. */
  readonly ip?: string;
  /**
   * Wraps every command weft runs (wireguard-go, ip) — e.g. an `nsenter` prefix to run them in a
   * lab node's namespaces. It must exec the command in place (same PID), as nsenter without
   * --fork does. Default: none.
   */
  readonly wrap?: (argv: readonly string[]) => string[];
  /** Deadline of one UAPI request in ms. Default 10,000. */
  readonly timeoutMs?: number;
  /** How long a new wireguard-go has to answer on its socket, in ms. Default 10,000. */
  readonly startTimeoutMs?: number;
  /** Largest UAPI reply accepted, in bytes. Default 64 MiB (about 150,000 peers). */
  readonly maxReplyBytes?: number;
  /** Peers per UAPI set request; larger updates are split. Default 2,000. */
  readonly maxPeersPerSet?: number;
  /** Grace period after `ip link del` before wireguard-go is signalled, in ms. Default 3,000. */
  readonly exitGraceMs?: number;
  /**
   * Called (must not block or throw) when a wireguard-go this instance started exits without
   * deleteDevice asking it to: the device and its configuration are gone; the agent should trigger
   * a reconcile, whose ensureDevice starts a new one.
   */
  readonly onDeviceLost?: (name: string, reason: string) => void;
}

interface PidRecord {
  readonly pid: number;
  readonly startTime: string;
}

/** Userspace WireGuard through wireguard-go; `kind` is 'userspace'. Safe for concurrent calls (serialized per device). */
export class UserspaceWireGuardBackend implements WireGuardBackend {
  readonly kind: WgBackendKind = 'userspace';
  private readonly log: Logger;
  private readonly socketDir: string;
  private readonly stateDir: string;
  private readonly wgGo: string;
  private readonly ipCmd: string;
  private readonly wrap: (argv: readonly string[]) => string[];
  private readonly timeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly maxReplyBytes: number;
  private readonly maxPeersPerSet: number;
  private readonly exitGraceMs: number;
  private readonly onDeviceLost: ((name: string, reason: string) => void) | undefined;
  private readonly children = new Map<string, ChildProcess>();
  private readonly deleting = new Set<string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly parseCache = new ParseCache();
  private closed = false;

  constructor(opts: UserspaceOptions) {
    this.log = opts.logger;
    this.socketDir = opts.socketDir ?? '/var/run/wireguard';
    this.stateDir = opts.stateDir ?? '/run/weft/wireguard-go';
    this.wgGo = opts.wireguardGo ?? 'wireguard-go';
    this.ipCmd = opts.ip ?? 'ip';
    this.wrap = opts.wrap ?? ((a) => [...a]);
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    this.maxReplyBytes = opts.maxReplyBytes ?? 64 * 1024 * 1024;
    this.maxPeersPerSet = Math.max(1, opts.maxPeersPerSet ?? 2000);
    this.exitGraceMs = opts.exitGraceMs ?? 3000;
    this.onDeviceLost = opts.onDeviceLost;
  }

  /** The UAPI socket path of `name`. */
  socketPath(name: string): string {
    return join(this.socketDir, `${name}.sock`);
  }

  /**
   * Adopts a device whose wireguard-go answers on its socket (untouched), or starts a new
   * wireguard-go. Fails if a link of that name exists without a UAPI daemon (a kernel WireGuard
   * link or an orphaned tun): weft does not delete a link it cannot configure.
   */
  async ensureDevice(name: string): Promise<void> {
    checkIfname(name);
    this.assertOpen();
    await this.withLock(name, async () => {
      try {
        await this.get(name);
        this.log.debug({ ifname: name }, 'wireguard-go device present; adopting it');
        return;
      } catch (err) {
        if (!isNoDaemon(err)) throw err;
      }
      if (await this.linkExists(name)) {
        throw new WireGuardError(`wireguard: ensure ${name}: a link named ${name} exists but no wireguard-go answers on ${this.socketPath(name)}`);
      }
      await this.start(name);
    });
  }

  /** Reads the whole device over UAPI; null when no wireguard-go serves `name`. */
  async getDevice(name: string): Promise<WgDevice | null> {
    checkIfname(name);
    this.assertOpen();
    try {
      return await this.get(name);
    } catch (err) {
      if (isNoDaemon(err)) return null;
      throw err;
    }
  }

  /**
   * Applies a patch. Validated first (a malformed update throws WgInputError and writes nothing),
   * then sent in requests of at most `maxPeersPerSet` peers (device fields in the first; a peer is
   * never split). NOT atomic: wireguard-go applies each line as it reads it, so when it rejects a
   * line, or a later request fails, the earlier part has taken effect. Every line sets an absolute
   * value, so callers handle a failure by re-reading the device and diffing again (or re-sending
   * the same update); they must not assume either all or none was applied.
   */
  async setDevice(name: string, update: WgDeviceUpdate): Promise<void> {
    this.assertOpen();
    const u = normalizeUpdate(name, update);
    const peers = u.peers ?? [];
    const chunks: WgDeviceUpdate[] = [];
    const head: WgDeviceUpdate = {
      ...(u.privateKey !== undefined ? { privateKey: u.privateKey } : {}),
      ...(u.listenPort !== undefined ? { listenPort: u.listenPort } : {}),
      ...(u.fwmark !== undefined ? { fwmark: u.fwmark } : {}),
      ...(u.replacePeers ? { replacePeers: true } : {}),
    };
    for (let i = 0; i < peers.length || i === 0; i += this.maxPeersPerSet) {
      const slice = peers.slice(i, i + this.maxPeersPerSet);
      chunks.push(i === 0 ? { ...head, peers: slice } : { peers: slice });
    }
    for (let c = 0; c < chunks.length; c++) {
      const what = chunks.length > 1 ? `set ${name} (request ${c + 1}/${chunks.length})` : `set ${name}`;
      try {
        await uapiRequest(this.socketPath(name), what, encodeSet(chunks[c]!), { timeoutMs: this.timeoutMs, maxReplyBytes: 4096 });
      } catch (err) {
        if (isNoDaemon(err)) throw new UapiError(`uapi: set ${name}: no such device (no wireguard-go on ${this.socketPath(name)})`, { cause: err });
        if (c > 0 || peers.length > 1) {
          const e = err as UapiError;
          throw new UapiError(`${e.message}; the update may be partly applied: re-read the device and diff again`, {
            cause: err,
            ...(e.errno !== undefined ? { errno: e.errno } : {}),
          });
        }
        throw err;
      }
    }
  }

  /**
   * Deletes the link, then makes sure the wireguard-go weft started for it has exited (waiting,
   * then SIGTERM, then SIGKILL, by verified PID). Succeeds when there is nothing to delete.
   */
  async deleteDevice(name: string): Promise<void> {
    checkIfname(name);
    this.assertOpen();
    await this.withLock(name, async () => {
      this.deleting.add(name);
      try {
        const out = await this.run([this.ipCmd, 'link', 'del', 'dev', name]);
        if (out.code !== 0 && !/Cannot find device|does not exist/i.test(out.stderr)) {
          throw new WireGuardError(`wireguard: delete ${name}: ip link del failed: ${out.stderr.trim().slice(0, 200)}`);
        }
        const rec = await this.readPid(name);
        if (rec && (await isOurProcess(rec, name))) {
          if (!(await waitGone(rec, name, this.exitGraceMs))) {
            this.log.warn({ ifname: name, pid: rec.pid }, 'wireguard-go still running after its link was deleted; sending SIGTERM');
            signal(rec.pid, 'SIGTERM');
            if (!(await waitGone(rec, name, 3000))) {
              this.log.warn({ ifname: name, pid: rec.pid }, 'wireguard-go ignored SIGTERM; sending SIGKILL');
              signal(rec.pid, 'SIGKILL');
              await waitGone(rec, name, 3000);
            }
          }
        }
        await rm(this.pidPath(name), { force: true });
        this.children.delete(name);
      } finally {
        this.deleting.delete(name);
      }
    });
  }

  /** Stops watching children; every wireguard-go keeps running. */
  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.children.values()) c.removeAllListeners('exit');
    this.children.clear();
  }

  private async get(name: string): Promise<WgDevice> {
    const lines = await uapiRequest(this.socketPath(name), `get ${name}`, 'get=1\n', {
      timeoutMs: this.timeoutMs,
      maxReplyBytes: this.maxReplyBytes,
    });
    return parseGet(name, lines, DEFAULT_PARSE_LIMITS, this.parseCache);
  }

  private async start(name: string): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    const logPath = join(this.stateDir, `${name}.log`);
    // Keep the log bounded across restarts: start over when it has grown past 1 MiB.
    const big = await stat(logPath).then((s) => s.size > 1024 * 1024, () => false);
    const fd = openSync(logPath, big ? 'w' : 'a', 0o600);
    let child: ChildProcess;
    const argv = this.wrap([this.wgGo, '-f', name]);
    try {
      child = spawn(argv[0]!, argv.slice(1), {
        detached: true,
        stdio: ['ignore', fd, fd],
        env: { ...process.env, WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: process.env.LOG_LEVEL ?? 'error' },
      });
    } finally {
      closeSync(fd);
    }
    const exited = new Promise<string>((resolve) => {
      child.once('error', (err) => resolve(`cannot run ${argv[0]}: ${err.message}`));
      child.once('exit', (code, sig) => resolve(sig ? `killed by ${sig}` : `exited with code ${code}`));
    });
    child.unref();
    const pid = child.pid;
    if (pid === undefined) {
      throw new WireGuardError(`wireguard: start ${name}: ${await exited}`);
    }
    // Record the PID before anything else can fail, so a later deleteDevice can stop it.
    const rec: PidRecord = { pid, startTime: (await procStartTime(pid)) ?? '' };
    try {
      await writeFile(this.pidPath(name), `${JSON.stringify(rec)}\n`, { mode: 0o600 });
    } catch (err) {
      // Without a PID file no later agent could stop it: do not leave it running.
      await this.run([this.ipCmd, 'link', 'del', 'dev', name]);
      signal(pid, 'SIGKILL');
      throw new WireGuardError(`wireguard: start ${name}: cannot write ${this.pidPath(name)}`, { cause: err });
    }
    let earlyExit: string | undefined;
    void exited.then((why) => {
      earlyExit = why;
    });
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      try {
        await this.get(name);
        break;
      } catch (err) {
        if (!isNoDaemon(err)) throw err;
      }
      if (earlyExit !== undefined) {
        await rm(this.pidPath(name), { force: true });
        throw new WireGuardError(`wireguard: start ${name}: wireguard-go ${earlyExit}: ${await tail(logPath)}`);
      }
      if (Date.now() > deadline) {
        signal(pid, 'SIGKILL');
        await rm(this.pidPath(name), { force: true });
        throw new WireGuardError(`wireguard: start ${name}: wireguard-go did not answer on ${this.socketPath(name)} within ${this.startTimeoutMs} ms`);
      }
      await sleep(15);
    }
    // Fill in the start time now that the exec into wireguard-go has surely happened.
    const st = await procStartTime(pid);
    if (st && st !== rec.startTime) await writeFile(this.pidPath(name), `${JSON.stringify({ pid, startTime: st })}\n`, { mode: 0o600 });
    this.children.set(name, child);
    void exited.then((why) => {
      if (this.children.get(name) !== child) return;
      this.children.delete(name);
      if (this.deleting.has(name) || this.closed) return;
      this.log.error({ ifname: name, pid }, `wireguard-go for ${name} ${why}; the device is gone until the next reconcile`);
      try {
        this.onDeviceLost?.(name, why);
      } catch (err) {
        this.log.error({ err, ifname: name }, 'onDeviceLost callback threw');
      }
    });
    this.log.info({ ifname: name, pid }, 'started wireguard-go');
  }

  private pidPath(name: string): string {
    return join(this.stateDir, `${name}.pid`);
  }

  private async readPid(name: string): Promise<PidRecord | null> {
    try {
      const text = await readFile(this.pidPath(name), 'utf8');
      if (text.length > 200) return null;
      const j = JSON.parse(text) as Partial<PidRecord>;
      if (!Number.isInteger(j.pid) || (j.pid as number) <= 1 || typeof j.startTime !== 'string') return null;
      return { pid: j.pid as number, startTime: j.startTime };
    } catch {
      return null;
    }
  }

  private async linkExists(name: string): Promise<boolean> {
    const out = await this.run([this.ipCmd, '-o', 'link', 'show', 'dev', name]);
    return out.code === 0;
  }

  private run(argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const a = this.wrap(argv);
    return new Promise((resolve) => {
      execFile(a[0]!, a.slice(1), { timeout: 10_000, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code === -1 ? err.message : '') });
      });
    });
  }

  private async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => {},
      () => {},
    );
    this.locks.set(name, settled);
    try {
      return await next;
    } finally {
      if (this.locks.get(name) === settled) this.locks.delete(name);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new WireGuardError('wireguard: userspace backend is closed');
  }
}

/** Start time (clock ticks since boot, field 22 of /proc/<pid>/stat) or null when the process is gone or a zombie. */
async function procStartTime(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' || rest[0] === 'X') return null;
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

/** True when `rec` still names the wireguard-go serving `name` (same start time, matching command line). */
async function isOurProcess(rec: PidRecord, name: string): Promise<boolean> {
  const st = await procStartTime(rec.pid);
  if (st === null || (rec.startTime !== '' && st !== rec.startTime)) return false;
  try {
    const fh = await open(`/proc/${rec.pid}/cmdline`, 'r');
    try {
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const args = buf.subarray(0, bytesRead).toString('utf8').split('\0');
      return args.some((a) => a.endsWith('wireguard-go')) && args.includes(name);
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

async function waitGone(rec: PidRecord, name: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await isOurProcess(rec, name))) return true;
    await sleep(20);
  }
  return !(await isOurProcess(rec, name));
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

async function tail(path: string): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.trim().split('\n').slice(-5).join(' | ').slice(-500) || '(no output)';
  } catch {
    return '(no log)';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
