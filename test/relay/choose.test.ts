import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chooseRelay, pairKey, relayWeight } from '../../src/relay/choose.ts';

const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/);

describe('chooseRelay (rendezvous hashing)', () => {
  it('is the same for {a, b} and {b, a} and for any candidate order, never a or b, undefined without candidates', () => {
    fc.assert(
      fc.property(name, name, fc.uniqueArray(name, { maxLength: 12 }), fc.integer(), (a, b, cands, seed) => {
        const shuffled = [...cands].sort((x, y) => ((relayWeight('s', String(seed), x) < relayWeight('s', String(seed), y)) ? -1 : 1));
        const r = chooseRelay(a, b, cands);
        expect(chooseRelay(b, a, shuffled)).toBe(r);
        if (r !== undefined) expect([a, b]).not.toContain(r);
        if (cands.filter((c) => c !== a && c !== b).length === 0) expect(r).toBeUndefined();
        else expect(cands).toContain(r);
      }),
    );
  });

  it('moves only the pairs a removed candidate held', () => {
    fc.assert(
      fc.property(fc.uniqueArray(name, { minLength: 3, maxLength: 10 }), fc.array(fc.tuple(name, name), { minLength: 1, maxLength: 30 }), (cands, pairs) => {
        const gone = cands[0]!;
        const rest = cands.slice(1);
        for (const [a, b] of pairs) {
          const before = chooseRelay(a, b, cands);
          if (before !== gone) expect(chooseRelay(a, b, rest)).toBe(before);
        }
      }),
    );
  });

  it('spreads pairs over candidates roughly evenly (every one of 5 candidates gets 12-28% of 2,000 pairs)', () => {
    const cands = ['r1', 'r2', 'r3', 'r4', 'r5'];
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const r = chooseRelay(`a${i}`, `b${i}`, cands)!;
      counts.set(r, (counts.get(r) ?? 0) + 1);
    }
    for (const c of cands) {
      expect(counts.get(c) ?? 0).toBeGreaterThan(240);
      expect(counts.get(c) ?? 0).toBeLessThan(560);
    }
  });

  it('pairKey is order-free', () => {
    expect(pairKey('b', 'a')).toBe(pairKey('a', 'b'));
    expect(pairKey('a', 'b')).not.toBe(pairKey('a', 'c'));
  });
});
