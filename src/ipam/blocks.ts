/**
 * Per-node pod blocks: splitting the cluster CIDR(s) into blocks, choosing a free block for a
 * node, and validating a fixed `--pod-cidr`. Pure: the caller passes the taken set (the winners of
 * {@link resolveClaims}) and, for re-claims, a random source. The agent decides when to claim.
 */
import { CidrError, cidrContains, cidrOverlaps, DisjointCidrSet, familyBits, formatCidr, parseCidr, type Cidr } from './cidr.ts';

/** No free block is left in the cluster CIDR (or the probe budget ran out). */
export class BlockExhaustedError extends Error {
  override name = 'BlockExhaustedError';
}

/** A fixed pod CIDR (flag or Kubernetes podCIDR) does not fit the cluster layout. */
export class PodCidrError extends Error {
  override name = 'PodCidrError';
}

/** Largest number of candidate blocks probed before giving up (bounds work for huge IPv6 spaces). */
export const MAX_PROBES = 1 << 20;

/**
 * Block prefix length for a family: `blockSize` for IPv4; for IPv6 the same number of host bits
 * (a /24 in IPv4, 8 host bits, gives a /120), unless `blockSize6` is given.
 */
export function blockPrefix(family: 4 | 6, blockSize: number, blockSize6?: number): number {
  return family === 4 ? blockSize : (blockSize6 ?? 128 - (32 - blockSize));
}

/** How a cluster CIDR divides into blocks: the count (bigint, IPv6 may be huge) and the i-th block. */
export interface BlockLayout {
  readonly cluster: Cidr;
  readonly prefix: number;
  readonly count: bigint;
  /** The block at index `i` (0 <= i < count). */
  blockAt(i: bigint): Cidr;
  /** Index of a block of this layout, or undefined when `c` is not one of its blocks. */
  indexOf(c: Cidr): bigint | undefined;
}

/** Splits `clusterCidr` into blocks of `/prefix`; throws {@link CidrError} / {@link PodCidrError} on bad input. */
export function blockLayout(clusterCidr: string, prefix: number): BlockLayout {
  const cluster = parseCidr(clusterCidr);
  if (!Number.isInteger(prefix) || prefix < cluster.prefix || prefix > familyBits(cluster.family)) {
    throw new PodCidrError(`ipam: block size /${prefix} does not fit cluster CIDR ${formatCidr(cluster)}`);
  }
  const hostBits = BigInt(familyBits(cluster.family) - prefix);
  const count = 1n << BigInt(prefix - cluster.prefix);
  return {
    cluster,
    prefix,
    count,
    blockAt(i: bigint): Cidr {
      if (i < 0n || i >= count) throw new RangeError(`ipam: block index ${i} out of range`);
      return { family: cluster.family, base: cluster.base + (i << hostBits), prefix };
    },
    indexOf(c: Cidr): bigint | undefined {
      if (c.prefix !== prefix || !cidrContains(cluster, c)) return undefined;
      return (c.base - cluster.base) >> hostBits;
    },
  };
}

