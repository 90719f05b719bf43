import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../../src/api/client.ts';
import { ApiServer } from '../../src/api/server.ts';
import { Health, mountHealthRoutes } from '../../src/observe/health.ts';
import { apiRequestObserver, createAgentMetrics, mountMetricsRoute } from '../../src/observe/metrics.ts';
import { formatAge, formatBytes, peerUnhealthy, renderDns, renderIpam, renderStatus } from '../../src/cli/status.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';
import { peerLink } from '../../src/observe/peers.ts';

describe('Health', () => {
  it('fails liveness when a loop stops turning and readiness until every condition holds', () => {
    let now = 1000;
    const h = new Health({ clock: () => now, maxLoopAgeMs: 500 });
    h.watch('reconcile');
    expect(h.healthz().ok).toBe(true);
    now = 1600;
    expect(h.healthz()).toMatchObject({ ok: false, checks: { reconcile: { ok: false } } });
    h.tick('reconcile');
    expect(h.healthz().ok).toBe(true);
    expect(h.readyz().ok).toBe(false);
    h.setReady('mesh', true);
    h.setReady('datapath', false, 'not applied');
    expect(h.readyz()).toMatchObject({ ok: false, checks: { datapath: { ok: false, detail: 'not applied' } } });
    h.setReady('datapath', true);
    expect(h.readyz().ok).toBe(true);
  });
});

describe('metrics and health routes', () => {
  let dir: string | undefined;
  let api: ApiServer | undefined;
  afterEach(async () => {
    await api?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves /metrics with mesh, datapath, API and process metrics, and health codes', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wag-obs-'));
    const m = createAgentMetrics({
      mesh: () => ({
        snapshot: { self: 'a', members: [{ name: 'a', identityKey: '', addr: '', port: 0, state: 'alive', incarnation: 0, entries: new Map() }, { name: 'b', identityKey: '', addr: '', port: 0, state: 'dead', incarnation: 0, entries: new Map() }] },
        stats: { packetsIn: 5, packetsOut: 6, bytesIn: 7, bytesOut: 8, decryptFailures: 1, badSignatures: 2, malformed: 3, rateLimited: 4 },
      }),
      datapath: () => ({ reconciles: 3, errors: 1, writes: 9, lastDurationMs: 2 }),
      dns: () => ({ queries: 11 }),
      peers: async () => ({ now: 1000, peers: [{ name: 'n2', lastHandshake: 990, rxBytes: 5, txBytes: 6, link: 'connected' }, { name: 'n3', lastHandshake: 0, rxBytes: 0, txBytes: 0, link: 'handshaking' }] }),
    });
    const h = new Health({ clock: Date.now, maxLoopAgeMs: 10_000 });
    api = new ApiServer({ logger: pino({ level: 'silent' }), onRequest: apiRequestObserver(m, () => new Set(['/healthz', '/readyz', '/metrics'])) });
    mountHealthRoutes(api, h);
    mountMetricsRoute(api, m);
    const sock = join(dir, 's.sock');
    await api.listenUnix(sock);
    const c = new ApiClient({ socketPath: sock });
    expect((await c.raw('GET', '/healthz')).status).toBe(200);
    expect((await c.raw('GET', '/readyz')).status).toBe(503);
    h.setReady('mesh', true);
    expect((await c.raw('GET', '/readyz')).status).toBe(200);
    const text = (await c.raw('GET', '/metrics')).body;
    expect(text).toContain('weft_mesh_members{state="alive"} 1');
    expect(text).toContain('weft_mesh_members{state="dead"} 1');
    expect(text).toContain('weft_mesh_stat{counter="decryptFailures"} 1');
    expect(text).toContain('weft_datapath_stat{counter="writes"} 9');
    expect(text).toContain('weft_dns_stat{counter="queries"} 11');
    expect(text).toContain('weft_api_requests_total{route="GET /readyz",status="503"} 1');
    expect(text).toContain('weft_process_cpu_user_seconds_total');
    expect(text).toContain('weft_peers{link="connected"} 1');
    expect(text).toContain('weft_peers{link="handshaking"} 1');
    expect(text).toContain('weft_peer_handshake_age_seconds{peer="n2"} 10');
    expect(text).toContain('weft_peer_handshake_age_seconds{peer="n3"} -1');
    expect(text).toContain('weft_peer_bytes{peer="n2",direction="tx"} 6');
  });

  it('two agents in one process keep separate registries', () => {
    const a = createAgentMetrics({}, { processMetrics: false });
    const b = createAgentMetrics({}, { processMetrics: false });
    a.reconciles.inc();
    expect(a.registry).not.toBe(b.registry);
  });
});

