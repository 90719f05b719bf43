/**
 * The two keys of the mesh: the shared mesh key that seals every packet and stream (tweetnacl
 * secretbox, kept in a {@link Keyring} so it can rotate), and each member's ed25519 identity that
 * signs what it owns (node:crypto native Ed25519, with a {@link VerifyCache} so each distinct signed
 * content is verified once).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomFillSync, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';

/** A key or signature had the wrong shape. */
export class MeshKeyError extends Error {
  override name = 'MeshKeyError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`mesh key: ${message}`, options);
  }
}

/** A member's ed25519 signing identity. `seed` is secret: never log it. */
export interface Identity {
  /** The 32-byte ed25519 seed (the secret). */
  readonly seed: Uint8Array;
  /** The 32-byte ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The native private key object built from `seed`. */
  readonly privateKey: KeyObject;
}

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Builds an identity from a 32-byte ed25519 seed (the same seed tweetnacl's `sign.keyPair.fromSeed` takes). */
export function identityFromSeed(seed: Uint8Array): Identity {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new MeshKeyError('identity seed must be 32 bytes');
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
  const publicKey = new Uint8Array(Buffer.from(jwk.x as string, 'base64url'));
  return { seed: new Uint8Array(seed), publicKey, privateKey };
}

/** Generates a fresh random identity. */
export function generateIdentity(): Identity {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  return identityFromSeed(new Uint8Array(Buffer.from(jwk.d as string, 'base64url')));
}

/** Signs `message` with the identity (64-byte ed25519 signature). */
export function signWith(identity: Identity, message: Uint8Array): Uint8Array {
  return new Uint8Array(sign(null, message, identity.privateKey));
}

/** Builds a native public key object from a raw 32-byte ed25519 public key. */
export function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new MeshKeyError('ed25519 public key must be 32 bytes');
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** Default bound of {@link VerifyCache} results: recent verifications, for copies that arrive again before they are merged. */
export const DEFAULT_VERIFY_RESULTS = 4096;

/** Default bound of {@link VerifyCache} parsed public keys: one per member, so a mesh up to this size never re-parses. */
export const DEFAULT_VERIFY_KEYS = 16_384;

/**
 * Verifies ed25519 signatures, remembering the outcome per content hash (public key, message,
 * signature) so that a copy arriving again before it was merged (or a forged one, again) is not
 * verified twice. Bounded: the oldest results are forgotten past `maxEntries`, the oldest parsed
 * public keys past `maxKeys`. May be shared between simulated members (it holds no secrets).
 *
 * A member verifies only versions newer than the one it holds, so once merged a result is rarely
 * asked for again: the default keeps the most recent {@link DEFAULT_VERIFY_RESULTS} (about 0.4 MB).
 * A larger bound would only hold superseded versions on a long-running agent (about 10 MB at 100,000).
 */
export class VerifyCache {
  private readonly results = new Map<string, boolean>();
  private readonly keys = new Map<string, KeyObject>();
  private readonly maxEntries: number;
  private readonly maxKeys: number;
  /** Number of real signature verifications performed (cache misses). */
  verifications = 0;
  /** Number of lookups answered from the cache. */
  hits = 0;

  constructor(maxEntries = DEFAULT_VERIFY_RESULTS, maxKeys = DEFAULT_VERIFY_KEYS) {
    this.maxEntries = maxEntries;
    this.maxKeys = maxKeys;
  }

  /** True if `signature` is a valid ed25519 signature of `message` by `publicKey`. Never throws. */
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    const h = createHash('sha256').update(publicKey).update(signature).update(message).digest('base64');
    const cached = this.results.get(h);
    if (cached !== undefined) {
      this.hits++;
      return cached;
    }
    let ok = false;
    try {
      const kid = Buffer.from(publicKey).toString('base64');
      let key = this.keys.get(kid);
      if (key === undefined) {
        key = publicKeyObject(publicKey);
        if (this.keys.size >= this.maxKeys) this.keys.delete(this.keys.keys().next().value!);
        this.keys.set(kid, key);
      }
      ok = verify(null, message, key, signature);
    } catch {
      ok = false;
    }
    this.verifications++;
    if (this.results.size >= this.maxEntries) this.results.delete(this.results.keys().next().value!);
    this.results.set(h, ok);
    return ok;
  }
}

