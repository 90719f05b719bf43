/**
 * Prometheus metrics of the agent on its own registry (never prom-client's global one, so several
 * agents can live in one test process). Components report through the small objects returned by
 * {@link createAgentMetrics}; values that other components already count (mesh, datapath, DNS)
 * are read at scrape time through callbacks.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MeshSnapshot, MeshStats } from '../../mesh/api.ts';
import type { ApiServer } from '../api/server.ts';
import type { DatapathStats } from '../agent/ports.ts';

/** What the agent reports directly. */
export interface AgentMetrics {
  readonly registry: Registry;
  readonly planDuration: Histogram;
  readonly reconcileErrors: Counter<'stage'>;
  readonly reconciles: Counter;
  readonly rejectedRecords: Counter<'reason'>;
  readonly podEntriesDropped: Counter;
  readonly blockReclaims: Counter;
  readonly apiRequests: Counter<'route' | 'status'>;
  readonly apiDuration: Histogram<'route'>;
  /** CNI operations (ADD, DEL, CHECK, GC, STATUS) by result, fed by {@link apiRequestObserver}. */
  readonly cniOperations: Counter<'op' | 'result'>;
  readonly cniDuration: Histogram<'op'>;
}

/** Sources read at scrape time; each callback must be cheap and must not throw. */
export interface MetricSources {
  readonly mesh?: () => { snapshot: MeshSnapshot; stats: MeshStats } | undefined;
  readonly datapath?: () => DatapathStats | undefined;
  /** Any flat counters (e.g. DNS `stats()`); exported as `weft_dns_stat{counter}`. */
  readonly dns?: () => Readonly<Record<string, number>> | undefined;
  /** WireGuard peers as the status view has them (read from the device at scrape time). */
  readonly peers?: () => Promise<{ readonly now: number; readonly peers: readonly PeerMetricsRow[] } | undefined>;
}

/** What the per-peer metrics need of a peer. */
export interface PeerMetricsRow {
  readonly name: string;
  readonly lastHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly link: string;
}

/** Resolution (ms) of the `weft_nodejs_eventloop_lag_*` sampling timer; see {@link createAgentMetrics}. */
export const EVENT_LOOP_SAMPLE_MS = 1000;

