/**
 * Where the agent's memory per peer goes: one real Agent (real planner, real datapath reconciler
 * over fake WireGuard and fake rtnetlink, real metrics registry) fed by a fixed in-memory mesh
 * snapshot of N remote nodes, so the heap delta is the agent's own retention and not the mesh's
 * or a peer simulator's. Prints one JSON object: heap used (after GC) for the mesh input alone,
 * after the agent has converged on it, and after further resyncs (growth per change).
 *
 * Usage: node --expose-gc [agent flags, e.g. the AGENT_NODE_FLAGS of src/agent/node-flags.ts]
 *        bench/agent-heap.ts [--peers 1000] [--resyncs 20]
 * Env: AGENT_HEAP_NO_SCRAPE=1 skips the status + metrics scrape after each resync (a real agent is
 * scraped every 15-60 s, not per pass); AGENT_HEAP_SMAPS=1 prints RSS by mapping; AGENT_HEAP_SPACES=1
 * prints V8 heap spaces. The JSON has RSS, heapUsed/heapTotal, new_space, external, arrayBuffers and
 * /proc/self/smaps_rollup's anonymous and file-backed parts at the end.
 */
import { parseArgs } from 'node:util';
import { getHeapSpaceStatistics } from 'node:v8';
import { pino } from 'pino';
import nacl from 'tweetnacl';
import type { MeshEntry, MeshHandle, MeshSnapshot, MemberView } from '../mesh/api.ts';
import { Agent } from '../src/agent/agent.ts';
import { datapathFrom } from '../src/agent/components.ts';
import { makePlanFn } from '../src/agent/plan.ts';
import type { HostNetPort } from '../src/agent/ports.ts';
import { MemoryBlockStore } from '../src/agent/block-store.ts';
import { parseConfig } from '../src/config.ts';
import { FakeRtNetlink, linkFakes } from '../src/datapath/rtnetlink-fake.ts';
import { FakeWireGuardBackend } from '../src/wireguard/fake.ts';
import { generateKeyPair } from '../src/wireguard/keys.ts';
import { createAgentMetrics } from '../src/observe/metrics.ts';
import { SYNTHETIC_CLUSTER_CIDR, syntheticNodeInfo } from './suite/peer-feeder.ts';

const gc = (globalThis as { gc?: () => void }).gc;

function heapMb(): number {
  gc?.();
  gc?.();
  return +(process.memoryUsage().heapUsed / 1048576).toFixed(2);
}

/** A mesh that never talks: `snapshot()` returns the fixed member list (a fresh array, as the real mesh does). */
class FixedMesh implements MeshHandle {
  readonly listeners = new Set<(s: MeshSnapshot) => void>();
  readonly local = new Map<string, MeshEntry>();
  readonly others: readonly MemberView[];
  constructor(others: readonly MemberView[]) {
    this.others = others;
  }
  async start(): Promise<void> {}
  async join(): Promise<void> {}
  setLocal(key: string, payload: Uint8Array): void {
    this.local.set(key, { key, version: (this.local.get(key)?.version ?? 0) + 1, payload, expiresAt: 0, deleted: false });
  }
  deleteLocal(key: string): void {
    this.local.delete(key);
  }
  snapshot(): MeshSnapshot {
    const self: MemberView = { name: 'self', identityKey: 'self', addr: '192.0.2.254', port: 7946, state: 'alive', incarnation: 1, entries: new Map(this.local) };
    return { self: 'self', members: [self, ...this.others] };
  }
  stats() {
    return { packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, decryptFailures: 0, badSignatures: 0, malformed: 0, rateLimited: 0 };
  }
  on(_e: 'change', l: (s: MeshSnapshot) => void): this {
    this.listeners.add(l);
    return this;
  }
  off(_e: 'change', l: (s: MeshSnapshot) => void): this {
    this.listeners.delete(l);
    return this;
  }
  emit(): void {
    const s = this.snapshot();
    for (const l of this.listeners) l(s);
  }
  async leave(): Promise<void> {}
  async stop(): Promise<void> {}
}

