/**
 * The join handshake (issue 7): an authenticated key exchange between a joiner holding a token and a
 * seed (any member). Pure message construction and checking; sockets live in `join-server.ts` and
 * `join-client.ts`. Four JSON frames:
 *
 * 1. joiner -> seed `hello`     {id, eph, nonce}: token id, X25519 ephemeral key, 32 random bytes.
 * 2. seed -> joiner `challenge` {eph, nonce, authority, sig}: the seed's ephemeral key and nonce, the mesh
 *    authority's ed25519 key and its signature over the transcript hash `th`. The joiner checks that the key's
 *    fingerprint is the token's and the signature: only a holder of the mesh key can answer, so a stolen seed
 *    address cannot impersonate the mesh. (Or `refuse`, signed the same way.)
 * 3. joiner -> seed `request`   secretbox under `K` of {name, identityKey, identitySig, podCIDRs?}. `K` = HMAC-SHA256(verifier,
 *    tag | nacl.box.before(peerEph, myEph) | th): the token secret is mixed in through its verifier, so only a
 *    holder of the secret can seal this box, and the secret never crosses the wire. A box that does not open
 *    is a forged token.
 * 4. seed -> joiner `admit`     secretbox under `K` of {meshKey, admission, admissionSig, admitterKey, seeds};
 *    or a signed `refuse` with a reason code.
 *
 * Forward secrecy comes from the ephemeral X25519 keys: a token captured later (spent or not) opens no
 * recorded session.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import nacl from 'tweetnacl';
import { VerifyCache, signWith, type Identity } from '../../mesh/crypto.ts';
import { authorityFingerprint } from './token.ts';
import { parseAdmission, type Admission } from './store.ts';
import { parseJoinPodCidrs } from './cidr.ts';

/** Largest frame either side accepts. */
export const MAX_FRAME_BYTES = 16 * 1024;

/** Refusal reasons a joiner can see. */
export const REFUSAL_CODES = ['unknown', 'expired', 'revoked', 'spent', 'forged', 'rate-limited', 'name-taken', 'node-revoked', 'bad-request', 'unavailable', 'cidr-overlap', 'cidr-outside'] as const;
/** One refusal reason. */
export type RefusalCode = (typeof REFUSAL_CODES)[number];

/** A handshake message was malformed or failed a check. */
export class HandshakeError extends Error {
  override name = 'HandshakeError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`join handshake: ${message}`, options);
  }
}

const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64');
const B64_32 = /^[A-Za-z0-9+/]{43}=$/;
const verifier = new VerifyCache(1024);

function bytes32(v: unknown, what: string): Uint8Array {
  if (typeof v !== 'string' || !B64_32.test(v)) throw new HandshakeError(`${what} is not a base64 32-byte value`);
  return new Uint8Array(Buffer.from(v, 'base64'));
}

/** A joiner's or seed's ephemeral state for one handshake. Secret: never log. */
export interface Ephemeral {
  readonly keyPair: nacl.BoxKeyPair;
  readonly nonce: Uint8Array;
}

/** Fresh ephemeral X25519 key pair and nonce. `random(n)` returns n random bytes. */
export function newEphemeral(random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))): Ephemeral {
  return { keyPair: nacl.box.keyPair.fromSecretKey(random(32)), nonce: random(32) };
}

/** The first message. */
export interface Hello {
  readonly t: 'hello';
  readonly v: 1;
  readonly id: string;
  readonly eph: string;
  readonly nonce: string;
  /** Base64 authority fingerprint the token names, so a seed holding several mesh keys answers with the right one. */
  readonly fp?: string;
}

/** The seed's answer to `hello`. */
export interface Challenge {
  readonly t: 'challenge';
  readonly eph: string;
  readonly nonce: string;
  readonly authority: string;
  readonly sig: string;
}

/** A refusal, signed by the mesh authority over the joiner's nonce, code and message. */
export interface Refuse {
  readonly t: 'refuse';
  readonly code: RefusalCode;
  readonly msg: string;
  readonly authority: string;
  readonly sig: string;
}

/** A sealed message (request or admit). */
export interface Sealed {
  readonly t: 'request' | 'admit';
  readonly box: string;
}

