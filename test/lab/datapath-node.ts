/**
 * Lab helpers for the datapath tests: network namespaces wired to an underlay bridge, and a
 * datapath driver process (`datapath-driver.ts`) per node, running in the node's network namespace
 * and in its own mount namespace with a tmpfs on /run/wireguard. Everything created is removed by
 * `close()`, links before processes (wireguard-go exits when its link is deleted).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** Runs a command, returning stdout; throws with stderr on failure. */
export function sh(argv: readonly string[]): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs a command in a namespace. */
export function nsRun(ns: string, argv: readonly string[]): string {
  return sh(['ip', 'netns', 'exec', ns, ...argv]);
}

/** A datapath driver process running in a namespace. */
export class DatapathDriver {
  readonly ns: string;
  readonly stateDir: string;
  private readonly child: ChildProcess;
  private readonly queue: ((line: string) => void)[] = [];
  private exited = false;

  constructor(ns: string) {
    this.ns = ns;
    this.stateDir = mkdtempSync(join(tmpdir(), `${ns}-state-`));
    const driver = new URL('./datapath-driver.ts', import.meta.url).pathname;
    this.child = spawn(
      'ip',
      ['netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0755,size=4m tmpfs /run/wireguard && exec "$0" "$1"', process.execPath, driver],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    createInterface({ input: this.child.stdout! }).on('line', (l) => this.queue.shift()?.(l));
    this.child.once('exit', () => {
      this.exited = true;
      for (const q of this.queue.splice(0)) q(JSON.stringify({ error: 'driver exited' }));
    });
  }

  /** Sends one request and returns its `ok` value; throws on `error`. */
  async call<T = unknown>(req: Record<string, unknown>, timeoutMs = 60_000): Promise<T> {
    if (this.exited) throw new Error(`driver ${this.ns} exited`);
    const line = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`driver ${this.ns}: timeout on ${Object.keys(req)[0]}`)), timeoutMs);
      this.queue.push((l) => {
        clearTimeout(t);
        resolve(l);
      });
      this.child.stdin!.write(`${JSON.stringify(req)}\n`);
    });
    const r = JSON.parse(line) as { ok?: T; error?: string };
    if (r.error) throw new Error(r.error);
    return r.ok as T;
  }

  /** Deletes every non-lo link of the namespace, stops the driver, then any wireguard-go it started (by recorded PID). */
  async close(): Promise<void> {
    deleteLinks(this.ns);
    await new Promise((r) => setTimeout(r, 300));
    if (!this.exited) {
      this.child.stdin!.end(`${JSON.stringify({ exit: true })}\n`);
      await Promise.race([new Promise((r) => this.child.once('exit', r)), new Promise((r) => setTimeout(r, 3000))]);
      if (!this.exited && this.child.pid) process.kill(this.child.pid, 'SIGKILL');
    }
    for (const f of existsSync(this.stateDir) ? readdirSync(this.stateDir).filter((x) => x.endsWith('.pid')) : []) {
      try {
        const { pid } = JSON.parse(readFileSync(join(this.stateDir, f), 'utf8')) as { pid: number };
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (cmd.includes('wireguard-go')) process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}

/** Deletes every link but lo in a namespace (ignores errors: the namespace may be gone). */
export function deleteLinks(ns: string): void {
  try {
    const out = sh(['ip', '-n', ns, '-o', 'link', 'show']);
    for (const m of out.matchAll(/^\d+: ([^:@]+)[:@]/gm)) {
      if (m[1] !== 'lo') {
        try {
          sh(['ip', '-n', ns, 'link', 'del', m[1]!]);
        } catch {
          // a veth peer deleted along with its partner
        }
      }
    }
  } catch {
    // namespace gone
  }
}

/** Deletes namespaces (links first). */
export function deleteNamespaces(names: readonly string[]): void {
  for (const ns of names) deleteLinks(ns);
  for (const ns of names) {
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      // not there
    }
  }
}

/**
 * Creates an underlay namespace with a bridge and one namespace per node, each joined to the bridge
 * by a veth named `eth0` with addresses `192.0.2.<i+1>/24` and `2001:db8::<i+1>/64` (documentation
 * ranges). Returns the node namespace names.
 */
export function makeUnderlay(prefix: string, nodes: number): { underlay: string; nodes: string[] } {
  const underlay = `${prefix}-u`;
  sh(['ip', 'netns', 'add', underlay]);
  sh(['ip', '-n', underlay, 'link', 'add', 'br0', 'type', 'bridge']);
  sh(['ip', '-n', underlay, 'link', 'set', 'br0', 'up']);
  const names: string[] = [];
  for (let i = 0; i < nodes; i++) {
    const ns = `${prefix}-${i}`;
    names.push(ns);
    sh(['ip', 'netns', 'add', ns]);
    sh(['ip', '-n', underlay, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh(['ip', '-n', underlay, 'link', 'set', `p${i}`, 'master', 'br0', 'up']);
    sh(['ip', '-n', ns, 'addr', 'add', `192.0.2.${i + 1}/24`, 'dev', 'eth0']);
    sh(['ip', '-n', ns, 'addr', 'add', `2001:db8::${i + 1}/64`, 'dev', 'eth0', 'nodad']);
    sh(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
    sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }
  return { underlay, nodes: names };
}
