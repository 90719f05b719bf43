/**
 * The agent's Kubernetes source against the fake API server, through the real client: the issue's
 * scenarios (podCIDR picked up, a new node becomes a seed, a pod deleted without CNI DEL loses its
 * name, the API server down for minutes of virtual time) and the watch protocol cases (bookmarks,
 * 410 mid-watch, HTTP 410, dropped connections, annotation patch).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';

/** vi.waitFor with a timeout that holds on a loaded 2-core CI machine (polls; never a fixed sleep). */
const waitFor = <T>(fn: () => T | Promise<T>, opts: { timeout?: number } = {}) => vi.waitFor(fn, { timeout: opts.timeout ?? 15_000, interval: 10 });
import { podsToRemove } from '../../src/k8s/pod-gc.ts';
import { ANNOTATION_MESH_IP, ANNOTATION_PUBLIC_KEY } from '../../src/k8s/slim.ts';
import { type KubeSnapshot, KubeSource, clientTransport } from '../../src/k8s/source.ts';
import { KubeConfigError, loadKubeConfig, startKubeSource } from '../../src/k8s/start.ts';
import { FakeApiServer, type KubeObject } from './fake-apiserver.ts';
import { fastClock } from './fast-clock.ts';

const silent = pino({ level: 'silent' });
/** 5 s of real time at the fast clock's scale: a slow list on a loaded machine is not a failure here. */
const LIST_TIMEOUT_MS = 5_000_000;
const PUB = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';

