/**
 * Protocol tests of the fake API server, driven through the real `@kubernetes/client-node` (typed
 * API calls, its Watch and its own ListWatch informer) with a generated kubeconfig, so that what the
 * weft source is tested against behaves like a kube-apiserver on the wire.
 */
import { ApiException, CoreV1Api, PatchStrategy, Watch, makeInformer, setHeaderOptions, type V1Node } from '@kubernetes/client-node';
import { afterEach, describe, expect, it, vi } from 'vitest';

/** vi.waitFor with a timeout that holds on a loaded 2-core CI machine (polls; never a fixed sleep). */
const waitFor = <T>(fn: () => T | Promise<T>, opts: { timeout?: number } = {}) => vi.waitFor(fn, { timeout: opts.timeout ?? 15_000, interval: 10 });
import { FakeApiServer, type KubeObject } from './fake-apiserver.ts';

const node = (name: string, extra: Partial<KubeObject> = {}): KubeObject => ({
  metadata: { name },
  spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] },
  status: { addresses: [{ type: 'InternalIP', address: '192.0.2.10' }] },
  ...extra,
});
const pod = (namespace: string, name: string, nodeName: string): KubeObject => ({
  metadata: { name, namespace },
  spec: { nodeName, containers: [{ name: 'c', image: 'busybox' }] },
  status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }] },
});

interface Collected {
  events: { type: string; object: any }[];
  done: boolean;
  err: unknown;
  controller: AbortController;
}

async function collect(server: FakeApiServer, path: string, params: Record<string, string | number | boolean | undefined>): Promise<Collected> {
  const c: Partial<Collected> & { events: Collected['events']; done: boolean } = { events: [], done: false };
  const w = new Watch(server.kubeConfig());
  c.controller = await w.watch(
    path,
    params,
    (type: string, object: unknown) => c.events.push({ type, object }),
    (err: unknown) => {
      c.done = true;
      c.err = err;
    },
  );
  return c as Collected;
}

