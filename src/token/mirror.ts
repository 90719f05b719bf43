/**
 * The content of the Kubernetes Secret that mirrors the mesh's tokens (issue 7: "tokens are kept in the
 * mesh state ... and in a Kubernetes Secret when running in-cluster"). Pure: what the mesh says, how two
 * views merge, how the Secret's `data` is encoded and bounded, and what to re-publish after the mesh lost its
 * tokens. The I/O (get/replace with resourceVersion, retries) is `src/k8s/token-secret.ts`.
 *
 * One data key per live token, `token-<id>`, holding canonical JSON ({@link MirroredToken}): the public
 * token entry, its revocation, how many uses are spent, and the verifier **sealed** under a key derived from
 * the mesh key. The verifier is sealed because the handshake's session key is derived from it: a plain
 * verifier in a Secret would let anyone allowed to read the Secret redeem the token. The token secret itself
 * never exists anywhere but in the token string. Sealing is deterministic (the nonce is derived from the
 * sealed bytes), so every agent holding the same mesh key writes byte-identical values and concurrent
 * writers converge without rewriting each other's work.
 *
 * Merging is monotone, so any number of agents can write in any order: union of tokens, revoked if either
 * side says so (earliest revocation), spent = max; tokens leave only by expiry (pruned) or by the size bound.
 */
import { createHmac } from 'node:crypto';
import nacl from 'tweetnacl';
import type { MeshSnapshot } from '../../mesh/api.ts';
import {
  TOKEN_CLAIM_PREFIX,
  collectTokens,
  compareTokenEntries,
  tokenEntryWrite,
  tokenRevocationWrite,
  type EntryWrite,
  type TokenEntry,
  type TokenRevocation,
} from './store.ts';

/** Data key prefix of mirrored tokens; other keys in the Secret are left alone. */
export const MIRROR_KEY_PREFIX = 'token-';
/** Default bound on the mirrored data (keys + base64 values): a Secret holds at most 1 MiB in total. */
export const DEFAULT_MIRROR_MAX_BYTES = 900 * 1024;
/** Redeemer names kept per token (informational; `spent` is what counts). */
const MAX_REDEEMED_NAMES = 16;
const MAX_VALUE_BYTES = 8 * 1024;
const ID_RE = /^[a-z0-9]{8}$/;
const NAME_RE = /^[\x21-\x7e]{1,128}$/;

/** One token as the Secret holds it. */
export interface MirroredToken {
  readonly format: 1;
  readonly id: string;
  readonly issuedBy: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly uses: number;
  readonly description?: string;
  /** Base64 `nonce(24) | secretbox(verifier)` under {@link mirrorSealKey} of the mesh key. */
  readonly sealedVerifier: string;
  readonly revoked?: { readonly revokedAt: number; readonly by: string };
  /** Uses spent, as far as any writer knew (max over writers). */
  readonly spent: number;
  /** Some of the nodes that redeemed it (at most 16), sorted. */
  readonly redeemedBy: readonly string[];
}

/** A token as a writer knows it: the mirrored fields plus, when this writer can open it, the verifier. */
export interface MirrorToken {
  readonly token: MirroredToken;
  /** The plain verifier (32 bytes) when known (from the mesh, or opened with a mesh key we hold). */
  readonly verifier?: Uint8Array;
}

/** The key verifiers are sealed under: HMAC-SHA256(meshKey, "weft-token-mirror-v1"). */
export function mirrorSealKey(meshKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', meshKey).update('weft-token-mirror-v1').digest());
}

/** Seals a verifier deterministically (nonce = HMAC(key, id | verifier)): same inputs, same bytes. */
export function sealVerifier(sealKey: Uint8Array, id: string, verifier: Uint8Array): string {
  const nonce = new Uint8Array(createHmac('sha256', sealKey).update('nonce\0').update(id).update('\0').update(verifier).digest().subarray(0, nacl.secretbox.nonceLength));
  const box = nacl.secretbox(verifier, nonce, sealKey);
  return Buffer.concat([nonce, box]).toString('base64');
}

