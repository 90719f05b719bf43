/**
 * Address, CIDR and endpoint helpers for the planner and the datapath diff, built on the IPAM
 * engineer's exact bigint arithmetic (`src/ipam/cidr.ts`): non-throwing canonicalizers, a total
 * order for deterministic output, and strict "ip:port" endpoint parsing. Pure.
 */
import { isIPv4 } from 'node:net';
import { formatAddr, formatCidr, parseAddr, parseCidr, type Cidr } from '../ipam/cidr.ts';

/** Re-exported IPAM CIDR arithmetic, so planner code has one import for addresses. */
export { cidrContains, cidrHas, cidrOverlaps, formatCidr, parseCidr, type Cidr } from '../ipam/cidr.ts';

/** An address family. */
export type Family = 4 | 6;

/** A parsed address: its family and its value as an unsigned integer. */
export interface ParsedIP {
  readonly family: Family;
  readonly value: bigint;
}

/** Parses an IP literal (no prefix, no zone); null when it is not one. */
export function tryParseIP(s: unknown): ParsedIP | null {
  if (typeof s !== 'string') return null;
  // IPv4 fast path (one bigint instead of four): pod records carry tens of thousands of these.
  if (s.length <= 15 && isIPv4(s)) {
    const [a, b, c, d] = s.split('.');
    return { family: 4, value: BigInt(Number(a) * 16777216 + Number(b) * 65536 + Number(c) * 256 + Number(d)) };
  }
  try {
    return parseAddr(s);
  } catch {
    return null;
  }
}

/** Parses a CIDR; with `strict` (the default) host bits must be zero. Null when it is not one. */
export function tryParseCIDR(s: unknown, strict = true): Cidr | null {
  if (typeof s !== 'string') return null;
  try {
    return parseCidr(s, strict);
  } catch {
    return null;
  }
}

/** Canonical text of an IP literal, or null. */
export function canonicalIP(s: unknown): string | null {
  // node's isIPv4 accepts only canonical dotted quads (no leading zeros), so the text is canonical.
  if (typeof s === 'string' && s.length <= 15 && isIPv4(s)) return s;
  const p = tryParseIP(s);
  return p ? formatAddr(p.family, p.value) : null;
}

/** Canonical text of a CIDR (host bits must be zero unless `strict` is false), or null. */
export function canonicalCIDR(s: unknown, strict = true): string | null {
  const c = tryParseCIDR(s, strict);
  return c ? formatCidr(c) : null;
}

/** The canonical host route (/32 or /128) of an IP literal, or null. */
export function hostCIDR(ip: unknown): string | null {
  const p = tryParseIP(ip);
  return p ? `${formatAddr(p.family, p.value)}/${p.family === 4 ? 32 : 128}` : null;
}

/** Family of a CIDR or address string by its text (the string must already be valid). */
export function familyOf(s: string): Family {
  return s.includes(':') ? 6 : 4;
}

/**
 * Total order on CIDR strings: IPv4 first, then by network address, then by prefix length.
 * Strings that do not parse sort last, by code units. Used for deterministic planner output.
 */
export function compareCIDR(a: string, b: string): number {
  const x = tryParseCIDR(a, false);
  const y = tryParseCIDR(b, false);
  if (!x || !y) return x ? -1 : y ? 1 : a < b ? -1 : a > b ? 1 : 0;
  if (x.family !== y.family) return x.family - y.family;
  if (x.base !== y.base) return x.base < y.base ? -1 : 1;
  return x.prefix - y.prefix;
}

/** Whether an address is link-local (169.254.0.0/16, fe80::/10); weft never removes those. */
export function isLinkLocal(ip: ParsedIP): boolean {
  return ip.family === 4 ? ip.value >> 16n === 0xa9fen : ip.value >> 118n === 0x3fan;
}

/** A parsed underlay endpoint. */
export interface ParsedEndpoint {
  readonly family: Family;
  /** Canonical address text. */
  readonly ip: string;
  readonly value: bigint;
  readonly port: number;
}

/**
 * Parses "ip:port" or "[ipv6]:port". The host must be an IP literal (the planner does no DNS), not
 * unspecified and not multicast; the port 1..65535. Null otherwise.
 */
export function parseEndpoint(s: unknown): ParsedEndpoint | null {
  if (typeof s !== 'string' || s.length > 64) return null;
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const ip = tryParseIP(m[1] ?? m[2]);
  if (!ip || (m[1] !== undefined) !== (ip.family === 6)) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  if (ip.value === 0n) return null;
  const multicast = ip.family === 4 ? ip.value >> 28n === 0xen : ip.value >> 120n === 0xffn;
  if (multicast) return null;
  return { family: ip.family, ip: formatAddr(ip.family, ip.value), value: ip.value, port };
}

/** Canonical text of a parsed endpoint ("192.0.2.1:51820", "[2001:db8::1]:51820"). */
export function formatEndpoint(e: ParsedEndpoint): string {
  return e.family === 6 ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`;
}

/** Canonical text of an endpoint string, or null when it does not parse. */
export function canonicalEndpoint(s: unknown): string | null {
  const e = parseEndpoint(s);
  return e ? formatEndpoint(e) : null;
}