let servers: FakeApiServer[] = [];
async function start(opts?: Parameters<typeof FakeApiServer.start>[0]): Promise<FakeApiServer> {
  const s = await FakeApiServer.start(opts);
  servers.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

describe('fake API server through @kubernetes/client-node', () => {
  it('lists with a resourceVersion, then a watch from it gets only later events', async () => {
    const s = await start();
    s.upsertNode(node('a'));
    s.upsertNode(node('b'));
    const api = s.kubeConfig().makeApiClient(CoreV1Api);
    const list = await api.listNode();
    expect(list.items.map((n) => n.metadata?.name).sort()).toEqual(['a', 'b']);
    const rv = list.metadata?.resourceVersion;
    expect(rv).toBe(s.resourceVersion);
    expect(list.items[0]?.spec?.podCIDRs).toEqual(['10.244.1.0/24']);

    const w = await collect(s, '/api/v1/nodes', { resourceVersion: rv });
    s.upsertNode(node('c'));
    s.upsertNode(node('a', { metadata: { name: 'a', labels: { x: 'y' } } }));
    s.deleteNode('b');
    await waitFor(() => expect(w.events).toHaveLength(3));
    expect(w.events.map((e) => [e.type, e.object.metadata.name])).toEqual([
      ['ADDED', 'c'],
      ['MODIFIED', 'a'],
      ['DELETED', 'b'],
    ]);
    // resourceVersions on events increase and resume exactly: a watch from the 2nd event's RV sees only the 3rd.
    const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs).toEqual([...rvs].sort((x, y) => x - y));
    const w2 = await collect(s, '/api/v1/nodes', { resourceVersion: w.events[1]!.object.metadata.resourceVersion });
    await waitFor(() => expect(w2.events).toHaveLength(1));
    expect(w2.events[0]).toMatchObject({ type: 'DELETED', object: { metadata: { name: 'b' } } });
    w.controller.abort();
    w2.controller.abort();
  });

  it('a watch without a resourceVersion starts with ADDED for every current object', async () => {
    const s = await start();
    s.upsertNode(node('a'));
    s.upsertNode(node('b'));
    const w = await collect(s, '/api/v1/nodes', {});
    await waitFor(() => expect(w.events).toHaveLength(2));
    expect(w.events.every((e) => e.type === 'ADDED')).toBe(true);
    w.controller.abort();
  });

  it('sends BOOKMARK events with the current RV only to watches that allow them', async () => {
    const s = await start();
    s.upsertNode(node('a'));
    const rv = s.resourceVersion;
    const withBm = await collect(s, '/api/v1/nodes', { resourceVersion: rv, allowWatchBookmarks: true });
    const without = await collect(s, '/api/v1/nodes', { resourceVersion: rv });
    s.upsertPod(pod('default', 'p', 'a')); // advances the global RV without a node event
    s.bookmark();
    await waitFor(() => expect(withBm.events).toHaveLength(1));
    expect(withBm.events[0]).toMatchObject({ type: 'BOOKMARK', object: { kind: 'Node', metadata: { resourceVersion: s.resourceVersion } } });
    s.upsertNode(node('z'));
    await waitFor(() => expect(without.events).toHaveLength(1));
    expect(without.events[0]!.type).toBe('ADDED');
    withBm.controller.abort();
    without.controller.abort();
  });

  it('filters pods by spec.nodeName in lists and translates selector transitions in watches', async () => {
    const s = await start();
    s.upsertPod(pod('default', 'p1', 'a'));
    s.upsertPod(pod('kube-system', 'p2', 'a'));
    s.upsertPod(pod('default', 'p3', 'b'));
    const api = s.kubeConfig().makeApiClient(CoreV1Api);
    const list = await api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=a' });
    expect(list.items.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`).sort()).toEqual(['default/p1', 'kube-system/p2']);
    const nsList = await api.listNamespacedPod({ namespace: 'kube-system', fieldSelector: 'spec.nodeName=a' });
    expect(nsList.items.map((p) => p.metadata?.name)).toEqual(['p2']);

    const w = await collect(s, '/api/v1/pods', { resourceVersion: list.metadata?.resourceVersion, fieldSelector: 'spec.nodeName=a' });
    s.upsertPod(pod('default', 'p3', 'a')); // moves onto a: ADDED
    s.upsertPod(pod('default', 'p1', 'b')); // moves away: DELETED
    s.upsertPod(pod('default', 'p4', 'c')); // never matches: nothing
    s.deletePod('kube-system', 'p2');
    await waitFor(() => expect(w.events).toHaveLength(3));
    expect(w.events.map((e) => [e.type, e.object.metadata.name])).toEqual([
      ['ADDED', 'p3'],
      ['DELETED', 'p1'],
      ['DELETED', 'p2'],
    ]);
    w.controller.abort();
  });

  it('rejects an unsupported field selector with 400', async () => {
    const s = await start();
    const api = s.kubeConfig().makeApiClient(CoreV1Api);
    const err = await api.listNode({ fieldSelector: 'spec.unschedulable=true' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiException);
    expect((err as ApiException<unknown>).code).toBe(400);
  });

  it('answers a watch from a compacted RV with an ERROR event carrying 410, then closes', async () => {
    const s = await start();
    s.upsertNode(node('a'));
    const old = s.resourceVersion;
    s.upsertNode(node('b'));
    s.compact();
    const w = await collect(s, '/api/v1/nodes', { resourceVersion: old });
    await waitFor(() => expect(w.done).toBe(true));
    expect(w.events).toHaveLength(1);
    expect(w.events[0]).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410 } });
  });

  it('can answer a too-old RV with HTTP 410 instead', async () => {
    const s = await start({ goneAs: 'http' });
    s.upsertNode(node('a'));
    const old = s.resourceVersion;
    s.upsertNode(node('b'));
    s.compact();
    const w = await collect(s, '/api/v1/nodes', { resourceVersion: old });
    expect(w.done).toBe(true);
    expect((w.err as { statusCode?: number }).statusCode).toBe(410);
  });

  it('expires open watches mid-stream with a 410 ERROR event', async () => {
    const s = await start();
    s.upsertNode(node('a'));
    const w = await collect(s, '/api/v1/nodes', { resourceVersion: s.resourceVersion });
    s.upsertNode(node('b'));
    await waitFor(() => expect(w.events).toHaveLength(1));
    s.expireWatches();
    await waitFor(() => expect(w.done).toBe(true));
    expect(w.events[1]).toMatchObject({ type: 'ERROR', object: { code: 410 } });
    expect(s.watchCount).toBe(0);
  });

  it('drops connections: the client sees its watch end', async () => {
    const s = await start();
    const w = await collect(s, '/api/v1/nodes', { resourceVersion: s.resourceVersion });
    await waitFor(() => expect(s.watchCount).toBe(1));
    s.dropConnections();
    await waitFor(() => expect(w.done).toBe(true));
  });

  it('ends a watch after timeoutSeconds', async () => {
    const s = await start();
    const w = await collect(s, '/api/v1/nodes', { resourceVersion: s.resourceVersion, timeoutSeconds: 1 });
    await waitFor(() => expect(w.done).toBe(true));
    expect(w.err).toBeNull();
  });

  it('patches node annotations with a merge patch (set and remove) and emits MODIFIED', async () => {
    const s = await start();
    s.upsertNode(node('a', { metadata: { name: 'a', annotations: { keep: 'me', drop: 'me' } } }));
    const kc = s.kubeConfig();
    const api = kc.makeApiClient(CoreV1Api);
    const w = await collect(s, '/api/v1/nodes', { resourceVersion: s.resourceVersion });
    const patched: V1Node = await api.patchNode(
      { name: 'a', body: { metadata: { annotations: { 'weft.dev/mesh-ip': '10.244.1.1', drop: null } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(patched.metadata?.annotations).toEqual({ keep: 'me', 'weft.dev/mesh-ip': '10.244.1.1' });
    expect(s.getNode('a')?.metadata.annotations).toEqual({ keep: 'me', 'weft.dev/mesh-ip': '10.244.1.1' });
    await waitFor(() => expect(w.events).toHaveLength(1));
    expect(w.events[0]).toMatchObject({ type: 'MODIFIED', object: { metadata: { annotations: { 'weft.dev/mesh-ip': '10.244.1.1' } } } });
    const req = s.requests.find((r) => r.method === 'PATCH');
    expect(req?.contentType).toBe('application/merge-patch+json');

    await api.patchNode(
      { name: 'a', body: { metadata: { annotations: { x: '1' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    expect(s.getNode('a')?.metadata.annotations).toMatchObject({ x: '1', keep: 'me' });
    const missing = await api
      .patchNode({ name: 'nope', body: {} }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
      .catch((e: unknown) => e);
    expect((missing as ApiException<unknown>).code).toBe(404);
    w.controller.abort();
  });

  it('requires the bearer token when one is configured', async () => {
    const s = await start({ token: 'sekret' });
    const ok = await s.kubeConfig().makeApiClient(CoreV1Api).listNode();
    expect(ok.items).toEqual([]);
    const kc = s.kubeConfig();
    kc.loadFromString(s.kubeconfigText().replace('sekret', 'wrong'));
    const err = await kc.makeApiClient(CoreV1Api).listNode().catch((e: unknown) => e);
    expect((err as ApiException<unknown>).code).toBe(401);
  });

  it('goes down (connection refused) and comes back on the same port with its state', async () => {
    const s = await start();
    s.upsertNode(node('a'));
    const api = s.kubeConfig().makeApiClient(CoreV1Api);
    const port = s.port;
    await s.down();
    await expect(api.listNode()).rejects.toThrow();
    await s.up();
    expect(s.port).toBe(port);
    const list = await api.listNode();
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['a']);
  });

  it("drives the client library's own ListWatch informer through a 410 to a relist", async () => {
    const s = await start();
    s.upsertNode(node('a'));
    const kc = s.kubeConfig();
    const api = kc.makeApiClient(CoreV1Api);
    const informer = makeInformer(kc, '/api/v1/nodes', () => api.listNode());
    const added: string[] = [];
    const deleted: string[] = [];
    informer.on('add', (n) => added.push(n.metadata?.name ?? ''));
    informer.on('delete', (n) => deleted.push(n.metadata?.name ?? ''));
    await informer.start();
    try {
      await waitFor(() => expect(added).toEqual(['a']));
      await waitFor(() => expect(s.watchCount).toBe(1));
      // While the watch is expired, b appears and a disappears; only a relist can tell.
      s.expireWatches();
      s.upsertNode(node('b'));
      s.deleteNode('a');
      s.compact();
      await waitFor(() => expect(informer.list().map((n) => n.metadata?.name)).toEqual(['b']));
      expect(deleted).toEqual(['a']);
      const lists = s.requests.filter((r) => r.path === '/api/v1/nodes' && r.query.watch === undefined);
      expect(lists.length).toBeGreaterThanOrEqual(2);
    } finally {
      await informer.stop();
    }
  });
});