/** Opens a sealed verifier with any of `sealKeys`; undefined when none opens it. */
export function openVerifier(sealKeys: readonly Uint8Array[], sealed: string): Uint8Array | undefined {
  const raw = Buffer.from(sealed, 'base64');
  if (raw.length !== nacl.secretbox.nonceLength + nacl.secretbox.overheadLength + 32) return undefined;
  const nonce = new Uint8Array(raw.subarray(0, nacl.secretbox.nonceLength));
  const box = new Uint8Array(raw.subarray(nacl.secretbox.nonceLength));
  for (const k of sealKeys) {
    const plain = nacl.secretbox.open(box, nonce, k);
    if (plain && plain.length === 32) return plain;
  }
  return undefined;
}

/** The Secret data key of a token. */
export function mirrorKey(id: string): string {
  return `${MIRROR_KEY_PREFIX}${id}`;
}

/**
 * Live (unexpired at `now`) tokens of the mesh snapshot, any member's, as mirror entries sealed with
 * `sealKey`. A restored copy is mirrored as its original (issuer, uses) with `spent` including the uses
 * spent before the restore.
 */
export function mirrorFromMesh(snapshot: MeshSnapshot, now: number, sealKey: Uint8Array): Map<string, MirrorToken> {
  const out = new Map<string, MirrorToken>();
  for (const [id, s] of collectTokens(snapshot)) {
    const e = s.entry;
    if (now >= e.expiresAt) continue;
    const verifier = new Uint8Array(Buffer.from(e.verifier, 'base64'));
    const token: MirroredToken = {
      format: 1,
      id,
      issuedBy: e.issuedBy,
      createdAt: e.createdAt,
      expiresAt: e.expiresAt,
      uses: e.uses,
      ...(e.description !== undefined ? { description: e.description } : {}),
      sealedVerifier: sealVerifier(sealKey, id, verifier),
      ...(s.revoked ? { revoked: { revokedAt: s.revoked.revokedAt, by: s.revoked.by } } : {}),
      spent: Math.min(e.uses, (e.spentBefore ?? 0) + s.winners.length),
      redeemedBy: [...new Set(s.winners.map((c) => c.joiner))].sort().slice(0, MAX_REDEEMED_NAMES),
    };
    out.set(id, { token, verifier });
  }
  return out;
}

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Parses one Secret value (base64 of JSON); undefined when malformed (dropped and counted by the caller). */
export function parseMirrored(key: string, value: string): MirroredToken | undefined {
  if (typeof value !== 'string' || value.length > MAX_VALUE_BYTES * 2) return undefined;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(Buffer.from(value, 'base64').toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v.format !== 1) return undefined;
  if (typeof v.id !== 'string' || !ID_RE.test(v.id) || key !== mirrorKey(v.id)) return undefined;
  if (typeof v.issuedBy !== 'string' || !NAME_RE.test(v.issuedBy) || !isTime(v.createdAt) || !isTime(v.expiresAt)) return undefined;
  if (typeof v.uses !== 'number' || !Number.isInteger(v.uses) || v.uses < 1 || v.uses > 1000) return undefined;
  if (v.description !== undefined && (typeof v.description !== 'string' || v.description.length > 256)) return undefined;
  if (typeof v.sealedVerifier !== 'string' || v.sealedVerifier.length > 200) return undefined;
  if (typeof v.spent !== 'number' || !Number.isInteger(v.spent) || v.spent < 0 || v.spent > v.uses) return undefined;
  let revoked: MirroredToken['revoked'];
  if (v.revoked !== undefined) {
    const r = v.revoked as Record<string, unknown> | null;
    if (r === null || typeof r !== 'object' || !isTime(r.revokedAt) || typeof r.by !== 'string' || !NAME_RE.test(r.by)) return undefined;
    revoked = { revokedAt: r.revokedAt, by: r.by };
  }
  const redeemedBy = Array.isArray(v.redeemedBy) ? v.redeemedBy.filter((x): x is string => typeof x === 'string' && NAME_RE.test(x)).slice(0, MAX_REDEEMED_NAMES).sort() : [];
  return {
    format: 1,
    id: v.id,
    issuedBy: v.issuedBy,
    createdAt: v.createdAt,
    expiresAt: v.expiresAt,
    uses: v.uses,
    ...(v.description !== undefined ? { description: v.description as string } : {}),
    sealedVerifier: v.sealedVerifier,
    ...(revoked ? { revoked } : {}),
    spent: v.spent,
    redeemedBy,
  };
}