/** Wire version byte of a sealed packet or stream frame. */
export const SEAL_VERSION = 1;
/** Bytes a seal adds: version byte, nonce, secretbox tag. */
export const SEAL_OVERHEAD = 1 + nacl.secretbox.nonceLength + nacl.secretbox.overheadLength;

/**
 * The mesh keys installed on a member. Seals with the primary key and opens with any installed key,
 * so a new key can be installed everywhere, then made primary, then the old one removed, without a
 * partition. Keys are secret: never log them.
 */
export class Keyring {
  private keys: Uint8Array[] = [];
  /** Random bytes drawn in bulk (one syscall per 1024 nonces); each nonce is used once. */
  private noncePool = new Uint8Array(0);
  private noncePos = 0;

  /** Creates a keyring whose primary is `primary`, with `others` also accepted for opening. */
  constructor(primary: Uint8Array, others: readonly Uint8Array[] = []) {
    this.install(primary);
    for (const k of others) this.install(k);
  }

  private static check(key: Uint8Array): void {
    if (!(key instanceof Uint8Array) || key.length !== nacl.secretbox.keyLength) throw new MeshKeyError('mesh key must be 32 bytes');
  }

  private indexOf(key: Uint8Array): number {
    return this.keys.findIndex((k) => Buffer.compare(k, key) === 0);
  }

  /** Adds a key used to open (not to seal); idempotent. */
  install(key: Uint8Array): void {
    Keyring.check(key);
    if (this.indexOf(key) < 0) this.keys.push(new Uint8Array(key));
  }

  /** Makes an installed (or new) key the primary sealing key. */
  use(key: Uint8Array): void {
    Keyring.check(key);
    const i = this.indexOf(key);
    const k = i >= 0 ? this.keys.splice(i, 1)[0]! : new Uint8Array(key);
    this.keys.unshift(k);
  }

  /** Removes a key; the primary cannot be removed. */
  remove(key: Uint8Array): void {
    const i = this.indexOf(key);
    if (i === 0) throw new MeshKeyError('cannot remove the primary key');
    if (i > 0) this.keys.splice(i, 1);
  }

  /** The primary key. */
  primary(): Uint8Array {
    return this.keys[0]!;
  }

  /** Number of installed keys. */
  get size(): number {
    return this.keys.length;
  }

  /** Seals `plain` with the primary key and a fresh random nonce: `[version][nonce][box]`. */
  seal(plain: Uint8Array): Uint8Array {
    const len = nacl.secretbox.nonceLength;
    if (this.noncePos + len > this.noncePool.length) {
      this.noncePool = randomFillSync(new Uint8Array(len * 1024));
      this.noncePos = 0;
    }
    const nonce = this.noncePool.subarray(this.noncePos, this.noncePos + len);
    this.noncePos += len;
    const box = nacl.secretbox(plain, nonce, this.keys[0]!);
    const out = new Uint8Array(1 + nonce.length + box.length);
    out[0] = SEAL_VERSION;
    out.set(nonce, 1);
    out.set(box, 1 + nonce.length);
    return out;
  }

  /** Opens a sealed buffer with any installed key, or returns undefined. Never throws. */
  open(sealed: Uint8Array): Uint8Array | undefined {
    if (sealed.length < SEAL_OVERHEAD || sealed[0] !== SEAL_VERSION) return undefined;
    const nonce = sealed.subarray(1, 1 + nacl.secretbox.nonceLength);
    const box = sealed.subarray(1 + nacl.secretbox.nonceLength);
    for (const k of this.keys) {
      const plain = nacl.secretbox.open(box, nonce, k);
      if (plain) return plain;
    }
    return undefined;
  }
}

/** Returns the nonce of a sealed buffer (for replay detection), or undefined if too short. */
export function sealNonce(sealed: Uint8Array): Uint8Array | undefined {
  return sealed.length >= SEAL_OVERHEAD ? sealed.subarray(1, 1 + nacl.secretbox.nonceLength) : undefined;
}