const node = (name: string, ip: string, podCIDRs?: string[], external?: string): KubeObject => ({
  metadata: { name },
  spec: podCIDRs ? { podCIDR: podCIDRs[0], podCIDRs } : {},
  status: {
    addresses: [
      { type: 'Hostname', address: name },
      { type: 'InternalIP', address: ip },
      ...(external ? [{ type: 'ExternalIP', address: external }] : []),
    ],
  },
});
const pod = (namespace: string, name: string, nodeName: string, ip: string, phase = 'Running'): KubeObject => ({
  metadata: { name, namespace },
  spec: { nodeName, containers: [{ name: 'c', image: 'busybox' }] },
  status: { phase, podIP: ip, podIPs: [{ ip }] },
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { goneAs?: 'event' | 'http'; self?: string } = {}) {
  const server = await FakeApiServer.start({ token: 't0k3n', ...(opts.goneAs ? { goneAs: opts.goneAs } : {}) });
  cleanups.push(() => server.close());
  const clock = fastClock(1000);
  const self = opts.self ?? 'node-a';
  const source = new KubeSource(clientTransport(server.kubeConfig(), self, { watchTimeoutSeconds: [300, 600] }), {
    nodeName: self,
    meshPort: 7946,
    logger: silent,
    clock,
    random: () => 0.5,
    listTimeoutMs: LIST_TIMEOUT_MS,
  });
  cleanups.push(() => source.stop());
  const snaps: KubeSnapshot[] = [];
  source.subscribe((s) => snaps.push(s));
  return { server, source, clock, snaps };
}

describe('KubeSource against the fake API server', () => {
  it('picks up the podCIDR and endpoints of its own Node, also when assigned later', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', undefined, '198.18.0.1'));
    source.start();
    await waitFor(() => expect(source.snapshot().synced && source.snapshot().connected).toBe(true));
    expect(source.snapshot().podCIDRs).toEqual([]);
    expect(source.snapshot().endpointIPs).toEqual(['192.0.2.1', '198.18.0.1']);
    // The node IPAM controller assigns the block after the node registered.
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.3.0/24', 'fd00:10:244:3::/64'], '198.18.0.1'));
    await waitFor(() => expect(source.snapshot().podCIDRs).toEqual(['10.244.3.0/24', 'fd00:10:244:3::/64']));
    expect(source.snapshot().self?.name).toBe('node-a');
  });

  it('turns the other nodes into seeds with the mesh port, and follows adds and deletes', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.1.0/24']));
    server.upsertNode(node('node-b', '192.0.2.2', ['10.244.2.0/24']));
    source.start();
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946']));
    server.upsertNode(node('node-c', '2001:db8::3'));
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946', '[2001:db8::3]:7946']));
    server.deleteNode('node-b');
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['[2001:db8::3]:7946']));
    // Watches asked for bookmarks and resumed from the list's resourceVersion.
    const watches = server.requests.filter((r) => r.query.watch === 'true');
    expect(watches.every((r) => r.query.allowWatchBookmarks === 'true')).toBe(true);
    expect(watches.find((r) => r.path === '/api/v1/nodes')?.query.resourceVersion).toMatch(/^\d+$/);
  });

  it('watches only the pods scheduled to its node, slimmed', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.1.0/24']));
    server.upsertPod(pod('default', 'web-0', 'node-a', '10.244.1.2'));
    server.upsertPod(pod('default', 'elsewhere', 'node-b', '10.244.2.2'));
    source.start();
    await waitFor(() => expect(source.snapshot().pods.map((p) => p.name)).toEqual(['web-0']));
    expect(source.snapshot().pods[0]).toMatchObject({ name: 'web-0', namespace: 'default', ips: ['10.244.1.2'], phase: 'Running', deleted: false });
    expect(source.snapshot().pods[0]!.uid).not.toBe('');
    await waitFor(() => {
      const podWatch = server.requests.find((r) => r.path === '/api/v1/pods' && r.query.watch === 'true');
      expect(podWatch?.query.fieldSelector).toBe('spec.nodeName=node-a');
    });
    const podList = server.requests.find((r) => r.path === '/api/v1/pods' && r.query.watch === undefined);
    expect(podList?.query.fieldSelector).toBe('spec.nodeName=node-a');
  });

  it('a pod deleted without a CNI DEL is decided for removal from DNS', async () => {
    const { server, source, clock } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.1.0/24']));
    const web = server.upsertPod(pod('default', 'web-0', 'node-a', '10.244.1.2'));
    server.upsertPod(pod('default', 'db-0', 'node-a', '10.244.1.3'));
    source.start();
    await waitFor(() => expect(source.snapshot().pods).toHaveLength(2));
    const addedAt = clock.now() - 60_000;
    const cni = [
      { namespace: 'default', name: 'web-0', uid: web.metadata.uid, addedAt },
      { namespace: 'default', name: 'db-0', addedAt },
    ];
    expect(podsToRemove(cni, source.snapshot(), clock.now())).toEqual([]);
    server.deletePod('default', 'web-0'); // the kubelet never ran CNI DEL
    await waitFor(() => expect(source.snapshot().pods).toHaveLength(1));
    expect(podsToRemove(cni, source.snapshot(), clock.now())).toEqual([{ pod: cni[0], reason: 'not-found' }]);
  });

  it('follows a 410 ERROR event mid-watch by relisting, seeing changes only a relist can show', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1'));
    server.upsertNode(node('node-b', '192.0.2.2'));
    source.start();
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946']));
    await waitFor(() => expect(server.watchCount).toBe(2));
    const listsBefore = server.requests.filter((r) => r.path === '/api/v1/nodes' && r.query.watch === undefined).length;
    server.expireWatches();
    server.deleteNode('node-b');
    server.upsertNode(node('node-c', '192.0.2.3'));
    server.compact();
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.3:7946']));
    expect(source.stats().nodes.gone).toBeGreaterThanOrEqual(1);
    const listsAfter = server.requests.filter((r) => r.path === '/api/v1/nodes' && r.query.watch === undefined).length;
    expect(listsAfter).toBeGreaterThan(listsBefore);
    await waitFor(() => expect(source.snapshot().connected).toBe(true));
  });

  it('relists after an HTTP 410 on a resumed watch', async () => {
    const { server, source } = await setup({ goneAs: 'http' });
    server.upsertNode(node('node-a', '192.0.2.1'));
    source.start();
    await waitFor(() => expect(server.watchCount).toBe(2));
    server.upsertNode(node('node-b', '192.0.2.2'));
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946']));
    // While the source is cut off, node-c appears and the history is compacted past the source's
    // RV: its resumed watch gets an HTTP 410 and only a relist can show node-c.
    await server.down();
    server.upsertNode(node('node-c', '192.0.2.3'));
    server.compact();
    await server.up();
    await waitFor(() => expect(source.stats().nodes.gone).toBeGreaterThanOrEqual(1));
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946', '192.0.2.3:7946']));
    expect(server.requests.some((r) => r.status === 410)).toBe(true);
  });

  it('reconnects after a dropped connection from the last RV, including a bookmarked one', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1'));
    source.start();
    await waitFor(() => expect(server.watchCount).toBe(2));
    server.upsertPod(pod('default', 'x', 'node-z', '10.244.9.9')); // advances the RV, no node event
    server.bookmark();
    const bookmarkRV = server.resourceVersion;
    await waitFor(() => expect(source.stats().nodes.bookmarks).toBe(1));
    const watchesBefore = source.stats().nodes.watches;
    server.dropConnections();
    await waitFor(() => expect(source.stats().nodes.watches).toBeGreaterThan(watchesBefore));
    await waitFor(() => {
      const resumed = server.requests.filter((r) => r.path === '/api/v1/nodes' && r.query.watch === 'true').at(-1);
      expect(resumed?.query.resourceVersion).toBe(bookmarkRV);
    });
    server.upsertNode(node('node-b', '192.0.2.2'));
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946']));
    expect(source.stats().nodes.gone).toBe(0);
  });

  it('keeps its last state while the API server is down for minutes, then recovers', async () => {
    const { server, source, clock, snaps } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.1.0/24']));
    server.upsertNode(node('node-b', '192.0.2.2', ['10.244.2.0/24']));
    server.upsertPod(pod('default', 'web-0', 'node-a', '10.244.1.2'));
    source.start();
    await waitFor(() => expect(source.snapshot().connected).toBe(true));
    await waitFor(() => expect(source.snapshot().pods).toHaveLength(1));
    const before = source.snapshot();

    const downAt = clock.now();
    await server.down();
    await waitFor(() => expect(source.snapshot().connected).toBe(false));
    // Stay down for at least three virtual minutes and several reconnect attempts (on a loaded
    // machine each refused attempt itself takes virtual time, so wait for both).
    await waitFor(() => {
      expect(clock.now() - downAt).toBeGreaterThan(180_000);
      const st = source.stats();
      expect(st.nodes.listErrors + st.nodes.watchErrors).toBeGreaterThan(3);
    });
    const during = source.snapshot();
    expect(during.synced).toBe(true);
    expect(during.podCIDRs).toEqual(before.podCIDRs);
    expect(during.seeds).toEqual(before.seeds);
    expect(during.pods).toEqual(before.pods);
    // While disconnected the DNS clean-up decides nothing (its view may be stale).
    expect(podsToRemove([{ namespace: 'default', name: 'new-pod', addedAt: 0 }], during, clock.now())).toEqual([]);
    // It retried with backoff, bounded by the policy's maximum, not in a tight loop.
    const stats = source.stats();
    const attempts = stats.nodes.listErrors + stats.nodes.watchErrors;
    expect(attempts).toBeGreaterThan(3);
    expect(attempts).toBeLessThan(100);
    const backoffs = clock.delays.filter((d) => d !== LIST_TIMEOUT_MS);
    expect(backoffs.length).toBeGreaterThan(3);
    expect(Math.max(...backoffs)).toBeLessThanOrEqual(30_000);

    // Changes made while it was away (the control plane was up for others) show after recovery.
    server.upsertNode(node('node-c', '192.0.2.3'));
    server.deletePod('default', 'web-0');
    await server.up();
    await waitFor(() => expect(source.snapshot().connected).toBe(true));
    await waitFor(() => expect(source.snapshot().seeds).toEqual(['192.0.2.2:7946', '192.0.2.3:7946']));
    await waitFor(() => expect(source.snapshot().pods).toEqual([]));
    // Snapshots came in order.
    const versions = snaps.map((s) => s.version);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
  });

  it('annotates its Node, retrying while the API server is down, and re-applies if removed', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.1.0/24']));
    await server.down();
    source.start();
    source.setNodeAnnotations({ publicKey: PUB, meshIP: '10.244.1.1' });
    await server.up();
    await waitFor(() =>
      expect(server.getNode('node-a')?.metadata.annotations).toEqual({ [ANNOTATION_PUBLIC_KEY]: PUB, [ANNOTATION_MESH_IP]: '10.244.1.1' }),
    );
    await waitFor(() => expect(source.snapshot().self?.meshIP).toBe('10.244.1.1'));
    const patches = () => server.requests.filter((r) => r.method === 'PATCH');
    expect(patches().every((r) => r.contentType === 'application/merge-patch+json')).toBe(true);
    const n = patches().length;
    // Someone strips the annotations: level-triggered, the source puts them back.
    const stripped = server.getNode('node-a')!;
    stripped.metadata.annotations = {};
    server.upsertNode(stripped);
    await waitFor(() => expect((server.getNode('node-a')?.metadata.annotations as Record<string, string> | undefined)?.[ANNOTATION_MESH_IP]).toBe('10.244.1.1'));
    expect(patches().length).toBe(n + 1);
    expect(() => source.setNodeAnnotations({ publicKey: 'not a key', meshIP: '10.244.1.1' })).toThrow(/k8s: annotate node-a/);
  });

  it('delivers coalesced, ordered snapshots and survives a throwing listener', async () => {
    const { server, source, snaps } = await setup();
    for (let i = 0; i < 50; i++) server.upsertNode(node(`node-${i}`, `192.0.2.${i + 10}`));
    const bad = vi.fn(() => {
      throw new Error('listener bug');
    });
    source.subscribe(bad);
    source.start();
    await waitFor(() => expect(source.snapshot().nodes).toHaveLength(50));
    // The 50-node list arrived as one snapshot, not fifty.
    expect(snaps.filter((s) => s.nodes.length > 0 && s.nodes.length < 50)).toEqual([]);
    expect(bad).toHaveBeenCalled();
    expect(source.stats().listenerErrors).toBeGreaterThan(0);
    expect(Object.isFrozen(source.snapshot())).toBe(true);
  });
});

