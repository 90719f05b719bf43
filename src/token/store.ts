/**
 * Join tokens, claims, admissions and node revocations as mesh entries, and the pure functions that
 * read them back from a {@link MeshSnapshot}. Every member computes the same answers from the same
 * entries, so any member can verify and redeem any token. Entry keys (each owned and signed by the
 * member that wrote it):
 *
 * - `token/<id>`            issuer:    {@link TokenEntry} (the secret's verifier, never the secret), TTL = expiry + 1 h
 * - `token-revoked/<id>`    any member: {@link TokenRevocation}
 * - `token-claim/<id>/<joiner>` the admitting seed: {@link TokenClaim}, TTL = token expiry + 24 h
 * - `admission/<name>`      the admitting seed: {@link Admission} (also handed, signed, to the joiner)
 * - `node-revoked/<name>`   any member: {@link NodeRevocation}, no TTL
 *
 * The race (two joiners redeem a single-use token at two seeds) is resolved by claims, see
 * `src/token/README.md`: a seed publishes its claim, waits a confirmation window, and admits only if its
 * claim is among the token's first `uses` claims in {@link compareClaims} order. Every member applies the same
 * rule forever after, so an admission whose claim loses once gossip converges (a partition longer than the
 * window) is treated as revoked by everyone: {@link revokedNodes}.
 */
import type { MeshSnapshot } from '../../mesh/api.ts';

/** Entry key prefixes. */
export const TOKEN_PREFIX_KEY = 'token/';
export const TOKEN_REVOKED_PREFIX = 'token-revoked/';
export const TOKEN_CLAIM_PREFIX = 'token-claim/';
export const ADMISSION_PREFIX = 'admission/';
export const NODE_REVOKED_PREFIX = 'node-revoked/';

const MAX_ENTRY_BYTES = 4096;
const NAME_RE = /^[\x21-\x7e]{1,128}$/;
const ID_RE = /^[a-z0-9]{8}$/;
const B64_32 = /^[A-Za-z0-9+/]{43}=$/;

/** A token as published by its issuer. */
export interface TokenEntry {
  readonly format: 1;
  readonly id: string;
  /** Base64 {@link import('./token.ts').tokenVerifier}. */
  readonly verifier: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly uses: number;
  readonly issuedBy: string;
  readonly description?: string;
  /**
   * Set when a member re-published a token it found in the Kubernetes Secret mirror but the mesh had
   * lost (whole-mesh restart): that member owns the entry; `issuedBy` stays the original issuer.
   */
  readonly restoredBy?: string;
  /** Uses already spent before the restore (the claims were lost with the mesh); counted against `uses`. */
  readonly spentBefore?: number;
}

/** A token revoked by a member. */
export interface TokenRevocation {
  readonly format: 1;
  readonly id: string;
  readonly revokedAt: number;
  readonly by: string;
}

/** One redemption attempt a seed published before admitting `joiner`. */
export interface TokenClaim {
  readonly format: 1;
  readonly id: string;
  readonly joiner: string;
  /** Base64 ed25519 identity key the joiner will join the mesh with. */
  readonly identityKey: string;
  /** ms since the epoch, the seed's clock. */
  readonly claimedAt: number;
  readonly seed: string;
}

/** What a seed grants a joiner: name + identity key, admitted through a token. Signed by the seed's identity when handed over. */
export interface Admission {
  readonly format: 1;
  readonly name: string;
  readonly identityKey: string;
  readonly tokenId: string;
  readonly admittedBy: string;
  readonly admittedAt: number;
}

/** A node whose admission was revoked (`weft node remove`, or a lost token race). */
export interface NodeRevocation {
  readonly format: 1;
  readonly name: string;
  /** Base64 identity key revoked; absent = whatever key the name holds. */
  readonly identityKey?: string;
  readonly revokedAt: number;
  readonly by: string;
  readonly reason: string;
}

