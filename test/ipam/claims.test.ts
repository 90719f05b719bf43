import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { analyzeClaims, claimsOf, resolveClaims, type BlockClaim } from '../../src/ipam/claims.ts';
import { canonicalCidr, cidrOverlaps, parseCidr } from '../../src/ipam/cidr.ts';

const winnersOf = (claims: BlockClaim[]) =>
  Object.fromEntries([...resolveClaims(claims)].map(([k, v]) => [k, v.node]));

describe('resolveClaims (table)', () => {
  const cases: { name: string; claims: BlockClaim[]; want: Record<string, string> }[] = [
    { name: 'no claims', claims: [], want: {} },
    {
      name: 'disjoint claims all win',
      claims: [
        { node: 'a', cidr: '10.244.1.0/24', claimedAt: 5 },
        { node: 'b', cidr: '10.244.2.0/24', claimedAt: 1 },
      ],
      want: { '10.244.1.0/24': 'a', '10.244.2.0/24': 'b' },
    },
    {
      name: 'older claim wins the same block',
      claims: [
        { node: 'a', cidr: '10.244.1.0/24', claimedAt: 20 },
        { node: 'z', cidr: '10.244.1.0/24', claimedAt: 10 },
      ],
      want: { '10.244.1.0/24': 'z' },
    },
    {
      name: 'tie breaks on the lower node name',
      claims: [
        { node: 'node-b', cidr: '10.244.1.0/24', claimedAt: 10 },
        { node: 'node-a', cidr: '10.244.1.0/24', claimedAt: 10 },
      ],
      want: { '10.244.1.0/24': 'node-a' },
    },
    {
      name: 'overlapping but unequal: older /23 beats younger /24 inside it',
      claims: [
        { node: 'big', cidr: '10.244.0.0/23', claimedAt: 1 },
        { node: 'small', cidr: '10.244.1.0/24', claimedAt: 2 },
      ],
      want: { '10.244.0.0/23': 'big' },
    },
    {
      name: 'overlapping but unequal: older /24 beats younger /23 around it; the other /24 survives',
      claims: [
        { node: 'big', cidr: '10.244.0.0/23', claimedAt: 3 },
        { node: 'small', cidr: '10.244.1.0/24', claimedAt: 2 },
        { node: 'other', cidr: '10.244.2.0/24', claimedAt: 4 },
      ],
      want: { '10.244.1.0/24': 'small', '10.244.2.0/24': 'other' },
    },
    {
      name: 'host bits are cleared before comparing',
      claims: [
        { node: 'a', cidr: '10.244.1.7/24', claimedAt: 2 },
        { node: 'b', cidr: '10.244.1.0/24', claimedAt: 1 },
      ],
      want: { '10.244.1.0/24': 'b' },
    },
    {
      name: 'families never conflict',
      claims: [
        { node: 'a', cidr: '10.244.1.0/24', claimedAt: 2 },
        { node: 'a', cidr: 'fd00:10:244::100/120', claimedAt: 2 },
        { node: 'b', cidr: 'fd00:10:244:0::/112', claimedAt: 1 },
      ],
      want: { '10.244.1.0/24': 'a', 'fd00:10:244::/112': 'b' },
    },
    {
      name: 'invalid claims are ignored',
      claims: [
        { node: 'a', cidr: 'not-a-cidr', claimedAt: 1 },
        { node: '', cidr: '10.244.1.0/24', claimedAt: 1 },
        { node: 'c', cidr: '10.244.1.0/24', claimedAt: Number.NaN },
        { node: 'd', cidr: '10.244.1.0/33', claimedAt: 1 },
        { node: 'e', cidr: '10.244.1.0/24', claimedAt: 9 },
      ],
      want: { '10.244.1.0/24': 'e' },
    },
  ];
  for (const c of cases) it(c.name, () => expect(winnersOf(c.claims)).toEqual(c.want));

  it('reports losers with the claim that beat them, and invalid claims with a reason', () => {
    const a = analyzeClaims([
      { node: 'young', cidr: '10.244.1.0/24', claimedAt: 9 },
      { node: 'old', cidr: '10.244.0.0/16', claimedAt: 1 },
      { node: 'bad', cidr: '10.244.1.0', claimedAt: 1 },
    ]);
    expect(a.lost).toEqual([{ claim: { node: 'young', cidr: '10.244.1.0/24', claimedAt: 9 }, winner: { node: 'old', cidr: '10.244.0.0/16', claimedAt: 1 } }]);
    expect(a.invalid).toHaveLength(1);
    expect(a.invalid[0]!.reason).toMatch(/missing \/prefix/);
    expect(claimsOf(a, 'young')).toEqual({ held: [], lost: a.lost });
    expect(claimsOf(a, 'old').held).toEqual(['10.244.0.0/16']);
  });

  it('duplicate claims by one node collapse to the oldest', () => {
    const a = analyzeClaims([
      { node: 'a', cidr: '10.244.1.0/24', claimedAt: 50 },
      { node: 'a', cidr: '10.244.1.0/24', claimedAt: 5 },
      { node: 'b', cidr: '10.244.1.0/24', claimedAt: 10 },
    ]);
    expect(a.winners.get('10.244.1.0/24')).toEqual({ node: 'a', cidr: '10.244.1.0/24', claimedAt: 5 });
    expect(a.lost.map((l) => l.claim.node)).toEqual(['b']);
  });
});