/** Creates the registry, the agent's metrics, the scrape-time collectors and Node.js process metrics. */
export function createAgentMetrics(sources: MetricSources = {}, opts: { processMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
  // prom-client samples event-loop delay with a 10 ms timer by default: 100 wake-ups a second of an
  // otherwise idle agent, CPU taken from the pods on the node. One sample a second still shows a stalled loop.
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'weft_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  const r = [registry];
  const m: AgentMetrics = {
    registry,
    planDuration: new Histogram({ name: 'weft_reconcile_duration_seconds', help: 'Time of one plan + datapath apply', registers: r, buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10] }),
    reconcileErrors: new Counter({ name: 'weft_reconcile_errors_total', help: 'Failed reconcile steps, by stage', labelNames: ['stage'], registers: r }),
    reconciles: new Counter({ name: 'weft_reconciles_total', help: 'Reconcile passes run by the agent', registers: r }),
    rejectedRecords: new Counter({ name: 'weft_mesh_records_rejected_total', help: 'Mesh records the planner refused', labelNames: ['reason'], registers: r }),
    podEntriesDropped: new Counter({ name: 'weft_pod_entries_dropped_total', help: 'Local pods not published (name too long or malformed)', registers: r }),
    blockReclaims: new Counter({ name: 'weft_ipam_block_reclaims_total', help: 'Times this node lost its pod block to an older claim and re-claimed', registers: r }),
    apiRequests: new Counter({ name: 'weft_api_requests_total', help: 'Local API requests by route and status (CNI operations included)', labelNames: ['route', 'status'], registers: r }),
    apiDuration: new Histogram({ name: 'weft_api_request_duration_seconds', help: 'Local API request latency by route', labelNames: ['route'], registers: r, buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] }),
    cniOperations: new Counter({ name: 'weft_cni_operations_total', help: 'CNI operations handled by the agent, by operation and result (ok, error)', labelNames: ['op', 'result'], registers: r }),
    cniDuration: new Histogram({ name: 'weft_cni_operation_duration_seconds', help: 'CNI operation latency in the agent, by operation', labelNames: ['op'], registers: r, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] }),
  };

  // Named counter families over the components' own monotonic counters (read at scrape time).
  const mirror = (name: string, help: string, read: () => Readonly<Record<string, number>> | undefined, label?: string): void => {
    new Counter({
      name, help, labelNames: label ? [label] : [], registers: r,
      collect() {
        this.reset();
        const v = read();
        if (!v) return;
        for (const [k, n] of Object.entries(v)) if (Number.isFinite(n) && n > 0) (label ? this.inc({ [label]: k }, n) : this.inc(n));
      },
    });
  };
  const meshStats = () => sources.mesh?.()?.stats;
  const dpStats = () => sources.datapath?.();
  mirror('weft_reconcile_writes_total', 'Kernel writes (WireGuard and rtnetlink) made by the datapath reconciler', () => { const d = dpStats(); return d && { all: d.writes }; });
  mirror('weft_datapath_reconciles_total', 'Datapath reconcile passes', () => { const d = dpStats(); return d && { all: d.reconciles }; });
  mirror('weft_datapath_errors_total', 'Failed datapath reconcile passes', () => { const d = dpStats(); return d && { all: d.errors }; });
  mirror('weft_gossip_messages_total', 'Mesh gossip packets by direction', () => { const m = meshStats(); return m && { in: m.packetsIn, out: m.packetsOut }; }, 'direction');
  mirror('weft_gossip_bytes_total', 'Mesh gossip bytes by direction', () => { const m = meshStats(); return m && { in: m.bytesIn, out: m.bytesOut }; }, 'direction');
  mirror('weft_gossip_decryption_failures_total', 'Mesh packets that failed to decrypt (wrong mesh key or forged)', () => { const m = meshStats(); return m && { all: m.decryptFailures }; });
  mirror('weft_gossip_rejected_packets_total', 'Mesh packets dropped, by cause', () => { const m = meshStats(); return m && { badSignatures: m.badSignatures, malformed: m.malformed, rateLimited: m.rateLimited }; }, 'cause');

  new Gauge({
    name: 'weft_mesh_members', help: 'Mesh members by state', labelNames: ['state'], registers: r,
    collect() {
      this.reset();
      const s = sources.mesh?.();
      if (!s) return;
      const counts: Record<string, number> = { alive: 0, suspect: 0, dead: 0, left: 0 };
      for (const mem of s.snapshot.members) counts[mem.state] = (counts[mem.state] ?? 0) + 1;
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'weft_mesh_stat', help: 'Mesh counters (packets, bytes, decrypt failures, bad signatures, malformed, rate limited); monotonic', labelNames: ['counter'], registers: r,
    collect() {
      this.reset();
      const s = sources.mesh?.();
      if (!s) return;
      for (const [k, v] of Object.entries(s.stats)) if (typeof v === 'number') this.set({ counter: k }, v);
    },
  });
  new Gauge({
    name: 'weft_datapath_stat', help: 'Datapath reconciler counters (reconciles, errors, writes, lastDurationMs)', labelNames: ['counter'], registers: r,
    collect() {
      this.reset();
      const s = sources.datapath?.();
      if (!s) return;
      for (const [k, v] of Object.entries(s)) if (typeof v === 'number') this.set({ counter: k }, v);
    },
  });
  new Gauge({
    name: 'weft_dns_stat', help: 'DNS server counters as the DNS module reports them', labelNames: ['counter'], registers: r,
    collect() {
      this.reset();
      const s = sources.dns?.();
      if (!s) return;
      for (const [k, v] of Object.entries(s)) if (typeof v === 'number' && Number.isFinite(v)) this.set({ counter: k }, v);
    },
  });
  // One device read per scrape, shared by the per-peer gauges below.
  let scrape: Promise<Awaited<ReturnType<NonNullable<MetricSources['peers']>>>> | undefined;
  const peers = () => {
    if (!scrape) {
      scrape = (sources.peers?.() ?? Promise.resolve(undefined)).catch(() => undefined);
      void scrape.finally(() => setTimeout(() => (scrape = undefined), 0));
    }
    return scrape;
  };
  new Gauge({
    name: 'weft_peers', help: 'WireGuard peers by link state (connected, relayed, handshaking, unreachable)', labelNames: ['link'], registers: r,
    async collect() {
      this.reset();
      const p = await peers();
      if (!p) return;
      const counts: Record<string, number> = { connected: 0, handshaking: 0, unreachable: 0 };
      for (const row of p.peers) counts[row.link] = (counts[row.link] ?? 0) + 1;
      for (const [link, n] of Object.entries(counts)) this.set({ link }, n);
    },
  });
  new Gauge({
    name: 'weft_peer_handshake_age_seconds', help: 'Seconds since the last WireGuard handshake per peer (-1 = never)', labelNames: ['peer'], registers: r,
    async collect() {
      this.reset();
      const p = await peers();
      for (const row of p?.peers ?? []) this.set({ peer: row.name }, row.lastHandshake > 0 ? Math.max(0, p!.now - row.lastHandshake) : -1);
    },
  });
  new Gauge({
    name: 'weft_peer_bytes', help: 'Bytes received and sent per WireGuard peer (monotonic while the device lives)', labelNames: ['peer', 'direction'], registers: r,
    async collect() {
      this.reset();
      const p = await peers();
      for (const row of p?.peers ?? []) {
        this.set({ peer: row.name, direction: 'rx' }, row.rxBytes);
        this.set({ peer: row.name, direction: 'tx' }, row.txBytes);
      }
    },
  });
  return m;
}

/** An `onRequest` hook for {@link ApiServer} that feeds the API metrics; unknown paths are folded into one label. */
export function apiRequestObserver(m: AgentMetrics, knownRoutes: () => ReadonlySet<string>): (method: string, path: string, status: number, seconds: number) => void {
  return (method, path, status, seconds) => {
    const route = knownRoutes().has(path) ? `${method} ${path}` : 'other';
    m.apiRequests.inc({ route, status: String(status) });
    m.apiDuration.observe({ route }, seconds);
    const cni = /^\/v1\/cni\/(add|del|check|gc|status)$/.exec(path);
    if (cni) {
      m.cniOperations.inc({ op: cni[1]!.toUpperCase(), result: status >= 200 && status < 300 ? 'ok' : 'error' });
      m.cniDuration.observe({ op: cni[1]!.toUpperCase() }, seconds);
    }
  };
}

/** Mounts GET /metrics (unix socket and TCP). */
export function mountMetricsRoute(api: ApiServer, m: AgentMetrics): void {
  api.route('GET', '/metrics', async () => ({ status: 200, text: await m.registry.metrics(), contentType: m.registry.contentType }), { tcp: true });
}
