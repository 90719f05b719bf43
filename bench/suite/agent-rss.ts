/**
 * Agent memory with N peers: a one-node lab runs a real `weft agent`; a feeder process in the
 * node's namespaces runs N real mesh members publishing signed `node` entries (peer-feeder.ts).
 * Once the agent's status lists N WireGuard peers, VmRSS / VmHWM of the agent process are read
 * from /proc/<pid>/status. Target (issue 8): VmRSS <= 80 MB with 1,000 peers. The agent runs as
 * it ships: the bundle (dist/weft.mjs) with the image's Node flags (AGENT_NODE_FLAGS).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { AgentStatus } from '../../src/agent/agent.ts';
import { uniquePrefix } from '../../src/lab/host.ts';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { AGENT_NODE_FLAGS } from '../../src/agent/node-flags.ts';
import { CLK_TCK, parsePidStatTicks } from './datapath.ts';
import { SYNTHETIC_CLUSTER_CIDR } from './peer-feeder.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * VmRSS and VmHWM in MB from a /proc/<pid>/status text (throws when absent), with the anonymous
 * and file-backed parts of RSS when the kernel reports them. Pure.
 */
export function parseVmStatus(text: string): { rss_mb: number; hwm_mb: number; anon_mb?: number; file_mb?: number } {
  const kb = (k: string): number | undefined => {
    const m = new RegExp(`^${k}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const mb = (k: string): number => {
    const v = kb(k);
    if (v === undefined) throw new Error(`proc status: no ${k}`);
    return Math.round((v / 1024) * 10) / 10;
  };
  const out: { rss_mb: number; hwm_mb: number; anon_mb?: number; file_mb?: number } = { rss_mb: mb('VmRSS'), hwm_mb: mb('VmHWM') };
  if (kb('RssAnon') !== undefined) out.anon_mb = mb('RssAnon');
  if (kb('RssFile') !== undefined) out.file_mb = mb('RssFile');
  return out;
}

/** User + system CPU seconds of a process from its /proc/<pid>/stat text (the datapath bench's tick parser). Pure. */
export function parseProcCpuSeconds(stat: string): number {
  return parsePidStatTicks(stat) / CLK_TCK;
}

/** Options of {@link measureAgentRss}. */
export interface RssOptions {
  readonly peers: number;
  readonly backend: 'kernel' | 'userspace';
  readonly timeoutMs?: number;
  /** Give up waiting when the peer count has not grown for this long; default 60 s. */
  readonly stallMs?: number;
  readonly progress?: (msg: string) => void;
  /** Node.js flags of the agent; default what ships (AGENT_NODE_FLAGS, via the lab). */
  readonly nodeFlags?: readonly string[];
  /**
   * The weft entry the agent runs. Default: what ships, the bundle (see {@link shippedEntry}); the
   * sources (src/main.ts, type-stripped at load) cost ~30 MB more at idle.
   */
  readonly script?: string;
  /** Namespace/lab prefix base (a random suffix is added); default `wbn`. */
  readonly prefix?: string;
  /** Called with the agent's pid when idle (0 peers) and when measured (after convergence), e.g. to save its smaps. */
  readonly inspect?: (phase: 'idle' | 'measured', pid: number) => Promise<void>;
}

/**
 * Resident MB of the mappings of `binary` (the node executable: its text, ICU data and read-only
 * data are file-backed pages VmRSS counts) in a /proc/<pid>/smaps text. Pure.
 */
export function smapsBinaryMb(smaps: string, binary: string): number {
  let kb = 0;
  let inBinary = false;
  for (const line of smaps.split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inBinary = line.endsWith(` ${binary}`);
    else if (inBinary && line.startsWith('Rss:')) kb += Number(/(\d+)/.exec(line)?.[1] ?? 0);
  }
  return Math.round((kb / 1024) * 10) / 10;
}

/**
 * The bundled weft the image ships, for the agent under measurement: the running weft itself when
 * it is the bundle (`weft bench` in the image), else one built now with deploy/build.ts into a
 * temporary directory inside the checkout (so the external netlink module resolves from
 * node_modules); `undefined` (the lab's src/main.ts) when neither works. `cleanup` removes the build.
 */
export async function shippedEntry(progress: (msg: string) => void): Promise<{ script?: string; entry: 'bundle' | 'source'; cleanup: () => Promise<void> }> {
  const none = async (): Promise<void> => {};
  const running = process.argv[1];
  if (running && running.endsWith('.mjs') && existsSync(running)) return { script: running, entry: 'bundle', cleanup: none };
  const root = join(HERE, '..', '..');
  const build = join(root, 'deploy', 'build.ts');
  if (!existsSync(build)) return { entry: 'source', cleanup: none };
  await mkdir(join(root, 'bench', 'results'), { recursive: true });
  const out = await mkdtemp(join(root, 'bench', 'results', '.agent-bundle-'));
  const cleanup = () => rm(out, { recursive: true, force: true });
  try {
    await promisify(execFile)(process.execPath, [build, '--outdir', out], { timeout: 180_000 });
    return { script: join(out, 'weft.mjs'), entry: 'bundle', cleanup };
  } catch (err) {
    progress(`bench: cannot build the agent bundle (${(err as Error).message.split('\n')[0]}); measuring src/main.ts instead`);
    await cleanup();
    return { entry: 'source', cleanup: none };
  }
}

/** Runs the measurement; the lab (agent, feeder, wireguard-go, namespaces) is removed in `finally`. */
export async function measureAgentRss(opts: RssOptions): Promise<Record<string, unknown>> {
  const progress = opts.progress ?? (() => {});
  const shipped = opts.script !== undefined ? { script: opts.script, entry: opts.script.endsWith('.ts') ? 'source' : 'bundle', cleanup: async () => {} } : await shippedEntry(progress);
  const flags = opts.nodeFlags ?? AGENT_NODE_FLAGS;
  const lab = new Lab({ prefix: uniquePrefix(opts.prefix ?? 'wbn'), agentLogLevel: 'warn', resync: '30s', progress, agentNodeFlags: flags, agentScript: shipped.script });
  const t0 = performance.now();
  try {
    // The synthetic peers hold /24 blocks outside the lab's 10.244.0.0/16: widen the agent's cluster CIDR to hold them.
    const meta = await lab.up({ nodes: 1, podsPerNode: 0, backend: opts.backend, agentArgs: ['--cluster-cidr', SYNTHETIC_CLUSTER_CIDR] });
    const node = meta.nodes[0]!;
    const pid = lab.agentPid(node.name)!;
    const idle = parseVmStatus(await readFile(`/proc/${pid}/status`, 'utf8'));
    const exe = await readlink(`/proc/${pid}/exe`);
    const binaryMb = async (): Promise<number> => smapsBinaryMb(await readFile(`/proc/${pid}/smaps`, 'utf8'), exe);
    const idleBinary = await binaryMb();
    await opts.inspect?.('idle', pid);
    await lab.spawnIn(node.name, [lab.nodeBin, join(HERE, 'peer-feeder.ts'), '--count', String(opts.peers), '--bind', node.underlayIP, '--seed', `${node.underlayIP}:${meta.meshPort}`, '--key-file', '/var/lib/weft/mesh.key'], 'peer-feeder');
    const c = lab.client(node.name, 10_000);
    let seen = 0;
    let best = 0;
    let bestAt = performance.now();
    let complete = true;
    // Stop waiting at the deadline, or when the count has not grown for `stallMs` (the feeder,
    // one process hosting every synthetic member, can fall behind on probes on a loaded host and
    // a few members flap): the RSS is then read at the count reached, with `complete: false`.
    const stallMs = opts.stallMs ?? 60_000;
    const outcome = await waitFor(`the agent to have ${opts.peers} peers`, opts.timeoutMs ?? 600_000, async () => {
      const s = await c.get<AgentStatus>('/v1/status');
      if (s.peers.length !== seen) {
        seen = s.peers.length;
        progress(`bench: agent has ${seen} peers`);
      }
      if (seen > best) {
        best = seen;
        bestAt = performance.now();
      }
      if (s.peers.length >= opts.peers) return 'complete';
      if (performance.now() - bestAt > stallMs) return `stalled at ${best} peers for ${stallMs} ms`;
      return undefined;
    }, 2000).catch((err: Error) => err.message);
    if (outcome !== 'complete') {
      progress(`bench: ${outcome}`);
      complete = false;
    }
    const convergeMs = Math.round(performance.now() - t0);
    // Let a resync and a push/pull round pass with the full peer set before reading.
    const cpuConverged = parseProcCpuSeconds(await readFile(`/proc/${pid}/stat`, 'utf8'));
    await new Promise((r) => setTimeout(r, 10_000));
    const cpuAfter = parseProcCpuSeconds(await readFile(`/proc/${pid}/stat`, 'utf8'));
    const status = await c.get<AgentStatus>('/v1/status');
    const full = parseVmStatus(await readFile(`/proc/${pid}/status`, 'utf8'));
    const fullBinary = await binaryMb();
    await opts.inspect?.('measured', pid);
    return { peers: status.peers.length, peers_wanted: opts.peers, complete, rss_mb: full.rss_mb, hwm_mb: full.hwm_mb, anon_mb: full.anon_mb, file_mb: full.file_mb, node_binary_mb: fullBinary, idle_rss_mb: idle.rss_mb, idle_node_binary_mb: idleBinary, target_rss_mb: 80, ok: full.rss_mb <= 80, backend: opts.backend, setup_ms: convergeMs, cpu_s_to_converge: cpuConverged, cpu_s_steady_10s: Math.round((cpuAfter - cpuConverged) * 100) / 100, agent_entry: shipped.entry, node_flags: flags.join(' ') };
  } finally {
    await lab.down().catch((e: unknown) => progress(`bench: removing the RSS lab: ${(e as Error).message}`));
    await shipped.cleanup().catch(() => {});
  }
}
