import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { canonicalCidr, cidrContains, cidrOverlaps, DisjointCidrSet, formatAddr, parseAddr, parseCidr } from '../../src/ipam/cidr.ts';

describe('cidr', () => {
  it.each([
    ['10.244.3.7/24', '10.244.3.0/24'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['fd00:0:0:0:0:0:0:1/64', 'fd00::/64'],
    ['FD00::1:0:0:5/128', 'fd00::1:0:0:5/128'],
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128'],
    ['::/0', '::/0'],
  ])('canonicalizes %s -> %s', (input, want) => expect(canonicalCidr(input)).toBe(want));

  it.each(['10.244.0.0', '10.244.0.0/33', '10.244.0/16', 'fd00::/129', '::ffff:1.2.3.4/128', 'x/8', '10.0.0.0/-1', '10.0.0.0/ 8', '', 'fe80::1%eth0/64'])(
    'rejects %j',
    (input) => expect(() => parseCidr(input)).toThrow(/^cidr: invalid/),
  );

  it('strict mode rejects host bits', () => {
    expect(() => parseCidr('10.244.3.7/24', true)).toThrow(/host bits/);
  });

  it('contains and overlaps', () => {
    const p = parseCidr;
    expect(cidrContains(p('10.244.0.0/16'), p('10.244.3.0/24'))).toBe(true);
    expect(cidrContains(p('10.244.3.0/24'), p('10.244.0.0/16'))).toBe(false);
    expect(cidrOverlaps(p('10.244.3.0/24'), p('10.244.0.0/16'))).toBe(true);
    expect(cidrOverlaps(p('10.244.3.0/24'), p('10.244.4.0/24'))).toBe(false);
    expect(cidrOverlaps(p('10.0.0.0/8'), p('a00::/8'))).toBe(false);
  });

  it('addresses round-trip through parse and format', () => {
    fc.assert(fc.property(fc.ipV4(), (ip) => {
      expect(formatAddr(4, parseAddr(ip).value)).toBe(ip);
    }));
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), (v) => {
      expect(parseAddr(formatAddr(6, v)).value).toBe(v);
    }));
  });

  it('DisjointCidrSet finds overlaps like a linear scan does', () => {
    const arb = fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 20, max: 28 })), { maxLength: 40 });
    fc.assert(
      fc.property(arb, (items) => {
        const set = new DisjointCidrSet();
        const held: ReturnType<typeof parseCidr>[] = [];
        for (const [b, len] of items) {
          const c = parseCidr(`10.0.${b}.0/${len}`);
          const linear = held.some((h) => cidrOverlaps(h, c));
          expect(set.add(c)).toBe(!linear);
          if (!linear) held.push(c);
        }
        expect(set.size).toBe(held.length);
      }),
    );
  });
});
