import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { buildTable, emptyTable, findAuthority } from '../../src/dns/table.ts';
import { nodeInfo, remote, sampleTable } from './fixtures.ts';

describe('buildTable', () => {
  it('publishes pods, nodes, PTRs and empty non-terminals of live nodes only', () => {
    const t = sampleTable();
    expect(t.names.get('web.default.pod.weft.local')).toEqual({ a: ['10.244.1.5'], aaaa: ['fd00:10:244:1::5'], ptr: [] });
    expect(t.names.get('api.default.pod.weft.local')?.a).toEqual(['10.244.2.9']);
    expect(t.names.get('node-1.node.weft.local')?.a).toEqual(['10.244.1.1']);
    expect(t.names.get('node-2.node.weft.local')?.a).toEqual(['10.244.2.1']);
    expect(t.names.get('5.1.244.10.in-addr.arpa')?.ptr).toEqual(['web.default.pod.weft.local']);
    expect(t.names.get('1.1.244.10.in-addr.arpa')?.ptr).toEqual(['node-1.node.weft.local']);
    expect(t.names.get('db-primary.prod.pod.weft.local')?.a).toEqual(['10.244.1.6']);
    for (const ent of ['weft.local', 'pod.weft.local', 'default.pod.weft.local', 'node.weft.local']) {
      expect(t.names.get(ent)).toEqual({ a: [], aaaa: [], ptr: [] });
    }
    // node-3 is dead: its names and its reverse zone are gone.
    expect(t.names.has('ghost.default.pod.weft.local')).toBe(false);
    expect(t.names.has('node-3.node.weft.local')).toBe(false);
    expect(t.authorities.has('3.244.10.in-addr.arpa')).toBe(false);
    expect(t.authorities.has('1.244.10.in-addr.arpa')).toBe(true);
    expect(t.stats).toMatchObject({ pods: 4, nodes: 2, unmappable: 0, collisions: 0, badAddresses: 0 });
  });

  it('fills IPv6 reverse empty non-terminals down to the /64 apex', () => {
    const t = sampleTable();
    const rev = [...t.names.keys()].find((n) => n.endsWith('ip6.arpa') && t.names.get(n)!.ptr.length > 0)!;
    expect(rev.split('.')).toHaveLength(34);
    const parent = rev.split('.').slice(8).join('.');
    expect(t.names.get(parent)).toEqual({ a: [], aaaa: [], ptr: [] });
  });

  it('resolves label collisions deterministically and counts them', () => {
    const pods = [
      { name: 'a.b', namespace: 'ns', ips: ['10.244.1.2'] },
      { name: 'a_b', namespace: 'ns', ips: ['10.244.1.3'] },
      { name: 'a-b', namespace: 'ns', ips: ['10.244.1.4'] },
      { name: '___', namespace: 'ns', ips: ['10.244.1.5'] },
    ];
    const t = buildTable({ zone: 'weft.local', self: { info: nodeInfo('n1', 1), pods }, remotes: [] });
    // `a-b` already is a label: it wins over the mapped ones.
    expect(t.names.get('a-b.ns.pod.weft.local')?.a).toEqual(['10.244.1.4']);
    expect(t.stats.collisions).toBe(2);
    expect(t.stats.unmappable).toBe(1);
    const t2 = buildTable({ zone: 'weft.local', self: { info: nodeInfo('n1', 1), pods: pods.slice(0, 2).reverse() }, remotes: [] });
    // Among mapped names the lower original wins ('ns/a.b' < 'ns/a_b').
    expect(t2.names.get('a-b.ns.pod.weft.local')?.a).toEqual(['10.244.1.2']);
  });

  it('merges the addresses of one pod published by two nodes, and skips non-IPs', () => {
    const t = buildTable({
      zone: 'weft.local',
      remotes: [
        remote(nodeInfo('n1', 1), [{ name: 'p', namespace: 'x', ips: ['10.244.1.9', 'bogus'] }]),
        remote(nodeInfo('n2', 2), [{ name: 'p', namespace: 'x', ips: ['10.244.2.9'] }], 'suspect'),
      ],
    });
    expect(t.names.get('p.x.pod.weft.local')?.a).toEqual(['10.244.1.9', '10.244.2.9']);
    expect(t.stats.badAddresses).toBe(1);
  });

  it('does not depend on the order of its inputs (property)', () => {
    const podArb = fc.record({
      name: fc.constantFrom('a', 'A', 'a.b', 'a_b', 'a-b', 'web', 'x'.repeat(70), 'x'.repeat(71)),
      namespace: fc.constantFrom('default', 'prod'),
      ips: fc.array(fc.integer({ min: 2, max: 250 }).map((n) => `10.244.1.${n}`), { maxLength: 2 }),
    });
    fc.assert(fc.property(fc.array(podArb, { maxLength: 12 }), fc.nat(), (pods, seed) => {
      const shuffled = [...pods].sort((x, y) => ((x.name.length * 31 + seed) % 7) - ((y.name.length * 17 + seed) % 5));
      const a = buildTable({ zone: 'weft.local', self: { info: nodeInfo('n1', 1), pods }, remotes: [] });
      const b = buildTable({ zone: 'weft.local', self: { info: nodeInfo('n1', 1), pods: shuffled }, remotes: [] });
      expect([...b.names.entries()].sort()).toEqual([...a.names.entries()].sort());
    }));
  });

  it('handles 10,000 pods', () => {
    const remotes = Array.from({ length: 40 }, (_, n) => remote(nodeInfo(`node-${n}`, n + 1),
      Array.from({ length: 250 }, (_, i) => ({ name: `pod-${n}-${i}`, namespace: 'load', ips: [`10.244.${n + 1}.${i + 2}`] }))));
    const t = buildTable({ zone: 'weft.local', remotes });
    expect(t.stats.pods).toBe(10_000);
    expect(t.names.get('pod-39-249.load.pod.weft.local')?.a).toEqual(['10.244.40.251']);
  });

  it('finds the authority of a name, or none', () => {
    const t = emptyTable('Weft.Local');
    expect(t.zone).toBe('weft.local');
    expect(findAuthority('x.y.weft.local', t.authorities)).toBe('weft.local');
    expect(findAuthority('weft.local.example', t.authorities)).toBeUndefined();
    expect(findAuthority('example.com', t.authorities)).toBeUndefined();
  });
});

describe('cluster reverse zones', () => {
  const dead = remote(nodeInfo('node-3', 3), [{ name: 'ghost', namespace: 'default', ips: ['10.244.3.9'] }], 'dead');

  it('stays authoritative for a departed node\'s pod addresses when the cluster CIDR is given', () => {
    const withCluster = buildTable({ zone: 'weft.local', remotes: [dead], clusterCIDRs: ['10.244.0.0/16'] });
    expect(findAuthority('9.3.244.10.in-addr.arpa', withCluster.authorities)).toBe('244.10.in-addr.arpa');
    expect(withCluster.names.has('9.3.244.10.in-addr.arpa')).toBe(false);
  });

  it('is not authoritative for that address without the cluster CIDR, so it would be forwarded', () => {
    const without = buildTable({ zone: 'weft.local', remotes: [dead] });
    expect(findAuthority('9.3.244.10.in-addr.arpa', without.authorities)).toBeUndefined();
  });

  it('never claims reverse zones outside the cluster CIDR', () => {
    const t = buildTable({ zone: 'weft.local', remotes: [], clusterCIDRs: ['10.244.0.0/16'] });
    expect(findAuthority('1.2.0.192.in-addr.arpa', t.authorities)).toBeUndefined();
  });
});