/** What a Secret's `data` holds for the mirror: the tokens, the keys it ignored as malformed. */
export interface DecodedMirror {
  readonly tokens: Map<string, MirrorToken>;
  /** Data keys with the token prefix whose value did not parse (dropped at the next write). */
  readonly malformed: readonly string[];
}

/** Decodes a Secret's `data` (only `token-*` keys), opening each verifier with `sealKeys` when possible. */
export function decodeMirror(data: Readonly<Record<string, string>> | undefined, sealKeys: readonly Uint8Array[]): DecodedMirror {
  const tokens = new Map<string, MirrorToken>();
  const malformed: string[] = [];
  for (const [key, value] of Object.entries(data ?? {})) {
    if (!key.startsWith(MIRROR_KEY_PREFIX)) continue;
    const token = parseMirrored(key, value);
    if (!token) {
      malformed.push(key);
      continue;
    }
    const verifier = openVerifier(sealKeys, token.sealedVerifier);
    tokens.set(token.id, verifier ? { token, verifier } : { token });
  }
  return { tokens, malformed };
}

function asEntry(t: MirroredToken): TokenEntry {
  return { format: 1, id: t.id, verifier: '', createdAt: t.createdAt, expiresAt: t.expiresAt, uses: t.uses, issuedBy: t.issuedBy, ...(t.description !== undefined ? { description: t.description } : {}) };
}

/** The entry the mesh would keep, then (for copies that should never differ) a fixed order on the rest. */
function pickOrder(a: MirroredToken, b: MirroredToken): number {
  const c = compareTokenEntries(asEntry(a), asEntry(b));
  if (c !== 0) return c;
  if (a.expiresAt !== b.expiresAt) return a.expiresAt - b.expiresAt;
  if (a.uses !== b.uses) return a.uses - b.uses;
  const da = a.description ?? '';
  const db = b.description ?? '';
  return da < db ? -1 : da > db ? 1 : a.sealedVerifier < b.sealedVerifier ? -1 : a.sealedVerifier > b.sealedVerifier ? 1 : 0;
}

/**
 * Merges two views of the mirror at `now`: union by id, expired tokens pruned; for one id the entry the mesh
 * would keep ({@link compareTokenEntries}), revoked when either is (earliest revocation), the larger `spent`,
 * redeemers united. Commutative and idempotent on the mirrored fields, so writers converge.
 */
