import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BlockExhaustedError, blockLayout, blockPrefix, chooseBlock, gatewayOf, nodeHash, PodCidrError, validatePodCidr } from '../../src/ipam/blocks.ts';
import { cidrContains, cidrOverlaps, formatCidr, parseCidr } from '../../src/ipam/cidr.ts';

describe('blockLayout', () => {
  it('splits a /16 into 256 /24 blocks', () => {
    const l = blockLayout('10.244.0.0/16', 24);
    expect(l.count).toBe(256n);
    expect(formatCidr(l.blockAt(0n))).toBe('10.244.0.0/24');
    expect(formatCidr(l.blockAt(255n))).toBe('10.244.255.0/24');
    expect(l.indexOf(parseCidr('10.244.7.0/24'))).toBe(7n);
    expect(l.indexOf(parseCidr('10.245.7.0/24'))).toBeUndefined();
    expect(() => l.blockAt(256n)).toThrow(RangeError);
  });
  it('handles huge IPv6 spaces without materializing them', () => {
    const l = blockLayout('fd00:10:244::/48', blockPrefix(6, 24));
    expect(l.prefix).toBe(120);
    expect(l.count).toBe(1n << 72n);
  });
  it('rejects a block larger than the cluster', () => {
    expect(() => blockLayout('10.244.0.0/16', 8)).toThrow(PodCidrError);
  });
});

describe('chooseBlock', () => {
  const base = { clusterCidr: '10.244.0.0/16', prefix: 24 };
  it('is deterministic from the node name', () => {
    const a = chooseBlock({ ...base, node: 'node-1', taken: [] });
    expect(chooseBlock({ ...base, node: 'node-1', taken: [] })).toBe(a);
    expect(a).toBe(`10.244.${Number(nodeHash('node-1') % 256n)}.0/24`);
  });
  it('probes past taken blocks, including blocks covered by a larger taken CIDR', () => {
    const start = Number(nodeHash('n') % 256n);
    const taken = [`10.244.${start}.0/24`, `10.244.${(start + 1) % 256}.0/24`];
    expect(chooseBlock({ ...base, node: 'n', taken })).toBe(`10.244.${(start + 2) % 256}.0/24`);
    // A /23 that covers the next two candidates, plus an overlapping /24 inside it.
    const s2 = (start + 2) & ~1;
    const wide = [...taken, `10.244.${s2}.0/23`, `10.244.${s2 + 1}.0/24`];
    const got = parseCidr(chooseBlock({ ...base, node: 'n', taken: wide }));
    for (const t of wide) expect(cidrOverlaps(got, parseCidr(t))).toBe(false);
  });
  it('honours avoid, ignores other families and garbage', () => {
    const first = chooseBlock({ ...base, node: 'x', taken: [] });
    const second = chooseBlock({ ...base, node: 'x', taken: ['fd00::/8', 'garbage'], avoid: [first] });
    expect(second).not.toBe(first);
  });
  it('random start is used for re-claims', () => {
    expect(chooseBlock({ ...base, node: 'x', taken: [], random: () => 0 })).toBe('10.244.0.0/24');
    expect(chooseBlock({ ...base, node: 'x', taken: [], random: () => 0.999999 })).toBe('10.244.255.0/24');
    expect(chooseBlock({ ...base, node: 'x', taken: [], random: () => Number.NaN })).toBe('10.244.0.0/24');
  });
  it('throws BlockExhaustedError when full', () => {
    const all = Array.from({ length: 4 }, (_, i) => `10.244.${i}.0/24`);
    expect(() => chooseBlock({ clusterCidr: '10.244.0.0/22', prefix: 24, node: 'n', taken: all })).toThrow(BlockExhaustedError);
    expect(() => chooseBlock({ clusterCidr: '10.244.0.0/22', prefix: 24, node: 'n', taken: ['10.0.0.0/8'] })).toThrow(/no free \/24 block/);
  });
  it('works for IPv6', () => {
    const got = chooseBlock({ clusterCidr: 'fd00:10:244::/56', prefix: 120, node: 'n', taken: [] });
    expect(cidrContains(parseCidr('fd00:10:244::/56'), parseCidr(got))).toBe(true);
    expect(got).toMatch(/\/120$/);
  });
  it('property: the chosen block is inside the cluster, of the right size, and free', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 20 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 15 }), fc.constantFrom(22, 23, 24)), { maxLength: 14 }), (node, t) => {
        const taken = t.map(([b, len]) => `10.244.${b}.0/${len}`);
        let got: string;
        try {
          got = chooseBlock({ clusterCidr: '10.244.0.0/20', prefix: 24, node, taken });
        } catch (err) {
          expect(err).toBeInstanceOf(BlockExhaustedError);
          // Exhaustion must be real: every block overlaps something taken.
          for (let i = 0; i < 16; i++) expect(taken.some((x) => cidrOverlaps(parseCidr(x), parseCidr(`10.244.${i}.0/24`)))).toBe(true);
          return;
        }
        const c = parseCidr(got);
        expect(c.prefix).toBe(24);
        expect(cidrContains(parseCidr('10.244.0.0/20'), c)).toBe(true);
        for (const x of taken) expect(cidrOverlaps(parseCidr(x), c)).toBe(false);
      }),
    );
  });
});

describe('validatePodCidr', () => {
  const clusters = ['10.244.0.0/16', 'fd00:10:244::/48'];
  it.each([
    ['10.244.3.0/24', '10.244.3.0/24'],
    ['fd00:10:244:0:0:0:0:300/120', 'fd00:10:244::300/120'],
  ])('accepts %s', (input, want) => expect(validatePodCidr(input, clusters, 24)).toBe(want));
  it.each([
    ['10.244.3.0/25', /must be a \/24/],
    ['10.245.3.0/24', /not inside the cluster CIDR/],
    ['10.244.3.1/24', /host bits/],
    ['nonsense', /invalid/],
    ['fd00:10:244::/112', /must be a \/120/],
  ])('rejects %s', (input, re) => expect(() => validatePodCidr(input, clusters, 24)).toThrow(re));
  it('rejects a family with no cluster CIDR', () => {
    expect(() => validatePodCidr('fd00::/120', ['10.244.0.0/16'], 24)).toThrow(/no IPv6 cluster CIDR/);
  });
});

describe('gatewayOf', () => {
  it('is the first host address', () => {
    expect(gatewayOf('10.244.3.0/24')).toEqual({ ip: '10.244.3.1', cidr: '10.244.3.1/24' });
    expect(gatewayOf('fd00::100/120')).toEqual({ ip: 'fd00::101', cidr: 'fd00::101/120' });
    expect(() => gatewayOf('10.0.0.0/31')).toThrow(PodCidrError);
  });
});