/** What the joiner asks for (inside `request`). */
export interface JoinRequest {
  readonly name: string;
  /** Base64 ed25519 identity key the joiner will use in the mesh. */
  readonly identityKey: string;
  /**
   * Base64 signature by that identity over "weft-join-identity-v1\0" | th | name: proves the joiner holds
   * the key it asks to be admitted with (nobody can get another node's key admitted).
   */
  readonly identitySig: string;
  /**
   * The joiner's fixed pod CIDRs (`--pod-cidr`), canonical, at most 2; absent = it claims a block through the
   * mesh. The seed refuses the join (token not spent) when one overlaps a held block or lies outside the
   * cluster CIDRs. Authenticated by the session key like the rest of the request.
   */
  readonly podCIDRs?: readonly string[];
}

/** The bytes a joiner signs with its identity to prove possession. */
export function identityProofMessage(th: Uint8Array, name: string): Uint8Array {
  return concat('weft-join-identity-v1\0', Buffer.concat([th, Buffer.from(name, 'utf8')]));
}

/** Joiner side: the request, with the identity proof over the transcript (and the fixed pod CIDRs, if any). */
export function makeRequest(th: Uint8Array, name: string, identity: Identity, podCIDRs: readonly string[] = []): JoinRequest {
  return { name, identityKey: b64(identity.publicKey), identitySig: b64(signWith(identity, identityProofMessage(th, name))), ...(podCIDRs.length > 0 ? { podCIDRs: [...podCIDRs] } : {}) };
}

/** What the seed grants (inside `admit`). `meshKey` is secret. */
export interface JoinGrant {
  readonly meshKey: Uint8Array;
  readonly admission: Admission;
  /** The admission JSON exactly as signed. */
  readonly admissionJson: string;
  /** Base64 ed25519 signature by the admitting member over "weft-admission-v1\0" | admissionJson. */
  readonly admissionSig: string;
  /** Base64 ed25519 identity key of the admitting member. */
  readonly admitterKey: string;
  /** Mesh addresses ("host:port") of live members, to use as mesh seeds. */
  readonly seeds: readonly string[];
}

/** Builds the `hello` message. */
export function makeHello(id: string, eph: Ephemeral, fingerprint?: Uint8Array): Hello {
  return { t: 'hello', v: 1, id, eph: b64(eph.keyPair.publicKey), nonce: b64(eph.nonce), ...(fingerprint ? { fp: b64(fingerprint) } : {}) };
}

/** Parses a received frame into one of the messages, checking shapes and bounds. */
export function parseMessage(frame: Uint8Array): Hello | Challenge | Refuse | Sealed {
  if (frame.length > MAX_FRAME_BYTES) throw new HandshakeError('frame too large');
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(Buffer.from(frame).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new HandshakeError('frame is not JSON', { cause: err });
  }
  if (v === null || typeof v !== 'object') throw new HandshakeError('frame is not an object');
  switch (v.t) {
    case 'hello':
      if (v.v !== 1) throw new HandshakeError(`unsupported handshake version ${String(v.v)}`);
      if (typeof v.id !== 'string' || !/^[a-z0-9]{8}$/.test(v.id)) throw new HandshakeError('hello has a bad token id');
      bytes32(v.eph, 'eph');
      bytes32(v.nonce, 'nonce');
      if (v.fp !== undefined) bytes32(v.fp, 'fp');
      return { t: 'hello', v: 1, id: v.id, eph: v.eph as string, nonce: v.nonce as string, ...(v.fp !== undefined ? { fp: v.fp as string } : {}) };
    case 'challenge':
      bytes32(v.eph, 'eph');
      bytes32(v.nonce, 'nonce');
      bytes32(v.authority, 'authority');
      if (typeof v.sig !== 'string' || v.sig.length > 100) throw new HandshakeError('bad signature field');
      return { t: 'challenge', eph: v.eph as string, nonce: v.nonce as string, authority: v.authority as string, sig: v.sig };
    case 'refuse':
      if (!(REFUSAL_CODES as readonly unknown[]).includes(v.code)) throw new HandshakeError(`unknown refusal code ${JSON.stringify(v.code)}`);
      if (typeof v.msg !== 'string' || v.msg.length > 512) throw new HandshakeError('bad refusal message');
      bytes32(v.authority, 'authority');
      if (typeof v.sig !== 'string' || v.sig.length > 100) throw new HandshakeError('bad signature field');
      return { t: 'refuse', code: v.code as RefusalCode, msg: v.msg, authority: v.authority as string, sig: v.sig };
    case 'request':
    case 'admit':
      if (typeof v.box !== 'string' || v.box.length > MAX_FRAME_BYTES) throw new HandshakeError('bad box');
      return { t: v.t, box: v.box };
    default:
      throw new HandshakeError(`unknown message type ${JSON.stringify(v.t)}`);
  }
}