describe('KubeSource against a hanging API server', () => {
  it('bounds a list that never answers, retries, and syncs once the server answers again', async () => {
    const server = await FakeApiServer.start();
    cleanups.push(() => server.close());
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.5.0/24']));
    server.hang(true);
    const clock = fastClock(1000);
    const source = new KubeSource(clientTransport(server.kubeConfig(), 'node-a'), {
      nodeName: 'node-a',
      meshPort: 7946,
      logger: silent,
      clock,
      random: () => 0.5,
      listTimeoutMs: 50_000, // 50 ms real
    });
    cleanups.push(() => source.stop());
    source.start();
    await waitFor(() => expect(source.stats().nodes.listErrors).toBeGreaterThanOrEqual(2));
    expect(source.snapshot().synced).toBe(false);
    server.hang(false);
    await waitFor(() => expect(source.snapshot().podCIDRs).toEqual(['10.244.5.0/24']));
  });

  it('stops promptly while a list is hung', async () => {
    const server = await FakeApiServer.start();
    cleanups.push(() => server.close());
    server.hang(true);
    const source = new KubeSource(clientTransport(server.kubeConfig(), 'node-a'), { nodeName: 'node-a', meshPort: 7946, logger: silent });
    source.start(); // system clock, 30 s list timeout
    await waitFor(() => expect(server.requests.length + (source.stats().nodes.lists > 0 ? 1 : 0)).toBeGreaterThan(0));
    await source.stop(); // would take 30 s if stop waited for the list timeout
    expect(source.stats().nodes.listErrors).toBe(0);
    expect(source.snapshot().connected).toBe(false);
  });
});

