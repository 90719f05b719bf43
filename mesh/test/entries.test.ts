import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compareEntries, entryId, entrySigningBytes, mergeEntry, mergeStores } from '../entries.ts';
import type { SignedEntry } from '../entries.ts';
import { VerifyCache, generateIdentity, signWith } from '../crypto.ts';

const entryArb = fc.record({
  owner: fc.constantFrom('a', 'b'),
  key: fc.constantFrom('node', 'pod/x', 'pod/y'),
  version: fc.integer({ min: 1, max: 5 }),
  expiresAt: fc.constantFrom(0, 100),
  deleted: fc.boolean(),
  payload: fc.uint8Array({ maxLength: 3 }),
  signature: fc.uint8Array({ minLength: 64, maxLength: 64 }),
}).map((e): SignedEntry => (e.deleted ? { ...e, payload: new Uint8Array(0) } : e));

const storeArb = fc.array(entryArb, { maxLength: 8 }).map((es) => {
  const m = new Map<string, SignedEntry>();
  for (const e of es) m.set(entryId(e.owner, e.key), mergeEntry(m.get(entryId(e.owner, e.key)), e)!);
  return m;
});

function same(a: ReadonlyMap<string, SignedEntry>, b: ReadonlyMap<string, SignedEntry>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w || compareEntries(v, w) !== 0) return false;
  }
  return true;
}

describe('entry merge laws', () => {
  it('mergeEntry is commutative, associative and idempotent', () => {
    fc.assert(
      fc.property(entryArb, entryArb, entryArb, (a, b, c) => {
        expect(compareEntries(mergeEntry(a, b)!, mergeEntry(b, a)!)).toBe(0);
        expect(compareEntries(mergeEntry(mergeEntry(a, b), c)!, mergeEntry(a, mergeEntry(b, c))!)).toBe(0);
        expect(mergeEntry(a, a)).toBe(a);
      }),
      { numRuns: 2000 },
    );
  });

  it('mergeStores is commutative, associative and idempotent', () => {
    fc.assert(
      fc.property(storeArb, storeArb, storeArb, (a, b, c) => {
        expect(same(mergeStores(a, b), mergeStores(b, a))).toBe(true);
        expect(same(mergeStores(mergeStores(a, b), c), mergeStores(a, mergeStores(b, c)))).toBe(true);
        expect(same(mergeStores(a, a), a)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('a tombstone beats every older copy, whatever order copies arrive in', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { minLength: 1, maxLength: 10 }), (copies) => {
        const top = Math.max(...copies.map((c) => c.version)) + 1;
        const tomb: SignedEntry = { ...copies[0]!, version: top, deleted: true, payload: new Uint8Array(0) };
        for (const order of [copies, [...copies].reverse()]) {
          let cur: SignedEntry | undefined = undefined;
          for (const c of [...order.slice(0, 1), tomb, ...order.slice(1)]) cur = mergeEntry(cur, { ...c, owner: tomb.owner, key: tomb.key });
          expect(cur!.deleted).toBe(true);
          expect(cur!.version).toBe(top);
        }
      }),
    );
  });

  it('signing bytes bind every field, so a changed field fails verification', () => {
    const id = generateIdentity();
    const cache = new VerifyCache();
    const e = { key: 'node', version: 7, payload: new Uint8Array([1, 2, 3]), expiresAt: 0, deleted: false };
    const sig = signWith(id, entrySigningBytes('n1', e));
    expect(cache.verify(id.publicKey, entrySigningBytes('n1', e), sig)).toBe(true);
    expect(cache.verify(id.publicKey, entrySigningBytes('n2', e), sig)).toBe(false);
    expect(cache.verify(id.publicKey, entrySigningBytes('n1', { ...e, version: 8 }), sig)).toBe(false);
    expect(cache.verify(id.publicKey, entrySigningBytes('n1', { ...e, payload: new Uint8Array([1, 2, 4]) }), sig)).toBe(false);
    expect(cache.verify(id.publicKey, entrySigningBytes('n1', { ...e, expiresAt: 5 }), sig)).toBe(false);
    expect(cache.verify(id.publicKey, entrySigningBytes('n1', { ...e, key: 'pod/a' }), sig)).toBe(false);
  });
});
