/**
 * Issue 9: every metric family the issue lists is registered and carries the values its source
 * reports (peers by state, handshake age and bytes per peer, reconcile duration/errors/writes,
 * gossip members by state/messages/bytes/decryption failures, DNS by rcode + latency, CNI
 * operations + latency, Node.js process metrics).
 */
import { describe, expect, it } from 'vitest';
import { apiRequestObserver, createAgentMetrics } from '../../src/observe/metrics.ts';
import { LATENCY_BUCKETS, registerDnsMetrics, type DnsServerStats } from '../../src/dns/server.ts';

function metricsWithSources() {
  const m = createAgentMetrics({
    mesh: () => ({
      snapshot: { self: 'a', members: [{ name: 'a', identityKey: '', addr: '', port: 0, state: 'alive', incarnation: 0, entries: new Map() }, { name: 'b', identityKey: '', addr: '', port: 0, state: 'suspect', incarnation: 0, entries: new Map() }] },
      stats: { packetsIn: 50, packetsOut: 60, bytesIn: 7000, bytesOut: 8000, decryptFailures: 4, badSignatures: 2, malformed: 3, rateLimited: 1 },
    }),
    datapath: () => ({ reconciles: 12, errors: 2, writes: 33, lastDurationMs: 5 }),
    peers: async () => ({ now: 1000, peers: [{ name: 'n2', lastHandshake: 990, rxBytes: 5, txBytes: 6, link: 'connected' }, { name: 'n3', lastHandshake: 0, rxBytes: 0, txBytes: 0, link: 'unreachable' }] }),
  });
  const counts = LATENCY_BUCKETS.map(() => 0).concat([0]);
  counts[4] = 7;
  const dns: DnsServerStats = { responses: { NOERROR: 7, NXDOMAIN: 2 }, dropped: { short: 0, response: 0, ratelimited: 1, tcpLimit: 0, unanswerable: 0 }, forwarded: 0, truncated: 0, cacheHits: 0, latency: { counts, sum: 0.01, count: 9 } };
  registerDnsMetrics(m.registry, { stats: () => dns });
  return m;
}

async function values(m: ReturnType<typeof createAgentMetrics>): Promise<Map<string, { labels: Record<string, unknown>; value: number }[]>> {
  const out = new Map<string, { labels: Record<string, unknown>; value: number }[]>();
  for (const f of await m.registry.getMetricsAsJSON()) out.set(f.name, (f.values ?? []) as { labels: Record<string, unknown>; value: number }[]);
  return out;
}

const v = (rows: { labels: Record<string, unknown>; value: number }[] | undefined, labels: Record<string, string> = {}) =>
  rows?.find((r) => Object.entries(labels).every(([k, x]) => r.labels[k] === x))?.value;

describe('metrics registration', () => {
  it('registers every family of issue 9 with the sources\' values', async () => {
    const m = metricsWithSources();
    const observe = apiRequestObserver(m, () => new Set(['/v1/cni/add', '/v1/cni/del']));
    observe('POST', '/v1/cni/add', 200, 0.02);
    observe('POST', '/v1/cni/add', 500, 0.03);
    observe('POST', '/v1/cni/del', 200, 0.01);
    observe('GET', '/v1/status', 200, 0.01);
    m.planDuration.observe(0.004);
    m.reconcileErrors.inc({ stage: 'datapath' });
    const all = await values(m);

    expect(v(all.get('weft_peers'), { link: 'connected' })).toBe(1);
    expect(v(all.get('weft_peers'), { link: 'unreachable' })).toBe(1);
    expect(v(all.get('weft_peer_handshake_age_seconds'), { peer: 'n2' })).toBe(10);
    expect(v(all.get('weft_peer_handshake_age_seconds'), { peer: 'n3' })).toBe(-1);
    expect(v(all.get('weft_peer_bytes'), { peer: 'n2', direction: 'tx' })).toBe(6);

    expect(v(all.get('weft_reconcile_duration_seconds'), {})).toBeDefined();
    expect(v(all.get('weft_reconcile_errors_total'), { stage: 'datapath' })).toBe(1);
    expect(v(all.get('weft_reconcile_writes_total'))).toBe(33);
    expect(v(all.get('weft_datapath_reconciles_total'))).toBe(12);
    expect(v(all.get('weft_datapath_errors_total'))).toBe(2);

    expect(v(all.get('weft_mesh_members'), { state: 'suspect' })).toBe(1);
    expect(v(all.get('weft_gossip_messages_total'), { direction: 'in' })).toBe(50);
    expect(v(all.get('weft_gossip_bytes_total'), { direction: 'out' })).toBe(8000);
    expect(v(all.get('weft_gossip_decryption_failures_total'))).toBe(4);
    expect(v(all.get('weft_gossip_rejected_packets_total'), { cause: 'malformed' })).toBe(3);

    expect(v(all.get('weft_dns_responses_total'), { rcode: 'NXDOMAIN' })).toBe(2);
    expect(v(all.get('weft_dns_latency_bucket_seconds'), { le: '+Inf' })).toBe(7);

    expect(v(all.get('weft_cni_operations_total'), { op: 'ADD', result: 'ok' })).toBe(1);
    expect(v(all.get('weft_cni_operations_total'), { op: 'ADD', result: 'error' })).toBe(1);
    expect(v(all.get('weft_cni_operations_total'), { op: 'DEL', result: 'ok' })).toBe(1);
    const cniCount = all.get('weft_cni_operation_duration_seconds')!.find((r) => r.labels.op === 'ADD' && (r as { metricName?: string }).metricName === 'weft_cni_operation_duration_seconds_count');
    expect(cniCount?.value).toBe(2);

    for (const name of ['weft_process_cpu_seconds_total', 'weft_process_resident_memory_bytes', 'weft_nodejs_heap_size_used_bytes', 'weft_nodejs_eventloop_lag_seconds']) expect(all.has(name), name).toBe(true);
    // The text exposition renders without error and carries the HELP lines.
    const text = await m.registry.metrics();
    expect(text).toContain('# HELP weft_gossip_decryption_failures_total');
  });

  it('reports nothing (but does not throw) when the sources are not there yet', async () => {
    const m = createAgentMetrics({}, { processMetrics: false });
    const all = await values(m);
    expect(all.get('weft_gossip_messages_total')).toEqual([]);
    expect(all.get('weft_peers')).toEqual([]);
    expect(all.has('weft_process_cpu_seconds_total')).toBe(false);
  });
});