function members(n: number): MemberView[] {
  const enc = new TextEncoder();
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => {
    const wg = Buffer.from(nacl.box.keyPair().publicKey).toString('base64');
    const payload = enc.encode(JSON.stringify(syntheticNodeInfo(i, wg, now)));
    const entries = new Map<string, MeshEntry>([['node', { key: 'node', version: 1, payload, expiresAt: 0, deleted: false }]]);
    return { name: `rss-${i}`, identityKey: `id-${i}`, addr: `192.0.2.${1 + (i % 250)}`, port: 7946, state: 'alive' as const, incarnation: 1, entries };
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { peers: { type: 'string', default: '1000' }, resyncs: { type: 'string', default: '20' } } });
  const n = Number(values.peers);
  const resyncs = Number(values.resyncs);
  if (!gc) throw new Error('agent-heap: run with --expose-gc');
  const logger = pino({ level: 'silent' });
  const base = heapMb();
  const mesh = new FixedMesh(members(n));
  const withMesh = heapMb();
  const rssBefore = +(process.memoryUsage().rss / 1048576).toFixed(2);
  const config = parseConfig({ name: 'self', listenAddr: '192.0.2.254', seeds: '', stateDir: '/nonexistent/state', runDir: '/nonexistent/run', clusterCidr: SYNTHETIC_CLUSTER_CIDR }, {});
  const kp = generateKeyPair();
  const fake = new FakeWireGuardBackend();
  const rt = new FakeRtNetlink();
  const hostNet: HostNetPort = { ensureGateway: async () => {}, enableForwarding: async () => {}, removeGateway: async () => {} };
  let agent: Agent | undefined;
  const metrics = createAgentMetrics({ peers: async () => agent?.status() }, { processMetrics: false });
  agent = new Agent({
    config, logger, clock: Date.now, random: Math.random, mesh, wgPublicKey: kp.publicKey, backendKind: 'fake',
    endpoints: ['192.0.2.254:51820'], plan: makePlanFn(config, { mtu: 1420, families: [4] }),
    datapath: datapathFrom(linkFakes(fake, rt), rt, { ifname: 'weft0', resyncMs: 0 }, logger, kp.privateKey),
    blockStore: new MemoryBlockStore(), hostNet, metrics, initialSyncMs: 10,
  });
  await agent.start();
  mesh.emit();
  await agent.idle();
  const peers = agent.lastDesired?.peers.length ?? 0;
  await metrics.registry.metrics();
  const converged = heapMb();
  const rssConverged = +(process.memoryUsage().rss / 1048576).toFixed(2);
  for (let i = 0; i < resyncs; i++) {
    mesh.emit();
    await agent.idle();
    if (!process.env.AGENT_HEAP_NO_SCRAPE) {
      agent.status();
      await metrics.registry.metrics();
    }
  }
  const afterResyncs = heapMb();
  const device = (await fake.getDevice('weft0'))?.peers.length ?? 0;
  await agent.stop();
  if (process.env.AGENT_HEAP_SMAPS) {
    // Resident memory by mapping (anonymous mappings by size class): where RSS outside the JS heap sits.
    const { readFileSync } = await import('node:fs');
    const by = new Map<string, number>();
    let cur = '';
    for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
      const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
      if (m) cur = m[1] || '[anon]';
      const rss = /^Rss:\s+(\d+) kB/.exec(line);
      if (rss) by.set(cur, (by.get(cur) ?? 0) + Number(rss[1]));
    }
    for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.error('smaps', k, (v / 1024).toFixed(1));
  }
  if (process.env.AGENT_HEAP_SPACES) for (const sp of getHeapSpaceStatistics()) console.error(sp.space_name, (sp.space_size / 1048576).toFixed(1), (sp.space_used_size / 1048576).toFixed(1));
  const r = (x: number) => +x.toFixed(2);
  const { readFileSync } = await import('node:fs');
  const rollup = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
  const mem = process.memoryUsage();
  const newSpace = getHeapSpaceStatistics().find((sp) => sp.space_name === 'new_space');
  console.log(JSON.stringify({
    peers, device_peers: device, heap_base_mb: base, mesh_input_mb: r(withMesh - base), agent_mb: r(converged - withMesh),
    agent_kb_per_peer: r(((converged - withMesh) * 1024) / Math.max(1, n)), growth_after_resyncs_mb: r(afterResyncs - converged), resyncs,
    rss_mb: r(process.memoryUsage().rss / 1048576), rss_before_agent_mb: rssBefore, rss_converged_mb: rssConverged,
    heap_total_mb: r(mem.heapTotal / 1048576), heap_used_mb: r(mem.heapUsed / 1048576), new_space_mb: r((newSpace?.space_size ?? 0) / 1048576),
    external_mb: r(mem.external / 1048576), array_buffers_mb: r(mem.arrayBuffers / 1048576),
    anonymous_mb: r(kb('Anonymous') / 1024), file_mb: r((kb('Rss') - kb('Anonymous')) / 1024), exec_argv: process.execArgv.join(' '),
  }));
}

main().catch((err: unknown) => {
  console.error(`agent-heap: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
