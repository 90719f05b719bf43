/**
 * The Secret mirror's pure rules (src/token/mirror.ts) and the restored-entry rules in the store: merge is
 * commutative, associative and idempotent (writers converge), encoding is deterministic, hostile Secret
 * values are dropped, a restored copy never beats the original and never hands out spent uses again.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MeshSnapshot } from '../../mesh/api.ts';
import { generateIdentity } from '../../mesh/crypto.ts';
import {
  decodeMirror,
  encodeMirror,
  mergeMirrors,
  mirrorKey,
  mirrorSealKey,
  openVerifier,
  parseMirrored,
  planRestore,
  sealVerifier,
  type MirrorToken,
} from '../../src/token/mirror.ts';
import { collectTokens, parseTokenEntry, tokenEntryWrite, type TokenEntry } from '../../src/token/store.ts';
import { tokenVerifier } from '../../src/token/token.ts';
import { renderTokens } from '../../src/cli/token.ts';
import { listTokens } from '../../src/token/store.ts';
import { FakeMember } from './fake-mesh.ts';

const NOW = 1_800_000_000_000;
const KEY = mirrorSealKey(new Uint8Array(32).fill(9));
const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const enc = new TextEncoder();

const arbToken: fc.Arbitrary<MirrorToken> = fc
  .record({
    id: fc.constantFrom('aaaaaaaa', 'bbbbbbbb', 'cccccccc', 'dddddddd'),
    issuedBy: fc.constantFrom('node-a', 'node-b'),
    createdAt: fc.constantFrom(NOW - 2000, NOW - 1000),
    spent: fc.integer({ min: 0, max: 3 }),
    revokedAt: fc.option(fc.integer({ min: NOW - 1000, max: NOW }), { nil: undefined }),
    by: fc.constantFrom('node-a', 'node-c'),
    redeemed: fc.subarray(['e1', 'e2', 'e3']),
  })
  .map((r) => {
    // A token's entry never changes: expiry and uses follow from (id, issuer, creation); only its state varies.
    const h = r.id.charCodeAt(0) + r.issuedBy.charCodeAt(5) + (r.createdAt % 7000) / 1000;
    const ttl = [-1000, 60_000, 3600_000][h % 3]!;
    const uses = 1 + (h % 3 === 0 ? 2 : h % 2);
    const verifier = tokenVerifier(r.id, 'x'.repeat(24));
    return {
      verifier,
      token: {
        format: 1 as const,
        id: r.id,
        issuedBy: r.issuedBy,
        createdAt: r.createdAt,
        expiresAt: r.createdAt + ttl,
        uses,
        sealedVerifier: sealVerifier(KEY, r.id, verifier),
        ...(r.revokedAt !== undefined ? { revoked: { revokedAt: r.revokedAt, by: r.by } } : {}),
        spent: Math.min(r.spent, uses),
        redeemedBy: [...r.redeemed].sort(),
      },
    };
  });
const arbMirror = fc.array(arbToken, { maxLength: 6 }).map((ts) => new Map(ts.map((t) => [t.token.id, t])));
const data = (m: ReadonlyMap<string, MirrorToken>) => encodeMirror(m, KEY).data;

describe('mirror merge and encoding', () => {
  it('property: merge is commutative, associative and idempotent on the encoded Secret data', () => {
    fc.assert(
      fc.property(arbMirror, arbMirror, arbMirror, (a, b, c) => {
        expect(data(mergeMirrors(a, b, NOW))).toEqual(data(mergeMirrors(b, a, NOW)));
        expect(data(mergeMirrors(mergeMirrors(a, b, NOW), c, NOW))).toEqual(data(mergeMirrors(a, mergeMirrors(b, c, NOW), NOW)));
        const ab = mergeMirrors(a, b, NOW);
        expect(data(mergeMirrors(ab, ab, NOW))).toEqual(data(ab));
        // Decoding what was written and merging it again changes nothing (the sync's "no write" case).
        expect(data(mergeMirrors(decodeMirror(data(ab), [KEY]).tokens, b, NOW))).toEqual(data(ab));
      }),
    );
  });

  it('property: revocations and spent uses never go backwards; expired tokens are pruned', () => {
    fc.assert(
      fc.property(arbMirror, arbMirror, (a, b) => {
        const m = mergeMirrors(a, b, NOW);
        for (const [id, t] of m) {
          expect(t.token.expiresAt).toBeGreaterThan(NOW);
          for (const side of [a.get(id), b.get(id)]) {
            if (!side || side.token.expiresAt <= NOW || side.token.createdAt !== t.token.createdAt || side.token.issuedBy !== t.token.issuedBy) continue;
            if (side.token.revoked) expect(t.token.revoked!.revokedAt).toBeLessThanOrEqual(side.token.revoked.revokedAt);
            expect(t.token.spent).toBeGreaterThanOrEqual(side.token.spent);
          }
        }
        for (const id of new Set([...a.keys(), ...b.keys()])) if ((a.get(id) ?? b.get(id))!.token.expiresAt > NOW && !m.has(id)) expect.unreachable(`lost ${id}`);
      }),
    );
  });

  it('seals deterministically; only the mesh-derived key opens; hostile values are dropped, not thrown', () => {
    const v = tokenVerifier('aaaaaaaa', 'y'.repeat(24));
    expect(sealVerifier(KEY, 'aaaaaaaa', v)).toBe(sealVerifier(KEY, 'aaaaaaaa', v));
    expect(openVerifier([mirrorSealKey(new Uint8Array(32).fill(1)), KEY], sealVerifier(KEY, 'aaaaaaaa', v))).toEqual(v);
    expect(openVerifier([mirrorSealKey(new Uint8Array(32).fill(1))], sealVerifier(KEY, 'aaaaaaaa', v))).toBeUndefined();
    const good = encodeMirror(new Map([['aaaaaaaa', { verifier: v, token: { format: 1, id: 'aaaaaaaa', issuedBy: 'n', createdAt: NOW, expiresAt: NOW + 1000, uses: 1, sealedVerifier: '', spent: 0, redeemedBy: [] } }]]), KEY).data;
    const hostile: Record<string, string> = {
      ...good,
      'token-bbbbbbbb': 'not base64 json',
      'token-cccccccc': Buffer.from(JSON.stringify({ format: 1, id: 'dddddddd' })).toString('base64'),
      'token-eeeeeeee': Buffer.from(JSON.stringify({ format: 1, id: 'eeeeeeee', issuedBy: 'n', createdAt: 1, expiresAt: 2, uses: 5, sealedVerifier: 'x', spent: 9, redeemedBy: [] })).toString('base64'),
      'token-ffffffff': Buffer.from('null').toString('base64'),
      'other-key': 'kept by the writer, ignored by the mirror',
    };
    const d = decodeMirror(hostile, [KEY]);
    expect([...d.tokens.keys()]).toEqual(['aaaaaaaa']);
    expect([...d.malformed].sort()).toEqual(['token-bbbbbbbb', 'token-cccccccc', 'token-eeeeeeee', 'token-ffffffff']);
    expect(parseMirrored(mirrorKey('aaaaaaaa'), 'x'.repeat(100_000))).toBeUndefined();
  });
});

describe('restored token entries in the store', () => {
  const entry = (over: Partial<TokenEntry> = {}): TokenEntry => ({ format: 1, id: 'aaaaaaaa', verifier: b64(tokenVerifier('aaaaaaaa', 'z'.repeat(24))), createdAt: NOW, expiresAt: NOW + 3600_000, uses: 2, issuedBy: 'node-a', ...over });
  const payload = (e: object) => enc.encode(JSON.stringify(e));

  it('a restored copy is signed by its restorer, not the issuer; nobody else may claim either', () => {
    expect(parseTokenEntry(payload(entry()), 'node-a')).toBeDefined();
    expect(parseTokenEntry(payload(entry()), 'node-x')).toBeUndefined();
    expect(parseTokenEntry(payload(entry({ restoredBy: 'node-c', spentBefore: 1 })), 'node-c')).toMatchObject({ issuedBy: 'node-a', restoredBy: 'node-c', spentBefore: 1 });
    expect(parseTokenEntry(payload(entry({ restoredBy: 'node-c' })), 'node-x')).toBeUndefined();
    expect(parseTokenEntry(payload(entry({ restoredBy: 'node-c', spentBefore: 3 })), 'node-c')).toBeUndefined();
    expect(parseTokenEntry(payload({ ...entry(), spentBefore: 1 }), 'node-a')).toBeUndefined();
  });

  it('the original beats a restored copy; a restored copy counts the uses spent before the restore', () => {
    const now = () => NOW;
    const a = new FakeMember('node-a', b64(generateIdentity().publicKey), now);
    const c = new FakeMember('node-c', b64(generateIdentity().publicKey), now);
    const restored = tokenEntryWrite(entry({ restoredBy: 'node-c', spentBefore: 1 }), NOW);
    c.setLocal(restored.key, restored.payload, restored.ttlMs);
    expect(collectTokens(c.snapshot()).get('aaaaaaaa')).toMatchObject({ usesLeft: 1, entry: { restoredBy: 'node-c' } });
    expect(renderTokens(listTokens(c.snapshot(), NOW), NOW)).toMatch(/aaaaaaaa\s+valid\s+in 1h0m\s+1\/2\s+node-a \(restored by node-c\)/);
    const original = tokenEntryWrite(entry(), NOW);
    a.setLocal(original.key, original.payload, original.ttlMs);
    const both: MeshSnapshot = { self: 'node-a', members: [...a.snapshot().members, ...c.snapshot().members] };
    expect(collectTokens(both).get('aaaaaaaa')).toMatchObject({ usesLeft: 2, entry: { issuedBy: 'node-a' } });
    expect(collectTokens(both).get('aaaaaaaa')!.entry.restoredBy).toBeUndefined();
    // Nothing to restore when the mesh has the token.
    const m = new Map([['aaaaaaaa', { verifier: tokenVerifier('aaaaaaaa', 'z'.repeat(24)), token: { format: 1 as const, id: 'aaaaaaaa', issuedBy: 'node-a', createdAt: NOW, expiresAt: NOW + 3600_000, uses: 2, sealedVerifier: '', spent: 1, redeemedBy: [] } }]]);
    expect(planRestore(m, both, 'node-a', NOW).restoredIds).toEqual([]);
    expect(planRestore(m, { self: 'node-z', members: [] }, 'node-z', NOW).restoredIds).toEqual(['aaaaaaaa']);
  });
});