/** A token as every member sees it: the entry, its revocation, and the claims against it. */
export interface TokenState {
  readonly entry: TokenEntry;
  readonly revoked?: TokenRevocation;
  /** All claims, in {@link compareClaims} order. */
  readonly claims: readonly TokenClaim[];
  /** The first `uses` claims: the redemptions that stand. */
  readonly winners: readonly TokenClaim[];
  readonly usesLeft: number;
}

/** Why a token cannot be redeemed now, or 'valid'. */
export type TokenStatus = 'valid' | 'expired' | 'revoked' | 'spent';

/** A mesh entry to write: key, JSON payload, TTL (ms, 0 = none). */
export interface EntryWrite {
  readonly key: string;
  readonly payload: Uint8Array;
  readonly ttlMs: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

function write(key: string, value: object, ttlMs: number): EntryWrite {
  const payload = enc.encode(JSON.stringify(value));
  if (payload.length > MAX_ENTRY_BYTES) throw new RangeError(`token store: entry ${key} larger than ${MAX_ENTRY_BYTES} bytes`);
  return { key, payload, ttlMs: Math.max(0, Math.round(ttlMs)) };
}

/** The `token/<id>` entry for a new token. `now` in ms. */
export function tokenEntryWrite(e: TokenEntry, now: number): EntryWrite {
  return write(`${TOKEN_PREFIX_KEY}${e.id}`, e, e.expiresAt - now + 3600_000);
}

/** The `token-revoked/<id>` entry. Kept a day past the token's expiry (unknown expiry: 30 days). */
export function tokenRevocationWrite(r: TokenRevocation, expiresAt: number | undefined): EntryWrite {
  return write(`${TOKEN_REVOKED_PREFIX}${r.id}`, r, expiresAt === undefined ? 30 * 24 * 3600_000 : Math.max(expiresAt - r.revokedAt, 0) + 24 * 3600_000);
}

/** The `token-claim/<id>/<joiner>` entry a seed publishes before admitting. */
export function tokenClaimWrite(c: TokenClaim, tokenExpiresAt: number): EntryWrite {
  return write(`${TOKEN_CLAIM_PREFIX}${c.id}/${c.joiner}`, c, Math.max(tokenExpiresAt - c.claimedAt, 0) + 24 * 3600_000);
}

/** The `admission/<name>` entry. */
export function admissionWrite(a: Admission): EntryWrite {
  return write(`${ADMISSION_PREFIX}${a.name}`, a, 0);
}

/** The `node-revoked/<name>` entry. */
export function nodeRevocationWrite(r: NodeRevocation): EntryWrite {
  return write(`${NODE_REVOKED_PREFIX}${r.name}`, r, 0);
}

function readJson(payload: Uint8Array): Record<string, unknown> | undefined {
  if (payload.length === 0 || payload.length > MAX_ENTRY_BYTES) return undefined;
  try {
    const v = JSON.parse(dec.decode(payload)) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isName = (v: unknown): v is string => typeof v === 'string' && NAME_RE.test(v);

/** Parses a token entry payload; undefined when malformed (dropped, never thrown). */
export function parseTokenEntry(payload: Uint8Array, owner: string): TokenEntry | undefined {
  const v = readJson(payload);
  if (!v || v.format !== 1 || typeof v.id !== 'string' || !ID_RE.test(v.id) || typeof v.verifier !== 'string' || !B64_32.test(v.verifier)) return undefined;
  if (!isTime(v.createdAt) || !isTime(v.expiresAt) || typeof v.uses !== 'number' || !Number.isInteger(v.uses) || v.uses < 1 || v.uses > 1000) return undefined;
  // The owner signs the entry: either the issuer, or the member that restored it from the Secret mirror.
  if (v.restoredBy === undefined ? v.issuedBy !== owner : v.restoredBy !== owner || !isName(v.issuedBy)) return undefined;
  if (v.spentBefore !== undefined && (v.restoredBy === undefined || typeof v.spentBefore !== 'number' || !Number.isInteger(v.spentBefore) || v.spentBefore < 0 || v.spentBefore > v.uses)) return undefined;
  if (v.description !== undefined && (typeof v.description !== 'string' || v.description.length > 256)) return undefined;
  return {
    format: 1,
    id: v.id,
    verifier: v.verifier,
    createdAt: v.createdAt,
    expiresAt: v.expiresAt,
    uses: v.uses,
    issuedBy: v.issuedBy as string,
    ...(v.description !== undefined ? { description: v.description as string } : {}),
    ...(v.restoredBy !== undefined ? { restoredBy: owner, spentBefore: (v.spentBefore as number | undefined) ?? 0 } : {}),
  };
}

/**
 * Which of two entries for the same id every member keeps: an original beats a restored copy (its claims
 * are still in the mesh), then the earliest `createdAt`, the lower issuer, the most uses already spent,
 * the lower restorer. Negative when `a` wins.
 */
export function compareTokenEntries(a: TokenEntry, b: TokenEntry): number {
  const ra = a.restoredBy !== undefined ? 1 : 0;
  const rb = b.restoredBy !== undefined ? 1 : 0;
  if (ra !== rb) return ra - rb;
  if (a.createdAt !== b.createdAt) return a.createdAt - b.createdAt;
  if (a.issuedBy !== b.issuedBy) return a.issuedBy < b.issuedBy ? -1 : 1;
  if ((a.spentBefore ?? 0) !== (b.spentBefore ?? 0)) return (b.spentBefore ?? 0) - (a.spentBefore ?? 0);
  const xa = a.restoredBy ?? '';
  const xb = b.restoredBy ?? '';
  return xa < xb ? -1 : xa > xb ? 1 : 0;
}

function parseRevocation(payload: Uint8Array, owner: string): TokenRevocation | undefined {
  const v = readJson(payload);
  if (!v || v.format !== 1 || typeof v.id !== 'string' || !ID_RE.test(v.id) || !isTime(v.revokedAt) || v.by !== owner) return undefined;
  return { format: 1, id: v.id, revokedAt: v.revokedAt, by: owner };
}

/** Parses a claim payload; the seed must be the entry's owner. */
export function parseClaim(payload: Uint8Array, owner: string): TokenClaim | undefined {
  const v = readJson(payload);
  if (!v || v.format !== 1 || typeof v.id !== 'string' || !ID_RE.test(v.id) || !isName(v.joiner) || typeof v.identityKey !== 'string' || !B64_32.test(v.identityKey)) return undefined;
  if (!isTime(v.claimedAt) || v.seed !== owner) return undefined;
  return { format: 1, id: v.id, joiner: v.joiner, identityKey: v.identityKey, claimedAt: v.claimedAt, seed: owner };
}

/** Parses an admission payload (the admitting member must be the owner when read from the mesh). */
export function parseAdmission(payload: Uint8Array, owner?: string): Admission | undefined {
  const v = readJson(payload);
  if (!v || v.format !== 1 || !isName(v.name) || typeof v.identityKey !== 'string' || !B64_32.test(v.identityKey)) return undefined;
  if (typeof v.tokenId !== 'string' || !ID_RE.test(v.tokenId) || !isName(v.admittedBy) || !isTime(v.admittedAt)) return undefined;
  if (owner !== undefined && v.admittedBy !== owner) return undefined;
  return { format: 1, name: v.name, identityKey: v.identityKey, tokenId: v.tokenId, admittedBy: v.admittedBy, admittedAt: v.admittedAt };
}

function parseNodeRevocation(payload: Uint8Array, owner: string): NodeRevocation | undefined {
  const v = readJson(payload);
  if (!v || v.format !== 1 || !isName(v.name) || !isTime(v.revokedAt) || v.by !== owner || typeof v.reason !== 'string' || v.reason.length > 256) return undefined;
  if (v.identityKey !== undefined && (typeof v.identityKey !== 'string' || !B64_32.test(v.identityKey))) return undefined;
  return { format: 1, name: v.name, revokedAt: v.revokedAt, by: owner, reason: v.reason, ...(v.identityKey !== undefined ? { identityKey: v.identityKey as string } : {}) };
}

/**
 * The total order on claims every member uses: earliest `claimedAt`, then lowest seed name, then lowest
 * joiner name. Deterministic and independent of arrival order.
 */
export function compareClaims(a: TokenClaim, b: TokenClaim): number {
  if (a.claimedAt !== b.claimedAt) return a.claimedAt - b.claimedAt;
  if (a.seed !== b.seed) return a.seed < b.seed ? -1 : 1;
  return a.joiner < b.joiner ? -1 : a.joiner > b.joiner ? 1 : 0;
}

function* entriesWith(snapshot: MeshSnapshot, prefix: string): Generator<{ owner: string; key: string; payload: Uint8Array }> {
  for (const m of snapshot.members) {
    for (const [key, e] of m.entries) {
      if (e.deleted || !key.startsWith(prefix)) continue;
      yield { owner: m.name, key, payload: e.payload };
    }
  }
}

/**
 * Every token the mesh knows, with its revocation and claims. When two members published the same id (a
 * collision, astronomically rare, or copies restored from the Secret mirror), {@link compareTokenEntries}
 * picks one. Claims for a joiner name count once (the earliest).
 */
export function collectTokens(snapshot: MeshSnapshot): Map<string, TokenState> {
  const entries = new Map<string, TokenEntry>();
  for (const { owner, key, payload } of entriesWith(snapshot, TOKEN_PREFIX_KEY)) {
    const t = parseTokenEntry(payload, owner);
    if (!t || key !== `${TOKEN_PREFIX_KEY}${t.id}`) continue;
    const prev = entries.get(t.id);
    if (!prev || compareTokenEntries(t, prev) < 0) entries.set(t.id, t);
  }
  const revs = new Map<string, TokenRevocation>();
  for (const { owner, key, payload } of entriesWith(snapshot, TOKEN_REVOKED_PREFIX)) {
    const r = parseRevocation(payload, owner);
    if (!r || key !== `${TOKEN_REVOKED_PREFIX}${r.id}`) continue;
    const prev = revs.get(r.id);
    if (!prev || r.revokedAt < prev.revokedAt) revs.set(r.id, r);
  }
  const claims = new Map<string, TokenClaim[]>();
  for (const { owner, key, payload } of entriesWith(snapshot, TOKEN_CLAIM_PREFIX)) {
    const c = parseClaim(payload, owner);
    if (!c || key !== `${TOKEN_CLAIM_PREFIX}${c.id}/${c.joiner}`) continue;
    let list = claims.get(c.id);
    if (!list) claims.set(c.id, (list = []));
    list.push(c);
  }
  const out = new Map<string, TokenState>();
  for (const [id, entry] of entries) {
    const all = (claims.get(id) ?? []).sort(compareClaims);
    const seen = new Set<string>();
    const unique = all.filter((c) => (seen.has(c.joiner) ? false : (seen.add(c.joiner), true)));
    const uses = Math.max(0, entry.uses - (entry.spentBefore ?? 0));
    const winners = unique.slice(0, uses);
    const rev = revs.get(id);
    out.set(id, { entry, ...(rev ? { revoked: rev } : {}), claims: unique, winners, usesLeft: Math.max(0, uses - winners.length) });
  }
  return out;
}

/** Whether a token can be redeemed at `now` (ms): revoked beats expired beats spent. */
export function tokenStatus(state: TokenState, now: number): TokenStatus {
  if (state.revoked) return 'revoked';
  if (now >= state.entry.expiresAt) return 'expired';
  if (state.usesLeft <= 0) return 'spent';
  return 'valid';
}

/**
 * Outcome of `joiner`'s claim on a token: 'won' when it is among the first `uses` claims, 'lost' when it
 * is not, 'absent' when the claim is not (yet) in the view.
 */
export function claimOutcome(state: TokenState | undefined, joiner: string): 'won' | 'lost' | 'absent' {
  if (!state) return 'absent';
  if (state.winners.some((c) => c.joiner === joiner)) return 'won';
  return state.claims.some((c) => c.joiner === joiner) ? 'lost' : 'absent';
}

/** One row of `weft token list`. */
export interface TokenListing {
  readonly id: string;
  readonly issuedBy: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly uses: number;
  readonly usesLeft: number;
  readonly status: TokenStatus;
  readonly redeemedBy: readonly string[];
  readonly description?: string;
  /** The member that re-published it from the Kubernetes Secret mirror after the mesh lost it. */
  readonly restoredBy?: string;
}

/** The token list as every member sees it, newest first. */
export function listTokens(snapshot: MeshSnapshot, now: number): TokenListing[] {
  return [...collectTokens(snapshot).values()]
    .map((s) => ({
      id: s.entry.id,
      issuedBy: s.entry.issuedBy,
      createdAt: s.entry.createdAt,
      expiresAt: s.entry.expiresAt,
      uses: s.entry.uses,
      usesLeft: s.usesLeft,
      status: tokenStatus(s, now),
      redeemedBy: s.winners.map((c) => c.joiner),
      ...(s.entry.description !== undefined ? { description: s.entry.description } : {}),
      ...(s.entry.restoredBy !== undefined ? { restoredBy: s.entry.restoredBy } : {}),
    }))
    .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? -1 : 1));
}

/** Why a node is revoked. */
export interface RevokedNode {
  /** Revoked identity key (base64), or undefined = the name whatever its key. */
  readonly identityKey?: string;
  readonly reason: string;
}

/**
 * Nodes every member must treat as removed: explicit `node-revoked/<name>` entries, and admissions whose
 * token claim lost the race (the claim is in the view but not among the winners). Pure; the planner
 * drops their records (peer, routes, DNS names).
 */
export function revokedNodes(snapshot: MeshSnapshot): Map<string, RevokedNode> {
  const out = new Map<string, RevokedNode>();
  for (const { owner, key, payload } of entriesWith(snapshot, NODE_REVOKED_PREFIX)) {
    const r = parseNodeRevocation(payload, owner);
    if (!r || key !== `${NODE_REVOKED_PREFIX}${r.name}`) continue;
    // A name-wide revocation beats a key-specific one.
    const prev = out.get(r.name);
    if (prev && prev.identityKey === undefined) continue;
    out.set(r.name, { ...(r.identityKey !== undefined ? { identityKey: r.identityKey } : {}), reason: `removed by ${r.by}: ${r.reason}` });
  }
  const tokens = collectTokens(snapshot);
  for (const { owner, key, payload } of entriesWith(snapshot, ADMISSION_PREFIX)) {
    const a = parseAdmission(payload, owner);
    if (!a || key !== `${ADMISSION_PREFIX}${a.name}` || out.has(a.name)) continue;
    if (claimOutcome(tokens.get(a.tokenId), a.name) === 'lost') out.set(a.name, { identityKey: a.identityKey, reason: `token ${a.tokenId} was redeemed first by another joiner` });
  }
  return out;
}

/**
 * True when `member` (name + base64 identity key) is revoked in `revoked`: its name is revoked (for any key
 * or for this key), or its identity key was revoked under any name (a removed node cannot come back under a
 * new name with its old key).
 */
export function isRevoked(revoked: ReadonlyMap<string, RevokedNode>, name: string, identityKey: string): boolean {
  const r = revoked.get(name);
  if (r !== undefined && (r.identityKey === undefined || r.identityKey === identityKey)) return true;
  for (const x of revoked.values()) if (x.identityKey === identityKey) return true;
  return false;
}

/**
 * The snapshot without revoked members (the hook the planner applies before reading records): their
 * node and pod entries disappear, so every member drops their peer, routes and DNS names.
 */
export function withoutRevoked(snapshot: MeshSnapshot): MeshSnapshot {
  const revoked = revokedNodes(snapshot);
  if (revoked.size === 0) return snapshot;
  return { ...snapshot, members: snapshot.members.filter((m) => m.name === snapshot.self || !isRevoked(revoked, m.name, m.identityKey)) };
}
