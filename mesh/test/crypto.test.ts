import { describe, expect, it } from 'vitest';
import nacl from 'tweetnacl';
import { Keyring, MeshKeyError, VerifyCache, generateIdentity, identityFromSeed, signWith } from '../crypto.ts';

describe('identity (native Ed25519, same keys as tweetnacl)', () => {
  it('derives the same public key as tweetnacl from a seed, and signatures cross-verify', () => {
    const seed = nacl.randomBytes(32);
    const id = identityFromSeed(seed);
    const kp = nacl.sign.keyPair.fromSeed(seed);
    expect(Buffer.from(id.publicKey).equals(Buffer.from(kp.publicKey))).toBe(true);
    const msg = new TextEncoder().encode('weft');
    const sig = signWith(id, msg);
    expect(nacl.sign.detached.verify(msg, sig, kp.publicKey)).toBe(true);
    const naclSig = nacl.sign.detached(msg, kp.secretKey);
    expect(new VerifyCache().verify(id.publicKey, msg, naclSig)).toBe(true);
  });

  it('generateIdentity round-trips through its seed', () => {
    const a = generateIdentity();
    const b = identityFromSeed(a.seed);
    expect(Buffer.from(a.publicKey).equals(Buffer.from(b.publicKey))).toBe(true);
  });

  it('rejects seeds of the wrong length', () => {
    expect(() => identityFromSeed(new Uint8Array(31))).toThrow(MeshKeyError);
  });

  it('verifies each distinct content once and caches failures too', () => {
    const id = generateIdentity();
    const cache = new VerifyCache();
    const msg = new Uint8Array([1, 2, 3]);
    const sig = signWith(id, msg);
    for (let i = 0; i < 10; i++) expect(cache.verify(id.publicKey, msg, sig)).toBe(true);
    expect(cache.verifications).toBe(1);
    expect(cache.hits).toBe(9);
    const bad = new Uint8Array(sig);
    bad[0]! ^= 1;
    expect(cache.verify(id.publicKey, msg, bad)).toBe(false);
    expect(cache.verify(id.publicKey, msg, bad)).toBe(false);
    expect(cache.verifications).toBe(2);
    expect(cache.verify(new Uint8Array(32), msg, sig)).toBe(false);
    expect(cache.verify(id.publicKey, msg, new Uint8Array(10))).toBe(false);
  });

  it('bounds parsed public keys on their own: more identities than the key bound still verify, and results stay cached', () => {
    const ids = [generateIdentity(), generateIdentity(), generateIdentity()];
    const cache = new VerifyCache(16, 1);
    const msg = new Uint8Array([7]);
    for (const id of ids) expect(cache.verify(id.publicKey, msg, signWith(id, msg))).toBe(true);
    for (const id of ids) expect(cache.verify(id.publicKey, msg, signWith(id, msg))).toBe(true);
    expect(cache.verifications).toBe(3);
    expect(cache.hits).toBe(3);
    const other = generateIdentity();
    expect(cache.verify(other.publicKey, msg, signWith(ids[0]!, msg))).toBe(false);
  });

  it('is bounded', () => {
    const id = generateIdentity();
    const cache = new VerifyCache(4);
    for (let i = 0; i < 20; i++) cache.verify(id.publicKey, new Uint8Array([i]), signWith(id, new Uint8Array([i])));
    expect(cache.verify(id.publicKey, new Uint8Array([0]), signWith(id, new Uint8Array([0])))).toBe(true);
    expect(cache.verifications).toBe(21);
  });
});

describe('keyring', () => {
  const k1 = new Uint8Array(32).fill(1);
  const k2 = new Uint8Array(32).fill(2);
  const k3 = new Uint8Array(32).fill(3);
  const msg = new TextEncoder().encode('gossip');

  it('seals with a fresh nonce each time and opens', () => {
    const r = new Keyring(k1);
    const a = r.seal(msg);
    const b = r.seal(msg);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
    expect(new TextDecoder().decode(r.open(a))).toBe('gossip');
  });

  it('rotates without a partition: install, use, remove', () => {
    const oldNode = new Keyring(k1);
    const newNode = new Keyring(k1);
    newNode.install(k2);
    // Phase 1: k2 installed everywhere, k1 still primary: both directions work.
    oldNode.install(k2);
    expect(oldNode.open(newNode.seal(msg))).toBeDefined();
    // Phase 2: one member switches its primary to k2; the other (k1 primary, k2 installed) still reads it.
    newNode.use(k2);
    expect(oldNode.open(newNode.seal(msg))).toBeDefined();
    expect(newNode.open(oldNode.seal(msg))).toBeDefined();
    // Phase 3: everyone on k2, k1 removed.
    oldNode.use(k2);
    oldNode.remove(k1);
    newNode.remove(k1);
    expect(newNode.open(oldNode.seal(msg))).toBeDefined();
    const stale = new Keyring(k1);
    expect(newNode.open(stale.seal(msg))).toBeUndefined();
    expect(() => newNode.remove(k2)).toThrow(MeshKeyError);
  });

  it('fails closed on wrong keys, tampering, truncation and bad versions', () => {
    const r = new Keyring(k1, [k2]);
    const other = new Keyring(k3);
    expect(r.open(other.seal(msg))).toBeUndefined();
    const s = r.seal(msg);
    const t = new Uint8Array(s);
    t[t.length - 1]! ^= 0xff;
    expect(r.open(t)).toBeUndefined();
    expect(r.open(s.subarray(0, 20))).toBeUndefined();
    const v = new Uint8Array(s);
    v[0] = 9;
    expect(r.open(v)).toBeUndefined();
    expect(() => new Keyring(new Uint8Array(16))).toThrow(MeshKeyError);
  });
});