/** Transcript hash binding both ephemerals, both nonces, the token id and the authority key. */
export function transcriptHash(id: string, hello: Pick<Hello, 'eph' | 'nonce'>, ch: Pick<Challenge, 'eph' | 'nonce' | 'authority'>): Uint8Array {
  const h = createHash('sha256').update('weft-join-v1\0').update(id).update('\0');
  for (const f of [hello.eph, hello.nonce, ch.eph, ch.nonce, ch.authority]) h.update(Buffer.from(f, 'base64'));
  return new Uint8Array(h.digest());
}

/** The session key: X25519 shared secret mixed with the token verifier and the transcript. */
export function sessionKey(tokenVerifier: Uint8Array, peerEph: Uint8Array, mine: Ephemeral, th: Uint8Array): Uint8Array {
  const shared = nacl.box.before(peerEph, mine.keyPair.secretKey);
  return new Uint8Array(createHmac('sha256', tokenVerifier).update('weft-join-key-v1\0').update(shared).update(th).digest());
}

const NONCE_REQUEST = new Uint8Array(24).fill(0).map((_, i) => (i === 23 ? 1 : 0));
const NONCE_ADMIT = new Uint8Array(24).fill(0).map((_, i) => (i === 23 ? 2 : 0));

/** Seed side: the challenge for a hello, signed by the authority. */
export function makeChallenge(hello: Hello, eph: Ephemeral, authority: Identity): { challenge: Challenge; th: Uint8Array } {
  const base = { eph: b64(eph.keyPair.publicKey), nonce: b64(eph.nonce), authority: b64(authority.publicKey) };
  const th = transcriptHash(hello.id, hello, base);
  const sig = signWith(authority, concat('weft-join-seed-v1\0', th));
  return { challenge: { t: 'challenge', ...base, sig: b64(sig) }, th };
}

/** Seed side: a refusal signed by the authority over the joiner's nonce (so it cannot be replayed to another joiner). */
export function makeRefuse(code: RefusalCode, msg: string, joinerNonce: string, authority: Identity): Refuse {
  const m = msg.slice(0, 512);
  const sig = signWith(authority, refuseMessage(code, m, joinerNonce));
  return { t: 'refuse', code, msg: m, authority: b64(authority.publicKey), sig: b64(sig) };
}

function refuseMessage(code: string, msg: string, joinerNonce: string): Uint8Array {
  return concat(`weft-join-refuse-v1\0${code}\0${msg}\0`, Buffer.from(joinerNonce, 'base64'));
}

function concat(tag: string, b: Uint8Array): Uint8Array {
  return new Uint8Array(Buffer.concat([Buffer.from(tag, 'utf8'), b]));
}

function sigOk(publicKeyB64: string, message: Uint8Array, sigB64: string): boolean {
  const sig = Buffer.from(sigB64, 'base64');
  return verifier.verify(new Uint8Array(Buffer.from(publicKeyB64, 'base64')), message, new Uint8Array(sig));
}

/** True when `authorityB64` matches the token's fingerprint. */
export function authorityMatches(authorityB64: string, fingerprint: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(authorityFingerprint(new Uint8Array(Buffer.from(authorityB64, 'base64')))), Buffer.from(fingerprint)) === 0;
}

/** Joiner side: checks the challenge (fingerprint + signature); returns the transcript hash or throws. */
export function checkChallenge(id: string, hello: Hello, ch: Challenge, fingerprint: Uint8Array): Uint8Array {
  if (!authorityMatches(ch.authority, fingerprint)) throw new HandshakeError('the seed is not the mesh this token names (authority fingerprint mismatch)');
  const th = transcriptHash(id, hello, ch);
  if (!sigOk(ch.authority, concat('weft-join-seed-v1\0', th), ch.sig)) throw new HandshakeError('the seed failed to prove it is the mesh (bad authority signature)');
  return th;
}

/** Joiner side: true when a refusal is authentically from the mesh the token names. */
export function checkRefuse(r: Refuse, joinerNonce: string, fingerprint: Uint8Array): boolean {
  return authorityMatches(r.authority, fingerprint) && sigOk(r.authority, refuseMessage(r.code, r.msg, joinerNonce), r.sig);
}

/** Joiner side: the sealed request. */
export function sealRequest(key: Uint8Array, req: JoinRequest): Sealed {
  return { t: 'request', box: b64(nacl.secretbox(Buffer.from(JSON.stringify(req)), NONCE_REQUEST, key)) };
}

