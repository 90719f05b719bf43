/**
 * Pure parts of the Kubernetes integration: slimming hostile objects, the backoff policy and the
 * DNS clean-up decision, with tables and fast-check properties.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../src/k8s/clock.ts';
import { kubeInputs } from '../../src/k8s/inputs.ts';
import { type CniPod, type KubePodView, cniPodsFromAllocations, podsToRemove } from '../../src/k8s/pod-gc.ts';
import type { KubeSnapshot } from '../../src/k8s/source.ts';
import { type KubePod, canonicalCIDR, canonicalIP, hostPort, slimNode, slimPod } from '../../src/k8s/slim.ts';

describe('slimNode', () => {
  it('takes podCIDRs (or the legacy podCIDR) and Internal/External IPs, validated and canonical', () => {
    const r = slimNode({
      metadata: { name: 'n1', uid: 'u1', annotations: { 'weft.dev/mesh-ip': '10.244.1.1', other: 'x' } },
      spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'FD00:10:244:1::/64'] },
      status: {
        addresses: [
          { type: 'Hostname', address: 'n1' },
          { type: 'InternalIP', address: '192.0.2.1' },
          { type: 'InternalIP', address: '2001:DB8::1' },
          { type: 'ExternalIP', address: '198.18.0.1' },
          { type: 'InternalIP', address: 'not-an-ip' },
        ],
      },
    });
    expect(r).toEqual({
      ok: true,
      dropped: 1,
      value: {
        name: 'n1',
        uid: 'u1',
        podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
        internalIPs: ['192.0.2.1', '2001:db8::1'],
        externalIPs: ['198.18.0.1'],
        meshIP: '10.244.1.1',
      },
    });
    expect(slimNode({ metadata: { name: 'n2' }, spec: { podCIDR: '10.244.2.0/24' } })).toMatchObject({ ok: true, value: { podCIDRs: ['10.244.2.0/24'] } });
  });

  it.each([
    [null],
    [{}],
    [{ metadata: { name: '' } }],
    [{ metadata: { name: 'UPPER' } }],
    [{ metadata: { name: 'x'.repeat(300) } }],
    [{ metadata: { name: 42 } }],
  ])('rejects a node without a valid name: %j', (obj) => {
    expect(slimNode(obj).ok).toBe(false);
  });

  it('drops CIDRs with host bits set and caps list sizes', () => {
    const many = Array.from({ length: 100 }, (_, i) => ({ type: 'InternalIP', address: `192.0.2.${i}` }));
    const r = slimNode({ metadata: { name: 'n' }, spec: { podCIDRs: ['10.244.1.1/24', '10.244.2.0/33'] }, status: { addresses: many } });
    expect(r.ok && r.value.podCIDRs).toEqual([]);
    expect(r.ok && r.value.internalIPs.length).toBe(16);
  });

  it('never throws on arbitrary input', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        slimNode(v);
        slimNode({ metadata: { name: 'n' }, spec: v, status: v });
        slimNode({ metadata: { name: 'n' }, spec: { podCIDRs: [v] }, status: { addresses: [v, { type: 'InternalIP', address: v }] } });
      }),
    );
  });
});

describe('slimPod', () => {
  it('slims to name, namespace, uid, ips, phase, deleted', () => {
    expect(
      slimPod({
        metadata: { name: 'web-0', namespace: 'default', uid: 'u', deletionTimestamp: new Date(0) },
        spec: { nodeName: 'n1' },
        status: { phase: 'Running', podIP: '10.244.1.2', podIPs: [{ ip: '10.244.1.2' }, { ip: 'fd00::2' }] },
      }),
    ).toEqual({ ok: true, dropped: 0, value: { name: 'web-0', namespace: 'default', uid: 'u', ips: ['10.244.1.2', 'fd00::2'], phase: 'Running', deleted: true } });
    expect(slimPod({ metadata: { name: 'p', namespace: 'ns' }, status: { phase: 'Weird' } })).toMatchObject({
      ok: true,
      value: { phase: 'Unknown', ips: [], deleted: false, uid: '' },
    });
    expect(slimPod({ metadata: { name: 'p' } }).ok).toBe(false);
  });

  it('never throws on arbitrary input', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        slimPod(v);
        slimPod({ metadata: { name: 'p', namespace: 'n', deletionTimestamp: v }, status: v });
        slimPod({ metadata: { name: 'p', namespace: 'n' }, status: { podIPs: [v, { ip: v }] } });
      }),
    );
  });
});

describe('address helpers', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1'],
    ['2001:DB8:0:0::1', '2001:db8::1'],
    ['10.0.0.256', undefined],
    ['', undefined],
    [7, undefined],
  ])('canonicalIP(%j) = %j', (i, o) => expect(canonicalIP(i)).toBe(o));

  it.each([
    ['10.244.0.0/16', '10.244.0.0/16'],
    ['10.244.1.0/24', '10.244.1.0/24'],
    ['10.244.1.1/24', undefined],
    ['10.244.1.0/33', undefined],
    ['fd00::/64', 'fd00::/64'],
    ['10.244.1.0', undefined],
    ['10.244.1.0/-1', undefined],
  ])('canonicalCIDR(%j) = %j', (i, o) => expect(canonicalCIDR(i)).toBe(o));

  it('brackets IPv6 in host:port', () => {
    expect(hostPort('192.0.2.1', 7946)).toBe('192.0.2.1:7946');
    expect(hostPort('2001:db8::1', 7946)).toBe('[2001:db8::1]:7946');
  });
});

describe('backoffDelay', () => {
  it('doubles from the initial delay up to the cap, with jitter in [cap/2, cap]', () => {
    const p = { initialMs: 500, maxMs: 30_000 };
    expect([0, 1, 2, 3, 10].map((a) => backoffDelay(p, a, () => 0.999999))).toEqual([500, 1000, 2000, 4000, 30_000]);
    expect(backoffDelay(p, 0, () => 0)).toBe(250);
    fc.assert(
      fc.property(fc.nat(1000), fc.double({ min: 0, max: 1, noNaN: true }), (attempt, r) => {
        const d = backoffDelay(p, attempt, () => r);
        const cap = Math.min(p.maxMs, p.initialMs * 2 ** Math.min(attempt, 30));
        return d >= Math.floor(cap / 2) && d <= cap;
      }),
    );
  });
});

describe('podsToRemove', () => {
  const NOW = 1_000_000;
  const kpod = (name: string, uid: string, phase = 'Running', deleted = false): KubePod => ({ name, namespace: 'default', uid, ips: [], phase, deleted });
  const cpod = (name: string, uid?: string, addedAt = 0): CniPod => ({ namespace: 'default', name, addedAt, ...(uid ? { uid } : {}) });
  const view = (pods: KubePod[], connected = true, synced = true, podsFreshAt: number | undefined = NOW): KubePodView => ({
    connected,
    synced,
    pods,
    podsFreshAt,
  });

  it.each([
    ['present and running: keep', [cpod('a', 'u1')], [kpod('a', 'u1')], []],
    ['gone without CNI DEL: remove', [cpod('a', 'u1')], [], [['a', 'not-found']]],
    ['recreated with a new uid: remove the old record', [cpod('a', 'u1')], [kpod('a', 'u2')], [['a', 'uid-mismatch']]],
    ['no uid in the CNI record: name match is enough', [cpod('a')], [kpod('a', 'u2')], []],
    ['completed: remove', [cpod('a', 'u1')], [kpod('a', 'u1', 'Succeeded')], [['a', 'terminal']]],
    ['failed: remove', [cpod('a', 'u1')], [kpod('a', 'u1', 'Failed')], [['a', 'terminal']]],
    ['terminating: keep during its grace period', [cpod('a', 'u1')], [kpod('a', 'u1', 'Running', true)], []],
    ['young CNI record: keep (informer may lag)', [cpod('a', 'u1', NOW - 1000)], [], []],
  ] as const)('%s', (_name, cni, pods, want) => {
    const got = podsToRemove(cni, view([...pods]), NOW).map((r) => [r.pod.name, r.reason]);
    expect(got).toEqual(want);
  });

  it('waits until the informer has heard from the server long enough after the CNI ADD', () => {
    const gone = [cpod('a', 'u1', NOW - 100_000)];
    // Frozen by a silent partition: last heard before the pod was even added.
    expect(podsToRemove(gone, view([], true, true, NOW - 200_000), NOW)).toEqual([]);
    // Heard after the ADD, but not by the grace margin yet.
    expect(podsToRemove(gone, view([], true, true, NOW - 100_000 + 29_999), NOW)).toEqual([]);
    expect(podsToRemove(gone, view([], true, true, NOW - 100_000 + 30_000), NOW)).toEqual([{ pod: gone[0], reason: 'not-found' }]);
    expect(podsToRemove(gone, { connected: true, synced: true, pods: [], podsFreshAt: undefined }, NOW)).toEqual([]);
  });

  it('decides nothing from a stale or unsynced view, whatever the input', () => {
    const arbPod = fc.record({ namespace: fc.constantFrom('a', 'b'), name: fc.constantFrom('x', 'y', 'z'), addedAt: fc.nat(NOW) });
    fc.assert(
      fc.property(fc.array(arbPod), fc.boolean(), (cni, connected) => {
        expect(podsToRemove(cni, view([], connected, false), NOW)).toEqual([]);
        expect(podsToRemove(cni, view([], false, true), NOW)).toEqual([]);
      }),
    );
  });

  it('only ever removes CNI pods that are absent, another incarnation or finished, and old enough', () => {
    const arbK = fc.record({
      name: fc.constantFrom('x', 'y', 'z'),
      namespace: fc.constant('default'),
      uid: fc.constantFrom('u1', 'u2'),
      ips: fc.constant([] as string[]),
      phase: fc.constantFrom('Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'),
      deleted: fc.boolean(),
    });
    const arbC = fc.record({ namespace: fc.constant('default'), name: fc.constantFrom('x', 'y', 'z', 'w'), uid: fc.constantFrom('u1', 'u2'), addedAt: fc.nat(NOW) });
    fc.assert(
      fc.property(fc.array(arbC, { maxLength: 6 }), fc.uniqueArray(arbK, { selector: (p) => p.name }), fc.nat(NOW), (cni, pods, fresh) => {
        const out = podsToRemove(cni, view(pods, true, true, fresh), NOW, 30_000);
        for (const { pod, reason } of out) {
          expect(NOW - pod.addedAt).toBeGreaterThanOrEqual(30_000);
          expect(fresh - pod.addedAt).toBeGreaterThanOrEqual(30_000);
          const k = pods.find((p) => p.name === pod.name);
          if (reason === 'not-found') expect(k).toBeUndefined();
          if (reason === 'uid-mismatch') expect(k?.uid).not.toBe(pod.uid);
          if (reason === 'terminal') expect(['Succeeded', 'Failed']).toContain(k?.phase);
        }
        // Every old, absent pod is removed.
        for (const c of cni) {
          if (fresh - c.addedAt >= 30_000 && !pods.some((p) => p.name === c.name)) expect(out.map((r) => r.pod)).toContain(c);
        }
      }),
    );
  });
});

describe('cniPodsFromAllocations', () => {
  it('keeps named pods once, from their oldest attachment, and skips unnamed ones', () => {
    const pods = cniPodsFromAllocations([
      { containerId: 'c1', ifname: 'eth0', podName: 'web', podNamespace: 'default', allocatedAt: 20 },
      { containerId: 'c1', ifname: 'net1', podName: 'web', podNamespace: 'default', allocatedAt: 10 },
      { containerId: 'c2', ifname: 'eth0', allocatedAt: 5 },
      { containerId: 'c3', ifname: 'eth0', podName: 'db', podNamespace: 'prod', allocatedAt: 7 },
    ]);
    expect(pods).toEqual([
      { key: 'c1/net1', namespace: 'default', name: 'web', addedAt: 10 },
      { key: 'c3/eth0', namespace: 'prod', name: 'db', addedAt: 7 },
    ]);
  });
});

describe('kubeInputs', () => {
  const snap = (over: Partial<KubeSnapshot> = {}): KubeSnapshot => ({
    version: 1,
    connected: true,
    synced: true,
    self: undefined,
    podCIDRs: [],
    endpointIPs: ['192.0.2.1', '198.18.0.1'],
    seeds: ['192.0.2.2:7946', '192.0.2.3:7946'],
    nodes: [],
    pods: [],
    podsFreshAt: 0,
    ...over,
  });
  const cfg = { seeds: ['192.0.2.3:7946', 'seed.example:7946'], podCIDRs: [] as string[], clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'] };

  it('uses spec.podCIDRs inside the cluster CIDR, and merges seeds flag-first without duplicates', () => {
    const r = kubeInputs(cfg, snap({ podCIDRs: ['10.244.3.0/24', 'fd00:10:244:3::/64'] }));
    expect(r).toEqual({
      podCIDRs: ['10.244.3.0/24', 'fd00:10:244:3::/64'],
      podCIDRSource: 'kubernetes',
      seeds: ['192.0.2.3:7946', 'seed.example:7946', '192.0.2.2:7946'],
      endpointIPs: ['192.0.2.1', '198.18.0.1'],
      problems: [],
    });
  });

  it('an explicit --pod-cidr wins, and a disagreement is reported', () => {
    const r = kubeInputs({ ...cfg, podCIDRs: ['10.244.9.0/24'] }, snap({ podCIDRs: ['10.244.3.0/24'] }));
    expect(r.podCIDRs).toEqual(['10.244.9.0/24']);
    expect(r.podCIDRSource).toBe('flag');
    expect(r.problems).toEqual([expect.stringMatching(/differ from --pod-cidr/)]);
  });

  it.each([
    ['outside the cluster CIDR', ['10.99.0.0/24'], /outside the cluster CIDR/],
    ['too small', ['10.244.3.0/31'], /too small/],
    ['unparseable', ['nonsense'], /does not parse/],
    ['a second block of one family', ['10.244.3.0/24', '10.244.4.0/24'], /second IPv4 block/],
  ])('ignores a podCIDR that is %s', (_n, cidrs, why) => {
    const r = kubeInputs(cfg, snap({ podCIDRs: cidrs }));
    expect(r.problems).toEqual([expect.stringMatching(why)]);
    expect(r.podCIDRs.every((c) => c.startsWith('10.244.'))).toBe(true);
  });

  it('without Kubernetes, passes the flags through', () => {
    expect(kubeInputs(cfg, undefined)).toEqual({ podCIDRs: [], podCIDRSource: 'none', seeds: cfg.seeds, endpointIPs: [], problems: [] });
  });

  it('never throws and only returns pod CIDRs inside the cluster CIDR', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.string(), fc.constantFrom('10.244.3.0/24', '10.0.0.0/8', 'fd00:10:244:1::/64', '10.244.3.0/30'))), (cidrs) => {
        const r = kubeInputs(cfg, snap({ podCIDRs: cidrs }));
        for (const c of r.podCIDRs) expect(c.startsWith('10.244.') || c.startsWith('fd00:10:244:')).toBe(true);
      }),
    );
  });
});