/** 64-bit FNV-1a of a string's UTF-8 bytes: a stable, platform-independent start index per node name. */
export function nodeHash(name: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(name)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

/** Input of {@link chooseBlock}. */
export interface ChooseBlockInput {
  /** One cluster CIDR (the family to allocate in). */
  readonly clusterCidr: string;
  /** Block prefix length in that family (see {@link blockPrefix}). */
  readonly prefix: number;
  readonly node: string;
  /** CIDRs already held by other nodes (any size); a candidate overlapping any of them is skipped. */
  readonly taken: Iterable<string>;
  /**
   * Random source in [0, 1). When given, probing starts at a random block instead of the node's
   * hash; the agent passes it when re-claiming after losing a conflict, so two nodes whose names
   * hash to the same start do not keep colliding.
   */
  readonly random?: () => number;
  /** Blocks to skip besides `taken` (e.g. a block this node just lost). */
  readonly avoid?: Iterable<string>;
}

/**
 * Picks a free block for a node: starts at hash(node) mod count (or a random index) and probes
 * linearly, wrapping around. Deterministic for a given input. Reserves nothing: the agent publishes
 * the claim and re-runs {@link resolveClaims}. Throws {@link BlockExhaustedError} when none is free.
 */
export function chooseBlock(input: ChooseBlockInput): string {
  const layout = blockLayout(input.clusterCidr, input.prefix);
  const busy = new DisjointCidrSet();
  const extra: Cidr[] = [];
  for (const t of [...input.taken, ...(input.avoid ?? [])]) {
    let c: Cidr;
    try {
      c = parseCidr(t);
    } catch {
      continue; // unparsable taken entries cannot block anything
    }
    if (c.family !== layout.cluster.family) continue;
    // Taken CIDRs may overlap each other (e.g. a /16 claim and a /24 inside it); keep the rest aside.
    if (!busy.add(c)) extra.push(c);
  }
  const start = input.random
    ? scaleRandom(input.random(), layout.count)
    : nodeHash(input.node) % layout.count;
  const probes = layout.count < BigInt(MAX_PROBES) ? layout.count : BigInt(MAX_PROBES);
  for (let k = 0n; k < probes; k++) {
    const cand = layout.blockAt((start + k) % layout.count);
    if (busy.findOverlap(cand)) continue;
    if (extra.some((e) => cidrOverlaps(e, cand))) continue;
    return formatCidr(cand);
  }
  throw new BlockExhaustedError(`ipam: no free /${input.prefix} block left in ${formatCidr(layout.cluster)} for node ${input.node} (${busy.size} taken)`);
}

function scaleRandom(r: number, count: bigint): bigint {
  const x = Number.isFinite(r) && r >= 0 && r < 1 ? r : 0;
  // 53 bits of randomness spread over the index space (IPv6 spaces are larger than 2^53).
  return (BigInt(Math.floor(x * 2 ** 53)) * count) >> 53n;
}

/**
 * Validates a fixed pod CIDR (from `--pod-cidr` or the Kubernetes node's podCIDR): it must parse,
 * carry no host bits, lie inside the cluster CIDR of its family and have the block prefix length.
 * Returns the canonical CIDR; throws {@link PodCidrError} naming the problem.
 */
export function validatePodCidr(podCidr: string, clusterCidrs: readonly string[], blockSize: number, blockSize6?: number): string {
  let c: Cidr;
  try {
    c = parseCidr(podCidr, true);
  } catch (err) {
    throw new PodCidrError(`ipam: pod CIDR ${JSON.stringify(podCidr)}: ${err instanceof CidrError ? err.message : 'invalid'}`, { cause: err });
  }
  const cluster = clusterCidrs.map((k) => parseCidr(k)).find((k) => k.family === c.family);
  if (!cluster) throw new PodCidrError(`ipam: pod CIDR ${podCidr}: no IPv${c.family} cluster CIDR is configured`);
  if (!cidrContains(cluster, c)) throw new PodCidrError(`ipam: pod CIDR ${podCidr} is not inside the cluster CIDR ${formatCidr(cluster)}`);
  const want = blockPrefix(c.family, blockSize, blockSize6);
  if (c.prefix !== want) throw new PodCidrError(`ipam: pod CIDR ${podCidr} must be a /${want} (block size)`);
  return formatCidr(c);
}

/**
 * The node's gateway (and mesh IP) in a block: the first host address, e.g. 10.244.3.1 for
 * 10.244.3.0/24. Returns "addr/prefix" as put on the bridge.
 */
export function gatewayOf(block: string): { ip: string; cidr: string } {
  const c = parseCidr(block);
  if (c.prefix > familyBits(c.family) - 2) throw new PodCidrError(`ipam: block ${block} is too small for a gateway and pods`);
  const ip = formatCidr({ family: c.family, base: c.base + 1n, prefix: familyBits(c.family) }).split('/')[0]!;
  return { ip, cidr: `${ip}/${c.prefix}` };
}
