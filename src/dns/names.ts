/**
 * DNS names for weft's zone: how pod, namespace and node names become DNS labels, and how pod IPs
 * become reverse (PTR) names. Pure functions, no I/O.
 *
 * The label rule (applied to pod names, namespaces and node names alike):
 * 1. lowercase the name (DNS lookups are case-insensitive; we store and compare lowercase);
 * 2. replace every character outside `[a-z0-9-]` (dots, underscores, non-ASCII, ...) by `-`;
 * 3. strip leading and trailing `-`;
 * 4. if the result is longer than 63 characters, keep its first 54 characters (trailing `-`
 *    stripped), then `-`, then 8 hex digits of the FNV-1a 32-bit hash of the ORIGINAL name, so the
 *    label is stable across nodes and restarts and two long names sharing a prefix stay distinct;
 * 5. if the result is empty (the name had no letter or digit) the name cannot be mapped and is not
 *    published (the table builder counts it).
 * So `web.v2` -> `web-v2`, `My_Pod` -> `my-pod`, a 100-character name -> 54 chars + `-` + hash.
 * When two different names map to the same label, the table builder decides (see table.ts).
 */

import { isIPv4, isIPv6 } from 'node:net';

/** Longest DNS label (RFC 1035). */
export const MAX_LABEL = 63;
/** Longest presentation-format DNS name without the trailing dot. */
export const MAX_NAME = 253;
const HASHED_PREFIX = MAX_LABEL - 9;
/** Longest zone such that `<63-char pod>.<63-char namespace>.pod.<zone>` still fits in 253 characters. */
export const MAX_ZONE = MAX_NAME - 2 * (MAX_LABEL + 1) - 'pod.'.length;

/** FNV-1a 32-bit over the UTF-16 code units of `s`, as 8 lowercase hex digits: a stable, cheap tag. */
export function fnv1a32Hex(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/** True when `s` is already a valid lowercase DNS label in the sense of the rule above. */
export function isDnsLabel(s: string): boolean {
  return s.length > 0 && s.length <= MAX_LABEL && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(s);
}

/**
 * Maps an arbitrary name (pod, namespace or node) to one DNS label by the rule in this module's
 * header, or returns undefined when it cannot be mapped (nothing alphanumeric left).
 */
export function toDnsLabel(raw: string): string | undefined {
  const lower = raw.toLowerCase();
  if (isDnsLabel(lower)) return lower;
  const replaced = lower.replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '');
  if (replaced.length === 0) return undefined;
  if (replaced.length <= MAX_LABEL) return replaced;
  const prefix = replaced.slice(0, HASHED_PREFIX).replace(/-+$/, '');
  return `${prefix}-${fnv1a32Hex(raw)}`;
}

/**
 * Normalises a configured zone: lowercase, no leading/trailing dot. Throws a {@link DnsNameError}
 * when it is not a sequence of valid labels of at most 253 characters in all.
 */
export function normalizeZone(zone: string): string {
  const z = zone.trim().toLowerCase().replace(/^\.+|\.+$/g, '');
  if (z.length === 0 || z.length > MAX_ZONE || !z.split('.').every(isDnsLabel)) {
    throw new DnsNameError(`dns: invalid zone ${JSON.stringify(zone)}`);
  }
  return z;
}

/** Error for names and zones weft cannot use, e.g. `dns: invalid zone "..."`. */
export class DnsNameError extends Error {
  override name = 'DnsNameError';
}

/** `<podLabel>.<nsLabel>.pod.<zone>`: the fully qualified pod name (lowercase, no trailing dot). */
export function podFqdn(podLabel: string, nsLabel: string, zone: string): string {
  return `${podLabel}.${nsLabel}.pod.${zone}`;
}

/** `<nodeLabel>.node.<zone>`: the fully qualified node name (lowercase, no trailing dot). */
export function nodeFqdn(nodeLabel: string, zone: string): string {
  return `${nodeLabel}.node.${zone}`;
}

/**
 * Expands an IPv6 address (any valid textual form, including embedded IPv4 and zone-free) to 32
 * lowercase hex nibbles, or undefined when `ip` is not IPv6.
 */
export function expandIPv6(ip: string): string | undefined {
  if (!isIPv6(ip)) return undefined;
  let s = ip.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const hi = ((Number(v4[1]) << 8) | Number(v4[2])).toString(16);
    const lo = ((Number(v4[3]) << 8) | Number(v4[4])).toString(16);
    s = `${s.slice(0, v4.index)}${hi}:${lo}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return undefined;
  return groups.map((g) => g.padStart(4, '0')).join('');
}

/**
 * The reverse-lookup name of an IP address: `d.c.b.a.in-addr.arpa` for IPv4, 32 nibbles then
 * `ip6.arpa` for IPv6. Returns undefined for anything that is not an IP address.
 */
export function reverseName(ip: string): string | undefined {
  if (isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const nibbles = expandIPv6(ip);
  if (nibbles === undefined) return undefined;
  return `${nibbles.split('').reverse().join('.')}.ip6.arpa`;
}

/**
 * The reverse zones a pod CIDR is authoritative for: the CIDR rounded to octet (IPv4) or nibble
 * (IPv6) boundaries, expanded to at most `maxZones` zones (e.g. `10.244.3.0/24` ->
 * `3.244.10.in-addr.arpa`; a /23 -> two /24 zones). Returns [] for an invalid CIDR or one that
 * would need more zones than `maxZones`.
 */
export function reverseZonesOf(cidr: string, maxZones = 256): string[] {
  const slash = cidr.indexOf('/');
  if (slash < 0) return [];
  const addr = cidr.slice(0, slash);
  const prefixText = cidr.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return [];
  const prefix = Number(prefixText);
  if (isIPv4(addr)) {
    if (prefix > 32) return [];
    const aligned = Math.ceil(prefix / 8) * 8;
    const count = 2 ** (aligned - prefix);
    if (count > maxZones) return [];
    const base = addr.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const mask = prefix === 0 ? 0 : Number((0xffffffffn << BigInt(32 - prefix)) & 0xffffffffn);
    const net = Number(BigInt(base) & BigInt(mask));
    const out: string[] = [];
    for (let i = 0; i < count; i++) {
      const v = net + i * 2 ** (32 - aligned);
      const octets = [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].slice(0, aligned / 8);
      out.push([...octets.reverse().map(String), 'in-addr', 'arpa'].join('.'));
    }
    return out;
  }
  const nibbles = expandIPv6(addr);
  if (nibbles === undefined || prefix > 128) return [];
  const aligned = Math.ceil(prefix / 4) * 4;
  const count = 2 ** (aligned - prefix);
  if (count > maxZones) return [];
  const value = BigInt(`0x${nibbles}`);
  const mask = prefix === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - prefix)) - 1n);
  const net = value & mask;
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const v = net + BigInt(i) * (1n << BigInt(128 - aligned));
    const hex = v.toString(16).padStart(32, '0').slice(0, aligned / 4);
    out.push([...hex.split('').reverse(), 'ip6', 'arpa'].join('.'));
  }
  return out;
}
