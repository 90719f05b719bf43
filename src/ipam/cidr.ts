/**
 * Minimal, exact CIDR arithmetic on bigints for IPAM: parse, format, contain, overlap, index.
 * Pure and allocation-light, so the claim resolver and the block chooser can run over thousands of
 * claims per planning pass. Accepts dotted IPv4 and RFC 4291 IPv6 text (no zone ids, no embedded
 * IPv4 tail), which is all weft ever writes.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** A parsed CIDR: family, the network address (host bits cleared) and the prefix length. */
export interface Cidr {
  readonly family: 4 | 6;
  /** Network address as an unsigned integer, host bits zero. */
  readonly base: bigint;
  readonly prefix: number;
}

/** A CIDR or address string failed to parse or violated a constraint. */
export class CidrError extends Error {
  override name = 'CidrError';
}

/** Address width in bits of a family. */
export function familyBits(family: 4 | 6): 32 | 128 {
  return family === 4 ? 32 : 128;
}

/** Parses an IPv4 or IPv6 address (no prefix) to its family and integer value; throws {@link CidrError}. */
export function parseAddr(text: string): { family: 4 | 6; value: bigint } {
  if (typeof text !== 'string' || text.length > 45) throw new CidrError(`cidr: invalid address ${JSON.stringify(String(text).slice(0, 64))}`);
  if (isIPv4(text)) {
    let v = 0n;
    for (const part of text.split('.')) v = (v << 8n) | BigInt(Number(part));
    return { family: 4, value: v };
  }
  if (isIPv6(text) && !text.includes('.') && !text.includes('%')) {
    const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
    const h = head ? head.split(':') : [];
    const t = tail === undefined ? [] : tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    if (groups.length !== 8) throw new CidrError(`cidr: invalid address ${JSON.stringify(text)}`);
    let v = 0n;
    for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
    return { family: 6, value: v };
  }
  throw new CidrError(`cidr: invalid address ${JSON.stringify(text.slice(0, 64))}`);
}

/** Formats an integer address of a family as canonical text (RFC 5952 for IPv6). */
export function formatAddr(family: 4 | 6, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // Longest run of >= 2 zero groups becomes "::" (first one on ties), per RFC 5952.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/**
 * Parses "addr/len". With `strict`, host bits must be zero; otherwise they are cleared (the
 * canonical network is returned). Throws {@link CidrError} with the offending text.
 */
export function parseCidr(text: string, strict = false): Cidr {
  if (typeof text !== 'string' || text.length > 50) throw new CidrError(`cidr: invalid CIDR ${JSON.stringify(String(text).slice(0, 64))}`);
  const slash = text.indexOf('/');
  if (slash < 0) throw new CidrError(`cidr: invalid CIDR ${JSON.stringify(text)}: missing /prefix`);
  const { family, value } = parseAddr(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  const prefix = Number(lenText);
  if (!/^\d{1,3}$/.test(lenText) || prefix > familyBits(family)) {
    throw new CidrError(`cidr: invalid CIDR ${JSON.stringify(text)}: bad prefix length`);
  }
  const base = value & networkMask(family, prefix);
  if (strict && base !== value) throw new CidrError(`cidr: invalid CIDR ${JSON.stringify(text)}: host bits set`);
  return { family, base, prefix };
}

/** Canonical text of a CIDR ("10.244.3.0/24", "fd00::/120"). */
export function formatCidr(c: Cidr): string {
  return `${formatAddr(c.family, c.base)}/${c.prefix}`;
}

/** Canonicalizes CIDR text (clears host bits); throws {@link CidrError} when it does not parse. */
export function canonicalCidr(text: string): string {
  return formatCidr(parseCidr(text));
}

function networkMask(family: 4 | 6, prefix: number): bigint {
  const bits = BigInt(familyBits(family));
  const all = (1n << bits) - 1n;
  return all ^ ((1n << (bits - BigInt(prefix))) - 1n);
}

/** Number of addresses in a CIDR. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(familyBits(c.family) - c.prefix);
}

/** Last address of a CIDR (the broadcast address for IPv4). */
export function cidrLast(c: Cidr): bigint {
  return c.base + cidrSize(c) - 1n;
}

/** True when `inner` lies entirely inside `outer` (same family). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && inner.prefix >= outer.prefix && inner.base >= outer.base && cidrLast(inner) <= cidrLast(outer);
}

/** True when an address value of `family` lies inside `c`. */
export function cidrHas(c: Cidr, family: 4 | 6, value: bigint): boolean {
  return c.family === family && value >= c.base && value <= cidrLast(c);
}

/** True when two CIDRs share at least one address (for CIDRs this means one contains the other). */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.base <= cidrLast(b) && b.base <= cidrLast(a);
}

/**
 * A set of pairwise non-overlapping CIDRs (of both families) with O(log n) overlap queries: kept
 * sorted by (family, base), so the only candidate overlapping a new range is its predecessor or
 * successor.
 */
export class DisjointCidrSet {
  readonly #items: Cidr[] = [];

  /** Number of CIDRs held. */
  get size(): number {
    return this.#items.length;
  }

  /** The held CIDR that overlaps `c`, if any. */
  findOverlap(c: Cidr): Cidr | undefined {
    const i = this.#lowerBound(c);
    const next = this.#items[i];
    if (next && cidrOverlaps(next, c)) return next;
    const prev = this.#items[i - 1];
    if (prev && cidrOverlaps(prev, c)) return prev;
    return undefined;
  }

  /** Adds `c` when it overlaps nothing held; returns whether it was added. */
  add(c: Cidr): boolean {
    if (this.findOverlap(c)) return false;
    this.#items.splice(this.#lowerBound(c), 0, c);
    return true;
  }

  /** First index whose (family, base) is >= c's. */
  #lowerBound(c: Cidr): number {
    let lo = 0;
    let hi = this.#items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.#items[mid]!;
      if (m.family < c.family || (m.family === c.family && m.base < c.base)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
