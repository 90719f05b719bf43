/**
 * The public contract of weft's gossip mesh. The mesh knows nothing about WireGuard, Kubernetes or
 * DNS: it replicates small signed entries that each member owns, and tells its user who is alive.
 * The agent depends only on these types; implementations live beside this file.
 */

/** Liveness of a member as SWIM/Lifeguard sees it. */
export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

/** One keyed entry owned and signed by a member. Tombstones (`deleted`) replicate like writes. */
export interface MeshEntry {
  readonly key: string;
  /** Strictly increasing per (owner, key); merges keep the highest. */
  readonly version: number;
  /** Opaque to the mesh. Empty for tombstones. */
  readonly payload: Uint8Array;
  /** Expiry in ms since the epoch (owner's clock), 0 = none. Expired entries are dropped from snapshots. */
  readonly expiresAt: number;
  readonly deleted: boolean;
}

/** A member and the live (not deleted, not expired) entries it owns. */
export interface MemberView {
  readonly name: string;
  /** Base64 ed25519 public key the member first joined with; its entries verify against it. */
  readonly identityKey: string;
  /** Address and port the mesh reaches this member on (as advertised, or as observed for NAT). */
  readonly addr: string;
  readonly port: number;
  readonly state: MemberState;
  readonly incarnation: number;
  readonly entries: ReadonlyMap<string, MeshEntry>;
}

/** An immutable view of the whole mesh as this member knows it. */
export interface MeshSnapshot {
  readonly self: string;
  readonly members: readonly MemberView[];
  /**
   * The address and port another member last saw this member's probes come from (NAT discovery,
   * issue 7); undefined until a direct probe was acked.
   */
  readonly observedSelf?: { readonly addr: string; readonly port: number };
}

/** Counters a member keeps about what it dropped and why; exported as metrics by the agent. */
export interface MeshStats {
  readonly packetsIn: number;
  readonly packetsOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly decryptFailures: number;
  readonly badSignatures: number;
  readonly malformed: number;
  readonly rateLimited: number;
}

/**
 * The mesh as the agent uses it.
 * - `start` returns once the member is listening and has contacted at least one seed, or has none.
 * - `setLocal`/`deleteLocal` never block: they bump the entry's version, sign it and queue it for gossip.
 * - `'change'` listeners receive a full snapshot (never a delta), are called in order, and must not
 *   block; several changes close together may be coalesced into one event.
 */
export interface MeshHandle {
  start(seeds: readonly string[]): Promise<void>;
  /**
   * Adds seeds learned after `start` and contacts the new ones (skips known seeds, itself and live
   * members). Resolves once one answered or none was new; rejects if every new seed failed.
   */
  join(seeds: readonly string[]): Promise<void>;
  setLocal(key: string, payload: Uint8Array, ttlMs?: number): void;
  deleteLocal(key: string): void;
  snapshot(): MeshSnapshot;
  stats(): MeshStats;
  on(event: 'change', listener: (snapshot: MeshSnapshot) => void): this;
  off(event: 'change', listener: (snapshot: MeshSnapshot) => void): this;
  /**
   * How many of this member's failure-detector probes `name` answered directly (not through a helper)
   * since start; a changing count shows the direct underlay path works now. Optional: meshes that
   * cannot tell (test doubles) leave it out, and relayed links then go back to direct only when
   * endpoints change.
   */
  directAcks?(name: string): number;
  /** Announces a graceful leave and waits up to `timeoutMs` for it to spread. */
  leave(timeoutMs?: number): Promise<void>;
  /** Stops timers and closes sockets; idempotent. */
  stop(): Promise<void>;
}