describe('status rendering', () => {
  const status: AgentStatus = {
    node: { name: 'n1', backend: 'userspace', publicKey: 'PUB=', meshIP: '10.244.1.1', podCIDRs: ['10.244.1.0/24'], listenPort: 51820, mtu: 1420, ifname: 'weft0', endpoints: ['192.0.2.1:51820'] },
    ready: true,
    mesh: { members: { alive: 3, suspect: 0, dead: 1, left: 0 } },
    datapath: { reconciles: 1, errors: 0, writes: 3, lastDurationMs: 1 },
    peers: [
      { name: 'n2', publicKey: 'K2=', endpoint: '192.0.2.2:51820', allowedIPs: ['10.244.2.0/24', '10.244.2.1/32'], lastHandshake: 1000 - 42, rxBytes: 1536, txBytes: 10, state: 'alive', link: 'connected' },
      { name: 'n3', publicKey: 'K3=', endpoint: undefined, allowedIPs: [], lastHandshake: 0, rxBytes: 0, txBytes: 0, state: 'suspect', link: 'unreachable' },
    ],
    now: 1000,
  };
  it('formats ages and bytes', () => {
    expect(formatAge(0, 100)).toBe('never');
    expect(formatAge(58, 100)).toBe('42s');
    expect(formatAge(100 - 192, 100)).toBe('3m12s');
    expect(formatAge(100 - 7500, 100)).toBe('2h5m');
    expect(formatBytes(10)).toBe('10 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
  });
  it('renders the node block and one row per peer, flagging stale handshakes', () => {
    const out = renderStatus(status, 1000);
    expect(out).toContain('mesh IP:       10.244.1.1');
    expect(out).toContain('mesh members:  3 alive, 1 dead');
    const lines = out.split('\n');
    const header = lines.find((l) => l.startsWith('PEER'))!;
    expect(header).toMatch(/^PEER\s+ENDPOINT\s+ALLOWED IPS\s+HANDSHAKE\s+RX\s+TX\s+LINK\s+MESH$/);
    expect(lines.find((l) => l.startsWith('n2'))).toMatch(/^n2\s+192\.0\.2\.2:51820\s+10\.244\.2\.0\/24,10\.244\.2\.1\/32\s+42s\s+1\.5 KiB\s+10 B\s+connected\s+alive$/);
    expect(lines.find((l) => l.startsWith('n3'))).toMatch(/^n3\s+-\s+-\s+never !\s+0 B\s+0 B\s+unreachable\s+suspect$/);
    expect(peerUnhealthy(status.peers[0]!, 1000)).toBe(false);
    expect(peerUnhealthy(status.peers[0]!, 1000 + 200)).toBe(true);
    expect(renderStatus({ ...status, peers: [] }, 1000)).toContain('no peers');
  });
});

describe('peerLink', () => {
  it.each([
    [{ endpoint: '192.0.2.1:51820', lastHandshake: 900 }, 1000, 'connected'],
    [{ endpoint: '192.0.2.1:51820', lastHandshake: 1000 - 181 }, 1000, 'handshaking'],
    [{ endpoint: '192.0.2.1:51820', lastHandshake: 0 }, 1000, 'handshaking'],
    [{ lastHandshake: 0 }, 1000, 'unreachable'],
    [{ lastHandshake: 995 }, 1000, 'connected'],
  ] as const)('%j at %d -> %s', (p, now, want) => {
    expect(peerLink(p, now)).toBe(want);
  });
});

describe('status detail views', () => {
  it('renders the IPAM view', () => {
    const out = renderIpam({ podCIDRs: ['10.244.1.0/24'], claimedAt: Date.UTC(2026, 0, 1), gateway: '10.244.1.1', allocations: [{ ip: '10.244.1.2', pod: 'web', namespace: 'default', containerId: '0123456789abcdef', ifname: 'eth0', allocatedAt: 1_000_000 }] }, 1_042_000);
    expect(out).toContain('pod CIDR: 10.244.1.0/24  gateway: 10.244.1.1  claimed: 2026-01-01T00:00:00.000Z');
    expect(out.split('\n').find((l) => l.startsWith('10.244.1.2'))).toMatch(/^10\.244\.1\.2\s+web\s+default\s+0123456789ab\s+eth0\s+42s$/);
    expect(renderIpam({ podCIDRs: [], claimedAt: 0, allocations: [] }, 0)).toContain('no pod addresses allocated');
  });
  it('renders the DNS view', () => {
    const out = renderDns({ zone: 'weft.local', ttl: 5, listen: [{ address: '10.244.1.1', port: 53 }, { address: 'fd00::1', port: 5353 }], table: { pods: 3, nodes: 2 }, counters: { responses_noerror: 7, dropped_short: 0 } });
    expect(out).toBe('zone: weft.local  ttl: 5s  listen: 10.244.1.1:53, [fd00::1]:5353\ntable: pods=3 nodes=2\ncounters: responses_noerror=7\n');
  });
});
