/**
 * The seed's pod-CIDR check in the join handshake (issue 7, address planning): a joiner with a fixed
 * `--pod-cidr` sends it inside the sealed request, and the seed refuses the join before any claim is
 * published (so the token is not spent) when a CIDR overlaps a block held in the mesh, or lies outside
 * the cluster CIDRs. Pure: the caller passes the snapshot and the cluster CIDRs.
 *
 * "Held" is what every member's planner decides (`recordsFromSnapshot`: the winning claims of every
 * member in the snapshot, whatever its liveness, revoked members excluded), so the seed refuses exactly
 * what the joined agent would be refused afterwards (`fixed --pod-cidr refused: ...`, src/agent/agent.ts).
 */
import IPCIDR from 'ip-cidr';
import type { MeshSnapshot } from '../../mesh/api.ts';
import { CidrError, cidrContains, cidrOverlaps, formatCidr, parseCidr, type Cidr } from '../ipam/cidr.ts';
import { recordsFromSnapshot } from '../plan/records.ts';
import { withoutRevoked } from './store.ts';

/** At most this many pod CIDRs in a join request (one per family, as `--pod-cidr` allows). */
export const MAX_JOIN_POD_CIDRS = 2;

/** Why a joiner's pod CIDRs are refused. */
export type PodCidrRefusal =
  | { readonly code: 'cidr-overlap'; readonly msg: string; readonly mine: string; readonly theirs: string; readonly holder: string }
  | { readonly code: 'cidr-outside'; readonly msg: string; readonly mine: string; readonly cluster: readonly string[] }
  | { readonly code: 'bad-request'; readonly msg: string };

/**
 * Shape check of the pod CIDRs a joiner sends (before anything else looks at them): a list of at most
 * {@link MAX_JOIN_POD_CIDRS} CIDR strings that `ip-cidr` accepts, without host bits. Returns the canonical
 * CIDRs, or a message saying what is wrong.
 */
export function parseJoinPodCidrs(v: unknown): { ok: true; cidrs: string[] } | { ok: false; msg: string } {
  if (!Array.isArray(v) || v.length > MAX_JOIN_POD_CIDRS) return { ok: false, msg: `podCIDRs must be a list of at most ${MAX_JOIN_POD_CIDRS} CIDRs` };
  const out: string[] = [];
  for (const c of v) {
    if (typeof c !== 'string' || c.length > 50 || !/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(c) || !IPCIDR.isValidCIDR(c)) return { ok: false, msg: `pod CIDR ${JSON.stringify(String(c).slice(0, 64))} is not a CIDR` };
    try {
      out.push(formatCidr(parseCidr(c, true)));
    } catch (err) {
      return { ok: false, msg: err instanceof CidrError ? err.message : `pod CIDR ${c} does not parse` };
    }
  }
  return { ok: true, cidrs: out };
}

/**
 * Checks a joiner's fixed pod CIDRs against the mesh: each must lie inside a cluster CIDR of its family
 * (when `clusterCIDRs` is given) and overlap no block another node holds (the joiner's own name is skipped,
 * so a joiner retrying after a lost grant is not refused against itself). Returns the first refusal, or
 * undefined when the CIDRs are acceptable.
 */
export function podCidrRefusal(snapshot: MeshSnapshot, joiner: string, podCIDRs: readonly string[], clusterCIDRs: readonly string[] | undefined): PodCidrRefusal | undefined {
  const parsed = parseJoinPodCidrs(podCIDRs);
  if (!parsed.ok) return { code: 'bad-request', msg: parsed.msg };
  if (parsed.cidrs.length === 0) return undefined;
  const mine = parsed.cidrs.map((c) => ({ text: c, cidr: parseCidr(c) }));
  if (clusterCIDRs !== undefined && clusterCIDRs.length > 0) {
    const cluster = clusterCIDRs.map((c) => parseCidr(c));
    for (const m of mine) {
      if (!cluster.some((k) => cidrContains(k, m.cidr))) {
        const same = cluster.filter((k) => k.family === m.cidr.family).map(formatCidr);
        return {
          code: 'cidr-outside',
          mine: m.text,
          cluster: clusterCIDRs,
          msg: same.length > 0 ? `pod CIDR ${m.text} is outside the mesh's cluster CIDR ${same.join(', ')}` : `pod CIDR ${m.text}: the mesh has no IPv${m.cidr.family} cluster CIDR (${clusterCIDRs.join(', ')})`,
        };
      }
    }
  }
  // Without cluster CIDRs every claim counts (nothing is dropped as out of range).
  const scope = clusterCIDRs !== undefined && clusterCIDRs.length > 0 ? clusterCIDRs : ['0.0.0.0/0', '::/0'];
  const { nodes, self } = recordsFromSnapshot(withoutRevoked(snapshot), { clusterCIDRs: scope });
  const holders: { node: string; cidr: Cidr; text: string }[] = [];
  for (const n of self ? [self, ...nodes] : nodes) {
    if (n.info.name === joiner) continue;
    for (const c of n.info.podCIDRs) holders.push({ node: n.info.name, cidr: parseCidr(c), text: c });
  }
  for (const m of mine) {
    const hit = holders.find((h) => cidrOverlaps(h.cidr, m.cidr));
    if (hit) {
      const msg = hit.text === m.text ? `pod CIDR ${m.text} is already held by node ${hit.node}` : `pod CIDR ${m.text} overlaps ${hit.text}, already held by node ${hit.node}`;
      return { code: 'cidr-overlap', mine: m.text, theirs: hit.text, holder: hit.node, msg };
    }
  }
  return undefined;
}
