/**
 * Deterministic resolution of pod-block claims gossiped through the mesh. Every member runs
 * {@link resolveClaims} over the same set of claims (in whatever order it received them) and gets
 * the same winners: the older claim wins, a tie breaks on the lower node name, and CIDRs that
 * overlap without being equal conflict exactly like equal ones. Pure: no clock, no I/O.
 */
import { CidrError, DisjointCidrSet, formatCidr, parseCidr, type Cidr } from './cidr.ts';

/** One node's claim on one pod CIDR, as published in its {@link NodeInfo} (`podCIDRs` + `claimedAt`). */
export interface BlockClaim {
  readonly node: string;
  readonly cidr: string;
  /** When the node first claimed it, ms since the epoch. */
  readonly claimedAt: number;
  /**
   * Optional: `cidr` already parsed by the caller, who then guarantees that `cidr` is canonical
   * text and this is its parse (the planner's memo of node records has both), so a resolution pass
   * over thousands of claims does not parse and format them again. Not copied to the results.
   */
  readonly parsed?: Cidr;
}

/** A claim that lost to an older (or same-age, lower-named) overlapping claim. */
export interface LostClaim {
  readonly claim: BlockClaim;
  /** The winning claim it overlaps. */
  readonly winner: BlockClaim;
}

/** A claim that cannot take part: unparsable CIDR, bad node name or bad timestamp. */
export interface InvalidClaim {
  readonly claim: BlockClaim;
  readonly reason: string;
}

/** Full outcome of a resolution pass. */
export interface ClaimAnalysis {
  /** Canonical CIDR -> winning claim (with its CIDR canonicalized). Winners never overlap. */
  readonly winners: Map<string, BlockClaim>;
  /** Claims that lost, each with the claim that beat it; sorted in resolution order. */
  readonly lost: readonly LostClaim[];
  readonly invalid: readonly InvalidClaim[];
}

/** Longest node name accepted (a DNS name, like a Kubernetes node name). */
export const MAX_NODE_NAME = 253;

interface Parsed {
  readonly claim: BlockClaim;
  readonly cidr: Cidr;
  readonly key: string;
}

/** Total order on claims: claimedAt, then node name, then canonical CIDR text (code-unit order, locale-free). */
function compare(a: Parsed, b: Parsed): number {
  if (a.claim.claimedAt !== b.claim.claimedAt) return a.claim.claimedAt < b.claim.claimedAt ? -1 : 1;
  if (a.claim.node !== b.claim.node) return a.claim.node < b.claim.node ? -1 : 1;
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  return 0;
}

/**
 * Resolves claims and reports conflicts. Exact duplicates (same node, same CIDR) collapse to the
 * oldest. Greedy in the total order (older first, then lower node name): a claim wins when it
 * overlaps no claim already won, otherwise it loses to the one it overlaps. Because the order is
 * total, the result does not depend on the input order.
 */
export function analyzeClaims(claims: Iterable<BlockClaim>): ClaimAnalysis {
  const invalid: InvalidClaim[] = [];
  const byNodeCidr = new Map<string, Parsed>();
  for (const claim of claims) {
    const reason = checkClaim(claim);
    if (reason) { invalid.push({ claim, reason }); continue; }
    let cidr: Cidr;
    let key: string;
    if (claim.parsed !== undefined) {
      cidr = claim.parsed;
      key = claim.cidr;
    } else {
      try {
        cidr = parseCidr(claim.cidr);
      } catch (err) {
        invalid.push({ claim, reason: err instanceof CidrError ? err.message : 'unparsable CIDR' });
        continue;
      }
      key = formatCidr(cidr);
    }
    const p: Parsed = { claim: { node: claim.node, cidr: key, claimedAt: claim.claimedAt }, cidr, key };
    const dedupe = `${claim.node}\u0000${key}`;
    const prev = byNodeCidr.get(dedupe);
    if (!prev || p.claim.claimedAt < prev.claim.claimedAt) byNodeCidr.set(dedupe, p);
  }
  const ordered = [...byNodeCidr.values()].sort(compare);
  const taken = new DisjointCidrSet();
  const winnerOf = new Map<Cidr, BlockClaim>();
  const winners = new Map<string, BlockClaim>();
  const lost: LostClaim[] = [];
  for (const p of ordered) {
    const hit = taken.findOverlap(p.cidr);
    if (hit) {
      lost.push({ claim: p.claim, winner: winnerOf.get(hit)! });
      continue;
    }
    taken.add(p.cidr);
    winnerOf.set(p.cidr, p.claim);
    winners.set(p.key, p.claim);
  }
  return { winners, lost, invalid };
}

/** Canonical CIDR -> winning claim; see {@link analyzeClaims} for the rules and the conflict report. */
export function resolveClaims(claims: Iterable<BlockClaim>): Map<string, BlockClaim> {
  return analyzeClaims(claims).winners;
}

/**
 * Which of `node`'s own claims it holds and which it lost (the agent re-claims a new block for a
 * lost one and tells the pods on it to restart). CIDRs are canonical.
 */
export function claimsOf(analysis: ClaimAnalysis, node: string): { held: string[]; lost: LostClaim[] } {
  const held: string[] = [];
  for (const [cidr, w] of analysis.winners) if (w.node === node) held.push(cidr);
  return { held, lost: analysis.lost.filter((l) => l.claim.node === node) };
}

function checkClaim(c: BlockClaim): string | undefined {
  if (c === null || typeof c !== 'object') return 'claim is not an object';
  if (typeof c.node !== 'string' || c.node.length === 0 || c.node.length > MAX_NODE_NAME) return 'bad node name';
  if (typeof c.cidr !== 'string') return 'cidr is not a string';
  if (typeof c.claimedAt !== 'number' || !Number.isSafeInteger(c.claimedAt) || c.claimedAt < 0) return 'bad claimedAt';
  return undefined;
}
