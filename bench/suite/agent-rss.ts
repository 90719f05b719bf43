/**
 * Agent memory with N peers: a one-node lab runs a real `weft agent`; a feeder process in the
 * node's namespaces runs N real mesh members publishing signed `node` entries (peer-feeder.ts).
 * Once the agent's status lists N WireGuard peers, VmRSS / VmHWM of the agent process are read
 * from /proc/<pid>/status. Target (issue 8): VmRSS <= 80 MB with 1,000 peers.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentStatus } from '../../src/agent/agent.ts';
import { uniquePrefix } from '../../src/lab/host.ts';
import { Lab, waitFor } from '../../src/lab/lab.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

/** VmRSS and VmHWM in MB from a /proc/<pid>/status text; throws when absent. Pure. */
export function parseVmStatus(text: string): { rss_mb: number; hwm_mb: number } {
  const kb = (k: string): number => {
    const m = new RegExp(`^${k}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    if (!m) throw new Error(`proc status: no ${k}`);
    return Number(m[1]);
  };
  return { rss_mb: Math.round((kb('VmRSS') / 1024) * 10) / 10, hwm_mb: Math.round((kb('VmHWM') / 1024) * 10) / 10 };
}

/** Options of {@link measureAgentRss}. */
export interface RssOptions {
  readonly peers: number;
  readonly backend: 'kernel' | 'userspace';
  readonly timeoutMs?: number;
  /** Give up waiting when the peer count has not grown for this long; default 60 s. */
  readonly stallMs?: number;
  readonly progress?: (msg: string) => void;
}

/** Runs the measurement; the lab (agent, feeder, wireguard-go, namespaces) is removed in `finally`. */
export async function measureAgentRss(opts: RssOptions): Promise<Record<string, unknown>> {
  const progress = opts.progress ?? (() => {});
  const lab = new Lab({ prefix: uniquePrefix('wbn'), agentLogLevel: 'warn', resync: '30s', progress });
  const t0 = performance.now();
  try {
    const meta = await lab.up({ nodes: 1, podsPerNode: 0, backend: opts.backend });
    const node = meta.nodes[0]!;
    const pid = lab.agentPid(node.name)!;
    const idle = parseVmStatus(await readFile(`/proc/${pid}/status`, 'utf8'));
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
    await new Promise((r) => setTimeout(r, 10_000));
    const status = await c.get<AgentStatus>('/v1/status');
    const full = parseVmStatus(await readFile(`/proc/${pid}/status`, 'utf8'));
    return { peers: status.peers.length, peers_wanted: opts.peers, complete, rss_mb: full.rss_mb, hwm_mb: full.hwm_mb, idle_rss_mb: idle.rss_mb, target_rss_mb: 80, ok: full.rss_mb <= 80, backend: opts.backend, setup_ms: convergeMs };
  } finally {
    await lab.down().catch((e: unknown) => progress(`bench: removing the RSS lab: ${(e as Error).message}`));
  }
}
