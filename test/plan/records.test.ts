import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RecordsCache, recordsFromSnapshot } from '../../src/plan/records.ts';
import { entry, member, nodeInfo, snapshot } from './helpers.ts';

const cfg = { clusterCIDRs: ['10.244.0.0/16', 'fd00:10::/56'] };

describe('recordsFromSnapshot', () => {
  it('parses valid node and pod entries, excludes self, sorts by name', () => {
    const s = snapshot('node-0', [
      member('node-2', nodeInfo(2), [{ name: 'web', namespace: 'default', ips: ['10.244.2.5'] }]),
      member('node-0', nodeInfo(0)),
      member('node-1', nodeInfo(1, { state: undefined } as never), [], 'suspect'),
    ]);
    const r = recordsFromSnapshot(s, cfg);
    expect(r.rejected).toEqual([]);
    expect(r.nodes.map((n) => n.info.name)).toEqual(['node-1', 'node-2']);
    expect(r.nodes[0]!.state).toBe('suspect');
    expect(r.nodes[1]!.pods).toEqual([{ name: 'web', namespace: 'default', ips: ['10.244.2.5'] }]);
    expect(r.self?.info.name).toBe('node-0');
  });

  it('skips unknown format versions and reports them', () => {
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', { ...nodeInfo(1), format: 2 })]), cfg);
    expect(r.nodes).toEqual([]);
    expect(r.rejected).toEqual([{ node: 'node-1', key: 'node', reason: expect.stringContaining('unknown node record format 2') }]);
  });

  const bad: [string, unknown, string][] = [
    ['not JSON', '{nope', 'not UTF-8 JSON'],
    ['an array', [1], 'not a JSON object'],
    ['another name', nodeInfo(1, { name: 'node-9' }), 'not its member'],
    ['short key', nodeInfo(1, { wgPublicKey: 'AAAA' }), 'wgPublicKey'],
    ['31-byte key', nodeInfo(1, { wgPublicKey: Buffer.alloc(31, 1).toString('base64') }), 'wgPublicKey'],
    ['port 0', nodeInfo(1, { listenPort: 0 }), 'listenPort'],
    ['port 70000', nodeInfo(1, { listenPort: 70000 }), 'listenPort'],
    ['fractional port', nodeInfo(1, { listenPort: 1.5 }), 'listenPort'],
    ['negative claimedAt', nodeInfo(1, { claimedAt: -1 }), 'claimedAt'],
    ['keepalive too big', nodeInfo(1, { keepalive: 70000 }), 'keepalive'],
    ['bad mesh IP', nodeInfo(1, { meshIP: '10.244.1' }), 'meshIP'],
    ['endpoints not array', { ...nodeInfo(1), endpoints: 'x' }, 'endpoints'],
    ['mesh IP outside own CIDR', nodeInfo(1, { meshIP: '10.244.7.1' }), 'mesh IP 10.244.7.1 is not inside'],
    ['no pod CIDR inside cluster', nodeInfo(1, { podCIDRs: ['10.99.0.0/24'], meshIP: '10.99.0.1' }), 'mesh IP'],
  ];
  it.each(bad)('rejects a node record with %s', (_what, record, reason) => {
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', record)]), cfg);
    expect(r.nodes).toEqual([]);
    expect(r.rejected.map((x) => x.reason).join(' | ')).toContain(reason);
  });

  it('rejects oversized payloads', () => {
    const big = { ...nodeInfo(1), pad: 'x'.repeat(20_000) };
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', big)]), cfg);
    expect(r.nodes).toEqual([]);
    expect(r.rejected[0]!.reason).toContain('exceeds');
  });

  it('drops bad endpoints one by one, keeps good ones canonical', () => {
    const info = nodeInfo(1, {
      endpoints: ['garbage', '10.244.9.9:51820', '[2001:DB8::1]:51820', '0.0.0.0:1', '224.0.0.1:5', '192.0.2.9:0', '192.0.2.9:51820', '2001:db8::2:51820'],
    });
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', info)]), cfg);
    expect(r.nodes[0]!.info.endpoints).toEqual(['[2001:db8::1]:51820', '192.0.2.9:51820']);
    expect(r.rejected).toHaveLength(6);
    expect(r.rejected.some((x) => x.reason.includes('inside the cluster CIDR'))).toBe(true);
  });

  it('drops pod CIDRs outside the cluster CIDR or with host bits, keeps the rest', () => {
    const info = nodeInfo(1, { podCIDRs: ['10.244.1.0/24', 'fd00:10:0:1::/64', '10.245.0.0/24'] });
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', info)], ), { ...cfg, limits: { maxPodCIDRs: 3 } });
    expect(r.nodes[0]!.info.podCIDRs).toEqual(['10.244.1.0/24', 'fd00:10:0:1::/64']);
    const hostBits = recordsFromSnapshot(snapshot('x', [member('node-1', nodeInfo(1, { podCIDRs: ['10.244.1.1/24'] }))]), cfg);
    expect(hostBits.nodes).toEqual([]);
    expect(hostBits.rejected[0]!.reason).toContain('host bits');
  });

  it('resolves conflicting claims: older wins, the loser is not planned', () => {
    const older = nodeInfo(1, { podCIDRs: ['10.244.5.0/24'], meshIP: '10.244.5.1', claimedAt: 10 });
    const newer = nodeInfo(2, { podCIDRs: ['10.244.5.0/24'], meshIP: '10.244.5.1', claimedAt: 20 });
    const r = recordsFromSnapshot(snapshot('x', [member('node-2', newer), member('node-1', older)]), cfg);
    expect(r.nodes.map((n) => n.info.name)).toEqual(['node-1']);
    expect(r.rejected.map((x) => x.node)).toEqual(['node-2', 'node-2']);
    expect(r.rejected[0]!.reason).toContain('lost to node-1');
  });

  it('resolves a tie on claimedAt by the lower node name, and overlapping CIDRs conflict too', () => {
    const a = nodeInfo(1, { name: 'a', podCIDRs: ['10.244.4.0/23'], meshIP: '10.244.4.1', claimedAt: 5 });
    const b = nodeInfo(2, { name: 'b', podCIDRs: ['10.244.5.0/24'], meshIP: '10.244.5.1', claimedAt: 5 });
    const r = recordsFromSnapshot(snapshot('x', [member('b', b), member('a', a)]), cfg);
    expect(r.nodes.map((n) => n.info.name)).toEqual(['a']);
  });

  it('keeps a node that lost one of two CIDRs with the one it holds', () => {
    const a = nodeInfo(1, { name: 'a', podCIDRs: ['10.244.1.0/24', 'fd00:10:0:1::/64'], meshIP: '10.244.1.1', claimedAt: 5 });
    const b = nodeInfo(2, { name: 'b', podCIDRs: ['fd00:10:0:1::/64'], meshIP: 'fd00:10:0:1::1', claimedAt: 1 });
    const r = recordsFromSnapshot(snapshot('x', [member('a', a), member('b', b)]), cfg);
    expect(r.nodes.find((n) => n.info.name === 'a')!.info.podCIDRs).toEqual(['10.244.1.0/24']);
    expect(r.nodes.find((n) => n.info.name === 'b')!.info.podCIDRs).toEqual(['fd00:10:0:1::/64']);
  });

  it('rejects a second node reusing a WireGuard key', () => {
    const k = nodeInfo(1).wgPublicKey;
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', nodeInfo(1)), member('node-2', nodeInfo(2, { wgPublicKey: k }))]), cfg);
    expect(r.nodes.map((n) => n.info.name)).toEqual(['node-1']);
    expect(r.rejected[0]!.reason).toContain('already used by node-1');
  });

  it('rejects pod entries naming an IP outside the node pod CIDRs, mismatched keys and bad IPs', () => {
    const m = member('node-1', nodeInfo(1), [
      { name: 'ok', namespace: 'ns', ips: ['10.244.1.7'] },
      { name: 'steal', namespace: 'ns', ips: ['10.244.2.7'] },
      { name: 'bad', namespace: 'ns', ips: ['nope'] },
      { name: 'none', namespace: 'ns', ips: [] },
    ], 'alive', [entry('pod/ns/liar', { name: 'other', namespace: 'ns', ips: ['10.244.1.8'] }), entry('pod/Bad_NS/x', { name: 'x', namespace: 'Bad_NS', ips: ['10.244.1.9'] })]);
    const r = recordsFromSnapshot(snapshot('x', [m]), cfg);
    expect(r.nodes[0]!.pods.map((p) => p.name)).toEqual(['ok']);
    const reasons = Object.fromEntries(r.rejected.map((x) => [x.key, x.reason]));
    expect(reasons['pod/ns/steal']).toContain('outside the node');
    expect(reasons['pod/ns/bad']).toContain('not an address');
    expect(reasons['pod/ns/none']).toContain('1..2');
    expect(reasons['pod/ns/liar']).toContain('does not match');
    expect(reasons['pod/Bad_NS/x']).toContain('pod/<namespace>/<name>');
  });

  it('caps pods per node', () => {
    const pods = Array.from({ length: 5 }, (_, i) => ({ name: `p${i}`, namespace: 'ns', ips: [`10.244.1.${i + 2}`] }));
    const r = recordsFromSnapshot(snapshot('x', [member('node-1', nodeInfo(1), pods)]), { ...cfg, limits: { maxPodsPerNode: 3 } });
    expect(r.nodes[0]!.pods).toHaveLength(3);
    expect(r.rejected).toHaveLength(2);
  });

  it('ignores deleted entries and members without a node entry', () => {
    const m = member('node-1', nodeInfo(1));
    const tomb = { ...m, entries: new Map([['node', { ...m.entries.get('node')!, deleted: true }]]) };
    expect(recordsFromSnapshot(snapshot('x', [tomb, member('node-3', undefined)]), cfg)).toEqual({ nodes: [], rejected: [] });
  });

  it('never throws and gives every member the same answer whatever the member order (property)', () => {
    const junk = fc.oneof(fc.jsonValue(), fc.string(), fc.uint8Array({ maxLength: 64 }));
    const recordArb = fc.oneof(
      fc.record({ i: fc.integer({ min: 0, max: 6 }), claimedAt: fc.integer({ min: 0, max: 3 }), cidr: fc.integer({ min: 0, max: 6 }) }).map(({ i, claimedAt, cidr }) =>
        nodeInfo(i, { podCIDRs: [`10.244.${cidr}.0/24`], meshIP: `10.244.${cidr}.1`, claimedAt }),
      ),
      junk,
    );
    fc.assert(
      fc.property(fc.array(recordArb, { maxLength: 8 }), fc.integer(), (records, seed) => {
        const members = records.map((rec, i) => member(`node-${i}`, rec instanceof Uint8Array ? rec : typeof rec === 'object' && rec && 'format' in rec ? { ...rec, name: `node-${i}` } : rec));
        const shuffled = [...members].sort((a, b) => ((a.name.charCodeAt(5) * seed) % 7) - ((b.name.charCodeAt(5) * seed) % 7));
        const r1 = recordsFromSnapshot(snapshot('nobody', members), cfg);
        const r2 = recordsFromSnapshot(snapshot('nobody', shuffled), cfg);
        expect(r2.nodes).toEqual(r1.nodes);
        // Held pod CIDRs never overlap between nodes.
        const all = r1.nodes.flatMap((n) => n.info.podCIDRs);
        expect(new Set(all).size).toBe(all.length);
      }),
      { numRuns: 200 },
    );
  });

  it('gives the same result with a cache, across calls, member renames and config changes (property)', () => {
    const cache = new RecordsCache();
    // A pool of members built once, so payload objects repeat across calls as they do in the mesh.
    const pool = Array.from({ length: 12 }, (_, k) => {
      const i = k % 5;
      const cidr = (k * 3) % 5;
      return member(`node-${i}`, nodeInfo(i, { podCIDRs: [`10.244.${cidr}.0/24`], meshIP: `10.244.${cidr}.1`, claimedAt: k % 3 }), [
        { name: 'p', namespace: 'ns', ips: [`10.244.${cidr}.9`] },
        { name: 'q', namespace: 'ns', ips: [`10.244.${(cidr + 1) % 5}.9`] },
      ]);
    });
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: pool.length - 1 }), { maxLength: 6 }), fc.boolean(), (picks, narrow) => {
        const cfg2 = { clusterCIDRs: narrow ? ['10.244.0.0/22'] : ['10.244.0.0/16'] };
        const byName = new Map(picks.map((p) => [pool[p]!.name, pool[p]!]));
        const s = snapshot('nobody', [...byName.values()]);
        expect(recordsFromSnapshot(s, { ...cfg2, cache })).toEqual(recordsFromSnapshot(s, cfg2));
      }),
      { numRuns: 300 },
    );
  });

  it('hands back the same result for an unchanged snapshot and recomputes on any input change', () => {
    const cache = new RecordsCache();
    const a = member('node-1', nodeInfo(1), [{ name: 'web', namespace: 'default', ips: ['10.244.1.5'] }]);
    const b = member('node-2', nodeInfo(2));
    const r1 = recordsFromSnapshot(snapshot('x', [a, b]), { ...cfg, cache });
    // A new snapshot object over the same members (what the mesh hands out on every call).
    expect(recordsFromSnapshot(snapshot('x', [a, b]), { ...cfg, cache })).toBe(r1);
    expect(Object.isFrozen(r1.nodes)).toBe(true);
    // Liveness is part of the result.
    const r2 = recordsFromSnapshot(snapshot('x', [a, { ...b, state: 'suspect' }]), { ...cfg, cache });
    expect(r2).not.toBe(r1);
    expect(r2.nodes[1]!.state).toBe('suspect');
    // A new pod entry, a deleted one, a departed member, another self: each is a change.
    const withPod = { ...b, entries: new Map([...b.entries, ['pod/default/db', entry('pod/default/db', { name: 'db', namespace: 'default', ips: ['10.244.2.7'] })]]) };
    expect(recordsFromSnapshot(snapshot('x', [a, withPod]), { ...cfg, cache }).nodes[1]!.pods).toHaveLength(1);
    const gone = new Map(a.entries);
    gone.set('pod/default/web', { ...gone.get('pod/default/web')!, deleted: true });
    expect(recordsFromSnapshot(snapshot('x', [{ ...a, entries: gone }, b]), { ...cfg, cache }).nodes[0]!.pods).toEqual([]);
    expect(recordsFromSnapshot(snapshot('x', [b]), { ...cfg, cache }).nodes.map((n) => n.info.name)).toEqual(['node-2']);
    expect(recordsFromSnapshot(snapshot('node-1', [a, b]), { ...cfg, cache }).self?.info.name).toBe('node-1');
    // A config change is a change too (the cluster CIDR no longer holds node-2's block).
    expect(recordsFromSnapshot(snapshot('x', [a, b]), { clusterCIDRs: ['10.244.1.0/24'], cache }).nodes.map((n) => n.info.name)).toEqual(['node-1']);
  });

  it('equals the uncached result over sequences of liveness and membership changes (property)', () => {
    const pool = Array.from({ length: 6 }, (_, i) => member(`node-${i}`, nodeInfo(i, { claimedAt: i % 2 }), [{ name: 'p', namespace: 'ns', ips: [`10.244.${i}.9`] }]));
    const states = ['alive', 'suspect', 'dead', 'left'] as const;
    const cache = new RecordsCache();
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.subarray(pool.map((_, i) => i)), fc.array(fc.constantFrom(...states), { minLength: 6, maxLength: 6 })), { minLength: 1, maxLength: 8 }), (steps) => {
        for (const [picks, st] of steps) {
          const s = snapshot('node-0', picks.map((i) => (st[i] === 'alive' ? pool[i]! : { ...pool[i]!, state: st[i]! })));
          expect(recordsFromSnapshot(s, { ...cfg, cache })).toEqual(recordsFromSnapshot(s, cfg));
        }
      }),
      { numRuns: 200 },
    );
  });

  it('does not reuse a cached node payload under another member name', () => {
    const cache = new RecordsCache();
    const m = member('node-1', nodeInfo(1));
    expect(recordsFromSnapshot(snapshot('x', [m]), { ...cfg, cache }).nodes).toHaveLength(1);
    const imposter = { ...m, name: 'node-2' };
    const r = recordsFromSnapshot(snapshot('x', [imposter]), { ...cfg, cache });
    expect(r.nodes).toEqual([]);
    expect(r.rejected[0]!.reason).toContain('not its member');
  });
});
