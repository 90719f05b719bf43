/**
 * Signed, versioned entries and their merge. Pure: no I/O, no clock. The merge keeps, per
 * (owner, key), the entry that wins {@link compareEntries}; it is commutative, associative and
 * idempotent, and a tombstone is just a newer version with `deleted` set, so it beats every older
 * copy for as long as it is kept.
 */
import { Writer } from './codec.ts';
import type { MeshEntry } from './api.ts';

/** A {@link MeshEntry} with its owner and the owner's ed25519 signature over {@link entrySigningBytes}. */
export interface SignedEntry extends MeshEntry {
  readonly owner: string;
  readonly signature: Uint8Array;
}

const ENTRY_DOMAIN = 'weft-mesh-entry/1';

/** The exact bytes an owner signs for an entry (domain-separated, all fields bound). */
export function entrySigningBytes(owner: string, e: MeshEntry): Uint8Array {
  return new Writer(64 + e.payload.length)
    .str(ENTRY_DOMAIN)
    .str(owner)
    .str(e.key)
    .u64(e.version)
    .u64(e.expiresAt)
    .u8(e.deleted ? 1 : 0)
    .bytes(e.payload)
    .finish();
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * Total order on two entries for the same (owner, key): higher version wins; on equal versions
 * (only possible if an owner re-signs different content) the tombstone, then the greater signature
 * bytes win, so every member picks the same one. Returns > 0 if `a` wins, < 0 if `b` wins, 0 if equal.
 */
export function compareEntries(a: SignedEntry, b: SignedEntry): number {
  if (a.version !== b.version) return a.version - b.version;
  if (a.deleted !== b.deleted) return a.deleted ? 1 : -1;
  const s = compareBytes(a.signature, b.signature);
  if (s !== 0) return s;
  if (a.expiresAt !== b.expiresAt) return a.expiresAt - b.expiresAt;
  return compareBytes(a.payload, b.payload);
}

/** The winner of two copies of one entry (either may be absent). */
export function mergeEntry(a: SignedEntry | undefined, b: SignedEntry | undefined): SignedEntry | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareEntries(a, b) >= 0 ? a : b;
}

/** Key of an entry in a flat store: owner and key joined by NUL (neither may contain NUL). */
export function entryId(owner: string, key: string): string {
  return `${owner}\u0000${key}`;
}

/** Merges two entry stores keyed by {@link entryId}; pure, returns a new map. */
export function mergeStores(a: ReadonlyMap<string, SignedEntry>, b: ReadonlyMap<string, SignedEntry>): Map<string, SignedEntry> {
  const out = new Map(a);
  for (const [id, e] of b) out.set(id, mergeEntry(out.get(id), e)!);
  return out;
}

/** True if an entry should be shown in snapshots at time `now` (not deleted, not expired). */
export function isLive(e: MeshEntry, now: number): boolean {
  return !e.deleted && (e.expiresAt === 0 || e.expiresAt > now);
}