export function mergeMirrors(a: ReadonlyMap<string, MirrorToken>, b: ReadonlyMap<string, MirrorToken>, now: number): Map<string, MirrorToken> {
  const out = new Map<string, MirrorToken>();
  // Expired copies are pruned first, so an expired copy never shadows a live one (and the result is associative).
  const live = (t: MirrorToken | undefined): MirrorToken | undefined => (t && now < t.token.expiresAt ? t : undefined);
  for (const id of new Set([...a.keys(), ...b.keys()])) {
    const x = live(a.get(id));
    const y = live(b.get(id));
    if (!x && !y) continue;
    const pick = !x ? y! : !y ? x : pickOrder(x.token, y.token) <= 0 ? x : y;
    const other = pick === x ? y : x;
    if (!other) {
      out.set(id, pick);
      continue;
    }
    const revs = [x!.token.revoked, y!.token.revoked].filter((r): r is NonNullable<typeof r> => r !== undefined).sort((p, q) => p.revokedAt - q.revokedAt || (p.by < q.by ? -1 : p.by > q.by ? 1 : 0));
    const sameToken = pick.token.createdAt === other.token.createdAt && pick.token.issuedBy === other.token.issuedBy;
    const spent = sameToken ? Math.max(x!.token.spent, y!.token.spent) : pick.token.spent;
    const redeemedBy = sameToken ? [...new Set([...x!.token.redeemedBy, ...y!.token.redeemedBy])].sort().slice(0, MAX_REDEEMED_NAMES) : pick.token.redeemedBy;
    const { revoked: _r, ...base } = pick.token;
    const token: MirroredToken = { ...base, ...(revs[0] ? { revoked: { revokedAt: revs[0].revokedAt, by: revs[0].by } } : {}), spent: Math.min(spent, pick.token.uses), redeemedBy };
    const verifier = pick.verifier ?? (sameToken ? other.verifier : undefined);
    out.set(id, verifier ? { token, verifier } : { token });
  }
  return out;
}

/** Canonical JSON of a mirrored token (fixed field order), re-sealing the verifier with `sealKey` when known. */
export function encodeMirrored(t: MirrorToken, sealKey: Uint8Array): string {
  const m = t.token;
  const canonical = {
    format: 1,
    id: m.id,
    issuedBy: m.issuedBy,
    createdAt: m.createdAt,
    expiresAt: m.expiresAt,
    uses: m.uses,
    ...(m.description !== undefined ? { description: m.description } : {}),
    sealedVerifier: t.verifier ? sealVerifier(sealKey, m.id, t.verifier) : m.sealedVerifier,
    ...(m.revoked ? { revoked: { revokedAt: m.revoked.revokedAt, by: m.revoked.by } } : {}),
    spent: m.spent,
    redeemedBy: [...m.redeemedBy],
  };
  return Buffer.from(JSON.stringify(canonical)).toString('base64');
}

/** The `token-*` data of the Secret, and what the size bound left out. */
export interface EncodedMirror {
  readonly data: Record<string, string>;
  /** Token ids left out to stay under the bound, in drop order. */
  readonly dropped: readonly string[];
  readonly bytes: number;
}

/** Drop order under the size bound: spent first, then revoked, then the soonest to expire. Lower = dropped first. */
function keepRank(t: MirroredToken): [number, number, string] {
  const cls = t.spent >= t.uses ? 0 : t.revoked ? 1 : 2;
  return [cls, t.expiresAt, t.id];
}

/**
 * Encodes the mirror as Secret data within `maxBytes` (sum of key and base64 value lengths): when over, the
 * least useful tokens are left out (used up, then revoked, then the soonest to expire). Deterministic.
 */
export function encodeMirror(tokens: ReadonlyMap<string, MirrorToken>, sealKey: Uint8Array, maxBytes = DEFAULT_MIRROR_MAX_BYTES): EncodedMirror {
  const rows = [...tokens.values()].map((t) => {
    const key = mirrorKey(t.token.id);
    const value = encodeMirrored(t, sealKey);
    return { t: t.token, key, value, size: key.length + value.length };
  });
  rows.sort((p, q) => {
    const [a1, a2, a3] = keepRank(p.t);
    const [b1, b2, b3] = keepRank(q.t);
    return b1 - a1 || b2 - a2 || (a3 < b3 ? -1 : a3 > b3 ? 1 : 0);
  });
  const data: Record<string, string> = {};
  const dropped: string[] = [];
  let bytes = 0;
  for (const r of rows) {
    if (bytes + r.size > maxBytes) {
      dropped.push(r.t.id);
      continue;
    }
    bytes += r.size;
    data[r.key] = r.value;
  }
  return { data, dropped: dropped.reverse(), bytes };
}