/**
 * Seed side: opens the request; undefined when the box does not open (wrong token secret). Throws on a bad
 * shape or a bad identity proof.
 */
export function openRequest(key: Uint8Array, s: Sealed, th: Uint8Array): JoinRequest | undefined {
  if (s.t !== 'request') throw new HandshakeError('expected a request');
  const plain = nacl.secretbox.open(new Uint8Array(Buffer.from(s.box, 'base64')), NONCE_REQUEST, key);
  if (!plain) return undefined;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(Buffer.from(plain).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new HandshakeError('request is not JSON', { cause: err });
  }
  if (typeof v.name !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(v.name)) throw new HandshakeError('request has a bad node name (printable ASCII, 1-128 bytes)');
  bytes32(v.identityKey, 'identityKey');
  if (typeof v.identitySig !== 'string' || v.identitySig.length > 100) throw new HandshakeError('request has no identity proof');
  if (!sigOk(v.identityKey as string, identityProofMessage(th, v.name), v.identitySig)) throw new HandshakeError('the joiner does not hold the identity key it asked to be admitted with');
  let podCIDRs: string[] = [];
  if (v.podCIDRs !== undefined) {
    const p = parseJoinPodCidrs(v.podCIDRs);
    if (!p.ok) throw new HandshakeError(`request: ${p.msg}`);
    podCIDRs = p.cidrs;
  }
  return { name: v.name, identityKey: v.identityKey as string, identitySig: v.identitySig, ...(podCIDRs.length > 0 ? { podCIDRs } : {}) };
}

/** Seed side: signs an admission with the admitting member's identity. */
export function signAdmission(admitter: Identity, a: Admission): { admissionJson: string; admissionSig: string; admitterKey: string } {
  const admissionJson = JSON.stringify(a);
  return { admissionJson, admissionSig: b64(signWith(admitter, concat('weft-admission-v1\0', Buffer.from(admissionJson)))), admitterKey: b64(admitter.publicKey) };
}

/** Verifies an admission's signature against the admitter key; returns the parsed admission or undefined. */
export function verifyAdmission(admissionJson: string, admissionSig: string, admitterKey: string): Admission | undefined {
  if (!B64_32.test(admitterKey)) return undefined;
  if (!sigOk(admitterKey, concat('weft-admission-v1\0', Buffer.from(admissionJson)), admissionSig)) return undefined;
  return parseAdmission(Buffer.from(admissionJson));
}

/** Seed side: the sealed grant. */
export function sealGrant(key: Uint8Array, g: Omit<JoinGrant, 'admission'>): Sealed {
  const body = { meshKey: b64(g.meshKey), admission: g.admissionJson, admissionSig: g.admissionSig, admitterKey: g.admitterKey, seeds: g.seeds };
  return { t: 'admit', box: b64(nacl.secretbox(Buffer.from(JSON.stringify(body)), NONCE_ADMIT, key)) };
}

/** Joiner side: opens and checks the grant (signature, and that it admits exactly this request). */
export function openGrant(key: Uint8Array, s: Sealed, req: JoinRequest): JoinGrant {
  if (s.t !== 'admit') throw new HandshakeError('expected an admission');
  const plain = nacl.secretbox.open(new Uint8Array(Buffer.from(s.box, 'base64')), NONCE_ADMIT, key);
  if (!plain) throw new HandshakeError('the admission box does not open (tampered in transit)');
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(Buffer.from(plain).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new HandshakeError('admission is not JSON', { cause: err });
  }
  const meshKey = bytes32(v.meshKey, 'meshKey');
  if (typeof v.admission !== 'string' || typeof v.admissionSig !== 'string' || typeof v.admitterKey !== 'string') throw new HandshakeError('admission fields missing');
  const admission = verifyAdmission(v.admission, v.admissionSig, v.admitterKey);
  if (!admission) throw new HandshakeError('admission signature does not verify');
  if (admission.name !== req.name || admission.identityKey !== req.identityKey) throw new HandshakeError('admission is for another node');
  const seeds = Array.isArray(v.seeds) ? v.seeds.filter((x): x is string => typeof x === 'string' && x.length <= 300).slice(0, 64) : [];
  return { meshKey, admission, admissionJson: v.admission, admissionSig: v.admissionSig, admitterKey: v.admitterKey, seeds };
}

/** Length-prefixed frame: u32 BE length then the JSON bytes. */
export function encodeFrame(msg: object): Buffer {
  const body = Buffer.from(JSON.stringify(msg));
  if (body.length > MAX_FRAME_BYTES) throw new HandshakeError('frame too large');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}