// Claims drawn from a small space so that collisions, ties and nesting are frequent.
const claimArb = fc.record({
  node: fc.constantFrom('n1', 'n2', 'n3', 'n4', 'n5', 'node-a', 'node-b'),
  cidr: fc.tuple(fc.integer({ min: 0, max: 7 }), fc.constantFrom(21, 22, 23, 24, 24, 24, 25)).map(([b, len]) => `10.244.${b}.0/${len}`),
  claimedAt: fc.integer({ min: 0, max: 4 }),
});

describe('resolveClaims (properties)', () => {
  it('every member computes the same winners whatever order it saw the claims in', () => {
    fc.assert(
      fc.property(fc.array(claimArb, { maxLength: 30 }).chain((cs) => fc.tuple(fc.constant(cs), fc.shuffledSubarray(cs, { minLength: cs.length, maxLength: cs.length }))), ([a, b]) => {
        expect([...resolveClaims(b)].sort()).toEqual([...resolveClaims(a)].sort());
      }),
    );
  });

  it('winners never overlap, and every valid claim either wins or loses to an older-or-equal overlapping winner', () => {
    fc.assert(
      fc.property(fc.array(claimArb, { maxLength: 30 }), (claims) => {
        const a = analyzeClaims(claims);
        const ws = [...a.winners.values()];
        for (let i = 0; i < ws.length; i++)
          for (let j = i + 1; j < ws.length; j++) expect(cidrOverlaps(parseCidr(ws[i]!.cidr), parseCidr(ws[j]!.cidr))).toBe(false);
        for (const { claim, winner } of a.lost) {
          expect(cidrOverlaps(parseCidr(claim.cidr), parseCidr(winner.cidr))).toBe(true);
          expect(winner.claimedAt < claim.claimedAt || (winner.claimedAt === claim.claimedAt && winner.node <= claim.node)).toBe(true);
        }
        const decided = new Set([...ws, ...a.lost.map((l) => l.claim)].map((c) => `${c.node} ${c.cidr}`));
        for (const c of claims) expect(decided.has(`${c.node} ${canonicalCidr(c.cidr)}`)).toBe(true);
      }),
    );
  });

  it('claims handed in already parsed (canonical text + parse) resolve exactly as from text', () => {
    fc.assert(
      fc.property(fc.array(claimArb, { maxLength: 30 }), (claims) => {
        const canon = claims.map((c) => ({ ...c, cidr: canonicalCidr(c.cidr) }));
        const parsed = canon.map((c) => ({ ...c, parsed: parseCidr(c.cidr) }));
        const a = analyzeClaims(canon);
        const b = analyzeClaims(parsed);
        expect([...b.winners]).toEqual([...a.winners]);
        expect(b.lost).toEqual(a.lost);
        // The parse stays with the caller's objects, not the results.
        for (const w of b.winners.values()) expect('parsed' in w).toBe(false);
      }),
    );
  });

  it('the oldest claim (lowest name on ties) always wins', () => {
    fc.assert(
      fc.property(fc.array(claimArb, { minLength: 1, maxLength: 30 }), (claims) => {
        const canon = claims.map((c) => ({ ...c, cidr: canonicalCidr(c.cidr) }));
        const first = canon.sort((x, y) => x.claimedAt - y.claimedAt || (x.node < y.node ? -1 : x.node > y.node ? 1 : 0) || (x.cidr < y.cidr ? -1 : x.cidr > y.cidr ? 1 : 0))[0]!;
        expect(resolveClaims(claims).get(first.cidr)?.node).toBe(first.node);
      }),
    );
  });
});
