/**
 * Pure helpers for what this node publishes in the mesh and for its pod block: build its
 * {@link NodeInfo}, diff its pod entries, detect a lost block claim, list taken blocks. No I/O, no
 * clock: callers pass `now`.
 */
import IPCIDR from 'ip-cidr';
import type { MeshSnapshot } from '../../mesh/api.ts';
import { NODE_ENTRY_KEY, POD_ENTRY_PREFIX, type NodeInfo, type PodRecord, type RemoteNode } from '../model.ts';
import { gatewayOf } from '../ipam/blocks.ts';
import { analyzeClaims, claimsOf, type BlockClaim as IpamClaim } from '../ipam/claims.ts';
import type { BlockClaim } from './ports.ts';

/** Largest pod entry payload the agent publishes; bigger pod records are dropped and counted. */
export const MAX_POD_ENTRY_BYTES = 1024;

/** Inputs of {@link buildNodeInfo}. */
export interface SelfInput {
  readonly name: string;
  readonly wgPublicKey: string;
  readonly listenPort: number;
  readonly endpoints: readonly string[];
  readonly claim: BlockClaim;
  readonly keepalive?: number;
}

/** This node's record. The mesh IP is the gateway of its IPv4 block (or of its only block). */
export function buildNodeInfo(s: SelfInput): NodeInfo {
  const primary = s.claim.podCIDRs.find((c) => !c.includes(':')) ?? s.claim.podCIDRs[0];
  if (primary === undefined) throw new RangeError('agent: cannot publish a node record without a pod block');
  return {
    format: 1,
    name: s.name,
    wgPublicKey: s.wgPublicKey,
    listenPort: s.listenPort,
    endpoints: [...s.endpoints],
    meshIP: gatewayOf(primary).ip,
    podCIDRs: [...s.claim.podCIDRs],
    claimedAt: s.claim.claimedAt,
    keepalive: s.keepalive ?? 0,
  };
}

/** The mesh key of a pod entry. */
export function podKey(p: PodRecord): string {
  return `${POD_ENTRY_PREFIX}${p.namespace}/${p.name}`;
}

/** Entry writes that turn the published pod set into `pods`. */
export interface PodOps {
  readonly set: readonly { key: string; payload: string }[];
  readonly del: readonly string[];
  /** Pods not published because their entry would be too large or malformed. */
  readonly dropped: readonly string[];
}

/**
 * Diffs the published pod entries (key -> JSON payload) against the wanted pods. Unchanged pods
 * produce no write, so republishing the same set is free.
 */
export function diffPodEntries(published: ReadonlyMap<string, string>, pods: readonly PodRecord[]): PodOps {
  const want = new Map<string, string>();
  const dropped: string[] = [];
  for (const p of pods) {
    const key = podKey(p);
    const payload = JSON.stringify({ name: p.name, namespace: p.namespace, ips: [...p.ips] });
    if (!p.name || !p.namespace || p.name.includes('/') || p.namespace.includes('/') || Buffer.byteLength(payload) + key.length > MAX_POD_ENTRY_BYTES) {
      dropped.push(key);
      continue;
    }
    want.set(key, payload);
  }
  const set: { key: string; payload: string }[] = [];
  for (const [key, payload] of want) if (published.get(key) !== payload) set.push({ key, payload });
  const del = [...published.keys()].filter((k) => !want.has(k));
  return { set, del, dropped };
}

/** The pod entries this member currently owns in a snapshot (as JSON text), e.g. left over from before a restart. */
export function ownPodEntries(snapshot: MeshSnapshot): Map<string, string> {
  const out = new Map<string, string>();
  const self = snapshot.members.find((m) => m.name === snapshot.self);
  if (!self) return out;
  const dec = new TextDecoder();
  for (const [key, e] of self.entries) {
    if (key.startsWith(POD_ENTRY_PREFIX) && !e.deleted) out.set(key, dec.decode(e.payload));
  }
  return out;
}

/**
 * Pod CIDRs other members claim, read leniently from their `node` entries (for choosing a free
 * block before the planner has run; values that do not parse as CIDRs are skipped).
 */
export function takenBlocks(snapshot: MeshSnapshot): string[] {
  const out = new Set<string>();
  const dec = new TextDecoder();
  for (const m of snapshot.members) {
    if (m.name === snapshot.self) continue;
    const e = m.entries.get(NODE_ENTRY_KEY);
    if (!e || e.deleted || e.payload.length > 64 * 1024) continue;
    try {
      const info = JSON.parse(dec.decode(e.payload)) as { podCIDRs?: unknown };
      if (!Array.isArray(info.podCIDRs)) continue;
      for (const c of info.podCIDRs.slice(0, 8)) if (typeof c === 'string' && c.length < 64 && IPCIDR.isValidCIDR(c)) out.add(c);
    } catch {
      // a malformed record is the planner's to count; here it simply claims nothing
    }
  }
  return [...out].sort();
}

/** One of this node's pod CIDRs lost to an overlapping, older (or same-age, lower-named) claim. */
export interface BlockConflict {
  /** This node's CIDR that lost (canonical). */
  readonly mine: string;
  /** The winning CIDR it overlaps (canonical); equal to `mine` when both claimed the same block. */
  readonly theirs: string;
  /** The node holding `theirs`. */
  readonly holder: string;
}

/**
 * The first of this node's CIDRs it lost given every other node's claim (resolved by
 * `src/ipam/claims.ts`), or undefined when it holds them all. All remotes count, whatever their
 * liveness, so a node that is briefly dead keeps its block.
 */
export function blockConflict(self: string, claim: BlockClaim, remotes: readonly RemoteNode[]): BlockConflict | undefined {
  const claims: IpamClaim[] = claim.podCIDRs.map((cidr) => ({ node: self, cidr, claimedAt: claim.claimedAt }));
  for (const r of remotes) {
    if (r.info.name === self) continue;
    for (const cidr of r.info.podCIDRs) claims.push({ node: r.info.name, cidr, claimedAt: r.info.claimedAt });
  }
  const first = claimsOf(analyzeClaims(claims), self).lost[0];
  return first ? { mine: first.claim.cidr, theirs: first.winner.cidr, holder: first.winner.node } : undefined;
}

/** One line naming both CIDRs and the holder, e.g. `pod CIDR 10.244.0.0/23 overlaps 10.244.1.0/24, already held by node b`. */
export function formatBlockConflict(c: BlockConflict): string {
  return c.mine === c.theirs
    ? `pod CIDR ${c.mine} is already held by node ${c.holder}`
    : `pod CIDR ${c.mine} overlaps ${c.theirs}, already held by node ${c.holder}`;
}

/** The winning node when this node lost any of its CIDRs; see {@link blockConflict}. */
export function blockLost(self: string, claim: BlockClaim, remotes: readonly RemoteNode[]): string | undefined {
  return blockConflict(self, claim, remotes)?.holder;
}