/** True when two Secret data maps hold the same `token-*` keys with the same values. */
export function sameMirrorData(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a ?? {}).filter((k) => k.startsWith(MIRROR_KEY_PREFIX));
  const kb = Object.keys(b).filter((k) => k.startsWith(MIRROR_KEY_PREFIX));
  return ka.length === kb.length && kb.every((k) => a![k] === b[k]);
}

/** What read-back re-publishes, and why other tokens were not. */
export interface Restoration {
  /** `token/<id>` entries to publish as this member (restored copies). */
  readonly entries: readonly EntryWrite[];
  /** `token-revoked/<id>` entries for tokens the mesh knows but whose revocation it lost. */
  readonly revocations: readonly EntryWrite[];
  readonly restoredIds: readonly string[];
  readonly revokedIds: readonly string[];
  /** id -> why it was not restored (revoked, expired, used up, sealed under a mesh key this member lacks). */
  readonly skipped: ReadonlyMap<string, string>;
}

/**
 * Read-back after a start: tokens in the Secret that the mesh does not know are re-published by `self`,
 * keeping id, issuer, creation, expiry and uses (`restoredBy` = self, `spentBefore` = uses spent minus the
 * claims still in the mesh), unless revoked, expired, used up or not openable. Revocations the mesh lost for
 * tokens it knows are re-published too (any member may revoke). Pure.
 */
export function planRestore(mirror: ReadonlyMap<string, MirrorToken>, snapshot: MeshSnapshot, self: string, now: number): Restoration {
  const known = collectTokens(snapshot);
  const claims = new Map<string, Set<string>>();
  for (const m of snapshot.members) {
    for (const [key, e] of m.entries) {
      if (e.deleted || !key.startsWith(TOKEN_CLAIM_PREFIX)) continue;
      const [id, joiner] = key.slice(TOKEN_CLAIM_PREFIX.length).split('/');
      if (!id || !joiner) continue;
      let set = claims.get(id);
      if (!set) claims.set(id, (set = new Set()));
      set.add(joiner);
    }
  }
  const entries: EntryWrite[] = [];
  const revocations: EntryWrite[] = [];
  const restoredIds: string[] = [];
  const revokedIds: string[] = [];
  const skipped = new Map<string, string>();
  for (const [id, { token: t, verifier }] of mirror) {
    const inMesh = known.get(id);
    if (inMesh) {
      if (t.revoked && !inMesh.revoked && now < inMesh.entry.expiresAt) {
        revocations.push(tokenRevocationWrite({ format: 1, id, revokedAt: t.revoked.revokedAt, by: self } as TokenRevocation, inMesh.entry.expiresAt));
        revokedIds.push(id);
      }
      continue;
    }
    if (t.revoked) skipped.set(id, `revoked by ${t.revoked.by}`);
    else if (now >= t.expiresAt) skipped.set(id, 'expired');
    else if (t.spent >= t.uses) skipped.set(id, 'used up');
    else if (!verifier) skipped.set(id, 'sealed under a mesh key this member does not hold');
    if (skipped.has(id)) continue;
    const spentBefore = Math.max(0, t.spent - (claims.get(id)?.size ?? 0));
    const entry: TokenEntry = {
      format: 1,
      id,
      verifier: Buffer.from(verifier!).toString('base64'),
      createdAt: t.createdAt,
      expiresAt: t.expiresAt,
      uses: t.uses,
      issuedBy: t.issuedBy,
      ...(t.description !== undefined ? { description: t.description } : {}),
      restoredBy: self,
      spentBefore,
    };
    entries.push(tokenEntryWrite(entry, now));
    restoredIds.push(id);
  }
  return { entries, revocations, restoredIds, revokedIds, skipped };
}
