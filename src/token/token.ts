/**
 * Join tokens (issue 7), pure. A token is `weft1.<id>.<secret>.<payload>`:
 * - `id`: 8 chars `[a-z0-9]`, public (listed, revoked, logged), like kubeadm's token id;
 * - `secret`: 24 chars `[a-z0-9]` (~124 bits), never published: the mesh only stores
 *   {@link tokenVerifier}(id, secret), and the join handshake mixes that verifier into its box key,
 *   so the secret itself never crosses the wire;
 * - `payload`: base64url of `[format u8][fingerprint 32][expires u32 s][uses u16][n u8][n x (len u8, "host:port")][mac 16]`,
 *   where `fingerprint` = SHA-256 of the mesh authority's ed25519 public key (see {@link deriveAuthority}), so a
 *   joiner authenticates whoever answers at a seed address before trusting it, and `mac` =
 *   HMAC-SHA256(secret, "weft-token-v1" | id | payload-without-mac)[0..16], so any changed byte (id, secret or
 *   payload) makes the token refuse to parse.
 *
 * Expiry and uses in the token are informational (a clear error before dialling); the mesh's token entry is
 * authoritative.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { identityFromSeed, type Identity } from '../../mesh/crypto.ts';

/** Token string prefix and format version. */
export const TOKEN_PREFIX = 'weft1';
/** Payload format byte. */
export const TOKEN_FORMAT = 1;
/** Largest accepted token string. */
export const MAX_TOKEN_LENGTH = 2048;
/** At most this many seed addresses in one token. */
export const MAX_SEEDS = 8;
/** At most this many uses per token. */
export const MAX_USES = 1000;
/** Longest token lifetime accepted at creation (30 days). */
export const MAX_TTL_MS = 30 * 24 * 3600_000;

const ID_RE = /^[a-z0-9]{8}$/;
const SECRET_RE = /^[a-z0-9]{24}$/;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const MAC_LEN = 16;

/** A token string is malformed or was tampered with. The message says which part is wrong; it never echoes the secret. */
export class TokenFormatError extends Error {
  override name = 'TokenFormatError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`token: ${message}`, options);
  }
}

/** What a parsed token holds. `secret` is secret: never log it (log `id`). */
export interface JoinToken {
  readonly id: string;
  readonly secret: string;
  /** SHA-256 of the mesh authority's ed25519 public key. */
  readonly fingerprint: Uint8Array;
  /** Expiry, ms since the epoch (second resolution). */
  readonly expiresAt: number;
  readonly uses: number;
  /** Join listener addresses, "host:port" or "[ipv6]:port". */
  readonly seeds: readonly string[];
}

/** A random token id (8 chars of `[a-z0-9]`). `random(n)` returns n random bytes. */
export function randomTokenId(random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))): string {
  return randomChars(8, random);
}

/** A random token secret (24 chars of `[a-z0-9]`, ~124 bits). */
export function randomTokenSecret(random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))): string {
  return randomChars(24, random);
}

function randomChars(n: number, random: (n: number) => Uint8Array): string {
  let out = '';
  while (out.length < n) {
    const bytes = random(n * 2);
    // Rejection sampling keeps the alphabet uniform (252 = 7 * 36).
    for (const b of bytes) if (b < 252 && out.length < n) out += ALPHABET[b % 36];
  }
  return out;
}

/** Validates one "host:port" / "[ipv6]:port" seed address; returns it canonical or throws {@link TokenFormatError}. */
export function validateSeed(s: string): string {
  if (typeof s !== 'string' || s.length === 0 || s.length > 255) throw new TokenFormatError('seed address must be 1-255 characters');
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(s);
  if (!m) throw new TokenFormatError(`seed ${JSON.stringify(s)} is not host:port or [ipv6]:port`);
  const host = m[1]!;
  const port = Number(m[2]);
  if (port < 1 || port > 65_535) throw new TokenFormatError(`seed ${JSON.stringify(s)} has a port outside 1-65535`);
  const fam = isIP(host);
  if (s.startsWith('[') && fam !== 6) throw new TokenFormatError(`seed ${JSON.stringify(s)}: only IPv6 addresses go in brackets`);
  if (fam === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(host)) throw new TokenFormatError(`seed ${JSON.stringify(s)}: host is neither an IP nor a DNS name`);
  return fam === 6 ? `[${host.toLowerCase()}]:${port}` : `${host}:${port}`;
}

/**
 * The value the mesh stores instead of the secret, and the pre-shared key the join handshake mixes
 * into its box key: SHA-256("weft-token-verifier-v1" | id | secret). Knowing it admits nothing
 * without a live, unspent token entry, and only members (who hold the mesh key anyway) see it.
 */
export function tokenVerifier(id: string, secret: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update('weft-token-verifier-v1\0').update(id).update('\0').update(secret).digest());
}

/**
 * The mesh authority: an ed25519 identity derived from the mesh key (HMAC-SHA256(meshKey,
 * "weft mesh authority v1") as seed). Every member holds the mesh key, so every member can prove it
 * is the mesh; someone who only holds a seed's address cannot. Rotating the mesh key changes it
 * (tokens issued before the rotation stop authenticating).
 */
export function deriveAuthority(meshKey: Uint8Array): Identity {
  if (meshKey.length !== 32) throw new TokenFormatError('mesh key must be 32 bytes');
  const seed = createHmac('sha256', meshKey).update('weft mesh authority v1').digest();
  return identityFromSeed(new Uint8Array(seed));
}

/** SHA-256 of an ed25519 public key: what a token embeds to name the mesh. */
export function authorityFingerprint(publicKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update('weft-authority-v1\0').update(publicKey).digest());
}

