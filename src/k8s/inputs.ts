/**
 * What the agent takes from a Kubernetes snapshot, merged with its flags: the pod block, the mesh
 * seeds and the endpoint addresses. Pure; the agent calls it at start-up (after
 * {@link KubeSource.waitForSync}) and whenever it wants to re-evaluate.
 *
 * Precedence: an explicit `--pod-cidr` wins over `spec.podCIDRs` (the operator said so); flag seeds
 * come first, then the other nodes from Kubernetes. A Kubernetes pod CIDR outside the cluster CIDR
 * is not used: weft routes only the cluster CIDR into the WireGuard interface (fail closed), so
 * such a block could never be reached through the mesh.
 */
import { type Cidr, cidrContains, formatCidr, parseCidr } from '../ipam/cidr.ts';
import type { KubeSnapshot } from './source.ts';

/** The agent settings that the Kubernetes inputs are merged with (names as in `src/config.ts`). */
export interface KubeInputConfig {
  /** Seeds from `--seeds`, already formatted "host:port" / "[v6]:port". */
  readonly seeds: readonly string[];
  /** A fixed `--pod-cidr` (canonical), empty when not given. */
  readonly podCIDRs: readonly string[];
  /** The cluster CIDRs (canonical). */
  readonly clusterCIDRs: readonly string[];
}

/** The merged inputs, and why anything from Kubernetes was not used. */
export interface KubeInputs {
  /** The node's pod block(s) to use as a fixed claim; empty = claim a block through the mesh. */
  readonly podCIDRs: readonly string[];
  /** Where {@link podCIDRs} came from. */
  readonly podCIDRSource: 'flag' | 'kubernetes' | 'none';
  /** Seeds for `mesh.start`: flag seeds first, then Kubernetes nodes, without duplicates. */
  readonly seeds: readonly string[];
  /** This node's underlay addresses from its Node (InternalIPs first), for its mesh endpoints. */
  readonly endpointIPs: readonly string[];
  /** Human-readable reasons something from Kubernetes was ignored; the agent logs them as warnings. */
  readonly problems: readonly string[];
}

/** Smallest usable IPv4 block: network, gateway, at least one pod, broadcast. */
const MAX_V4_PREFIX = 30;
const MAX_V6_PREFIX = 126;

/**
 * Merges a Kubernetes snapshot (or none: no Kubernetes) into the agent's flags. Never throws on
 * snapshot content: anything unusable is left out and explained in `problems`.
 */
export function kubeInputs(cfg: KubeInputConfig, snap: KubeSnapshot | undefined): KubeInputs {
  const problems: string[] = [];
  const seeds = [...new Set([...cfg.seeds, ...(snap?.seeds ?? [])])];
  const endpointIPs = snap?.endpointIPs ?? [];
  const kubeCIDRs = snap?.podCIDRs ?? [];

  if (cfg.podCIDRs.length > 0) {
    const flag = [...cfg.podCIDRs].sort().join(',');
    const kube = [...kubeCIDRs].sort().join(',');
    if (kubeCIDRs.length > 0 && kube !== flag) {
      problems.push(`k8s: node spec.podCIDRs ${kube} differ from --pod-cidr ${flag}; using --pod-cidr`);
    }
    return { podCIDRs: cfg.podCIDRs, podCIDRSource: 'flag', seeds, endpointIPs, problems };
  }

  const cluster: Cidr[] = [];
  for (const c of cfg.clusterCIDRs) {
    try {
      cluster.push(parseCidr(c));
    } catch {
      problems.push(`k8s: cluster CIDR ${c} does not parse`);
    }
  }
  const used: string[] = [];
  for (const text of kubeCIDRs) {
    let c: Cidr;
    try {
      c = parseCidr(text, true);
    } catch {
      problems.push(`k8s: node spec.podCIDRs entry ${text} does not parse; ignored`);
      continue;
    }
    if (!cluster.some((outer) => cidrContains(outer, c))) {
      problems.push(`k8s: node spec.podCIDRs entry ${text} is outside the cluster CIDR ${cfg.clusterCIDRs.join(',')}; ignored`);
      continue;
    }
    if (c.prefix > (c.family === 4 ? MAX_V4_PREFIX : MAX_V6_PREFIX)) {
      problems.push(`k8s: node spec.podCIDRs entry ${text} is too small for pods; ignored`);
      continue;
    }
    if (used.some((u) => parseCidr(u).family === c.family)) {
      problems.push(`k8s: node spec.podCIDRs has a second ${c.family === 4 ? 'IPv4' : 'IPv6'} block ${text}; ignored`);
      continue;
    }
    used.push(formatCidr(c));
  }
  return { podCIDRs: used, podCIDRSource: used.length > 0 ? 'kubernetes' : 'none', seeds, endpointIPs, problems };
}