describe('KubeSource.waitForSync', () => {
  it('resolves with the first synced snapshot', async () => {
    const { server, source } = await setup();
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.4.0/24']));
    server.upsertNode(node('node-b', '192.0.2.2'));
    source.start();
    const snap = await source.waitForSync(60_000_000); // a minute of real time at this clock's scale
    expect(snap.synced).toBe(true);
    expect(snap.podCIDRs).toEqual(['10.244.4.0/24']);
    expect(snap.seeds).toEqual(['192.0.2.2:7946']);
    // Already synced: resolves at once.
    expect((await source.waitForSync(1)).version).toBeGreaterThanOrEqual(snap.version);
  });

  it('gives up after the timeout on its clock when the API server is unreachable', async () => {
    const { server, source } = await setup();
    await server.down();
    source.start();
    const snap = await source.waitForSync(10_000); // 10 virtual seconds
    expect(snap.synced).toBe(false);
    expect(snap.connected).toBe(false);
    expect(snap.seeds).toEqual([]);
  });
});

describe('startKubeSource / loadKubeConfig', () => {
  it('returns undefined outside a cluster without --kubeconfig', () => {
    expect(loadKubeConfig(undefined, {})).toBeUndefined();
    expect(startKubeSource({ name: 'n', meshPort: 7946, kubeconfig: undefined }, silent, { env: {} })).toBeUndefined();
  });

  it('fails clearly on an unreadable kubeconfig', () => {
    expect(() => loadKubeConfig('/nonexistent/kubeconfig', {})).toThrow(KubeConfigError);
    expect(() => loadKubeConfig('/nonexistent/kubeconfig', {})).toThrow(/^k8s: load \/nonexistent\/kubeconfig/);
  });

  it('starts from a --kubeconfig file and syncs against the server', async () => {
    const server = await FakeApiServer.start();
    cleanups.push(() => server.close());
    server.upsertNode(node('node-a', '192.0.2.1', ['10.244.7.0/24']));
    const dir = mkdtempSync(join(tmpdir(), 'weft-k8s-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'kubeconfig');
    writeFileSync(file, server.kubeconfigText(), { mode: 0o600 });
    const source = startKubeSource({ name: 'node-a', meshPort: 7946, kubeconfig: file }, silent, { env: {} });
    expect(source).toBeDefined();
    cleanups.push(() => source!.stop());
    await waitFor(() => expect(source!.snapshot().podCIDRs).toEqual(['10.244.7.0/24']));
  });
});