function mac(id: string, secret: string, body: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', secret).update('weft-token-v1\0').update(id).update('\0').update(body).digest()).subarray(0, MAC_LEN);
}

/** Encodes a token. Validates every field; throws {@link TokenFormatError}. */
export function formatToken(t: JoinToken): string {
  if (!ID_RE.test(t.id)) throw new TokenFormatError('id must be 8 characters of [a-z0-9]');
  if (!SECRET_RE.test(t.secret)) throw new TokenFormatError('secret must be 24 characters of [a-z0-9]');
  if (t.fingerprint.length !== 32) throw new TokenFormatError('fingerprint must be 32 bytes');
  if (!Number.isInteger(t.uses) || t.uses < 1 || t.uses > MAX_USES) throw new TokenFormatError(`uses must be 1-${MAX_USES}`);
  const exp = Math.floor(t.expiresAt / 1000);
  if (!Number.isInteger(exp) || exp < 1 || exp > 0xffffffff) throw new TokenFormatError('expiry out of range');
  if (t.seeds.length < 1 || t.seeds.length > MAX_SEEDS) throw new TokenFormatError(`a token carries 1-${MAX_SEEDS} seed addresses`);
  const seeds = t.seeds.map((s) => Buffer.from(validateSeed(s), 'ascii'));
  const body = Buffer.alloc(1 + 32 + 4 + 2 + 1 + seeds.reduce((n, s) => n + 1 + s.length, 0));
  let o = 0;
  body[o++] = TOKEN_FORMAT;
  body.set(t.fingerprint, o);
  o += 32;
  body.writeUInt32BE(exp, o);
  o += 4;
  body.writeUInt16BE(t.uses, o);
  o += 2;
  body[o++] = seeds.length;
  for (const s of seeds) {
    body[o++] = s.length;
    body.set(s, o);
    o += s.length;
  }
  const full = Buffer.concat([body, mac(t.id, t.secret, body)]);
  return `${TOKEN_PREFIX}.${t.id}.${t.secret}.${full.toString('base64url')}`;
}

/**
 * Parses and checks a token string: shape, MAC (tampering), payload bounds, seed addresses.
 * Never checks expiry (see {@link tokenExpired}); throws {@link TokenFormatError} with a clear reason.
 */
export function parseToken(input: string): JoinToken {
  if (typeof input !== 'string') throw new TokenFormatError('not a string');
  const s = input.trim();
  if (s.length > MAX_TOKEN_LENGTH) throw new TokenFormatError(`longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = s.split('.');
  if (parts[0] !== TOKEN_PREFIX) throw new TokenFormatError(`does not start with "${TOKEN_PREFIX}." (not a weft join token, or from an unsupported version)`);
  if (parts.length !== 4) throw new TokenFormatError(`has ${parts.length} dot-separated parts, expected 4 (${TOKEN_PREFIX}.<id>.<secret>.<payload>)`);
  const [, id, secret, payload] = parts as [string, string, string, string];
  if (!ID_RE.test(id)) throw new TokenFormatError('id is not 8 characters of [a-z0-9]');
  if (!SECRET_RE.test(secret)) throw new TokenFormatError('secret is not 24 characters of [a-z0-9]');
  if (!/^[A-Za-z0-9_-]+$/.test(payload)) throw new TokenFormatError('payload is not base64url');
  const raw = Buffer.from(payload, 'base64url');
  if (raw.toString('base64url') !== payload) throw new TokenFormatError('payload is not canonical base64url (damaged?)');
  if (raw.length < 1 + 32 + 4 + 2 + 1 + MAC_LEN) throw new TokenFormatError('payload too short (truncated?)');
  const body = raw.subarray(0, raw.length - MAC_LEN);
  const got = raw.subarray(raw.length - MAC_LEN);
  if (!timingSafeEqual(got, mac(id, secret, body))) throw new TokenFormatError('checksum mismatch: the token was altered or mistyped');
  if (body[0] !== TOKEN_FORMAT) throw new TokenFormatError(`payload format ${body[0]} is not supported (expected ${TOKEN_FORMAT})`);
  let o = 1;
  const fingerprint = new Uint8Array(body.subarray(o, o + 32));
  o += 32;
  const exp = body.readUInt32BE(o);
  o += 4;
  const uses = body.readUInt16BE(o);
  o += 2;
  const n = body[o++]!;
  if (uses < 1 || uses > MAX_USES) throw new TokenFormatError(`uses ${uses} out of range`);
  if (exp < 1) throw new TokenFormatError('expiry out of range');
  if (n < 1 || n > MAX_SEEDS) throw new TokenFormatError(`carries ${n} seed addresses, expected 1-${MAX_SEEDS}`);
  const seeds: string[] = [];
  for (let i = 0; i < n; i++) {
    if (o >= body.length) throw new TokenFormatError('payload truncated in the seed list');
    const len = body[o++]!;
    if (o + len > body.length) throw new TokenFormatError('payload truncated in the seed list');
    const seed = body.subarray(o, o + len).toString('ascii');
    o += len;
    seeds.push(validateSeed(seed));
  }
  if (o !== body.length) throw new TokenFormatError('trailing bytes after the seed list');
  return { id, secret, fingerprint, expiresAt: exp * 1000, uses, seeds };
}

/** True when the token's embedded expiry has passed at `now` (ms). */
export function tokenExpired(t: Pick<JoinToken, 'expiresAt'>, now: number): boolean {
  return now >= t.expiresAt;
}

/** Parses a token id alone (for `weft token revoke <id>`), or throws {@link TokenFormatError}. */
export function parseTokenId(s: string): string {
  const v = typeof s === 'string' ? s.trim() : '';
  if (!ID_RE.test(v)) throw new TokenFormatError('id must be 8 characters of [a-z0-9]');
  return v;
}
