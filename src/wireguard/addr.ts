/**
 * Address helpers shared by the WireGuard backends: parse and canonicalize IP addresses, CIDRs and
 * endpoints, and validate a {@link WgDeviceUpdate} before anything is applied. Pure.
 *
 * Canonical forms are what the kernel and wireguard-go report back, so that a reconciler comparing
 * desired and actual state never sees a spurious difference: CIDRs have their host bits cleared
 * (`10.1.2.3/24` -> `10.1.2.0/24`), IPv6 is lowercase and compressed (RFC 5952), endpoints are
 * `ip:port` or `[ipv6]:port`. Address parsing and formatting is {@link parseAddr} / {@link formatAddr}
 * of src/ipam/cidr.ts (the planner's), so both sides of the diff canonicalize the same way.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { WgDeviceUpdate, WgPeerUpdate } from './backend.ts';
import { WgInputError } from './errors.ts';
import { isValidKey } from './keys.ts';
import { formatAddr, parseAddr } from '../ipam/cidr.ts';

/** A parsed IP address: family and network-order bytes (4 or 16). */
export interface ParsedIP {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
}

/** Parses an IPv4 or IPv6 literal (no zone, no brackets); null when it is not one. */
export function parseIP(s: string): ParsedIP | null {
  if (typeof s !== 'string' || s.length > 64) return null;
  let text = s;
  // parseAddr takes no embedded IPv4 tail (`::ffff:192.0.2.1`), which is valid input here, so a
  // valid one is rewritten as its two hex groups first.
  const tail = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (tail && isIPv6(s)) {
    const [a, b, c, d] = tail.slice(2).map(Number) as [number, number, number, number];
    text = `${tail[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  let addr: { family: 4 | 6; value: bigint };
  try {
    addr = parseAddr(text);
  } catch {
    return null;
  }
  const bytes = new Uint8Array(addr.family === 4 ? 4 : 16);
  for (let i = bytes.length - 1, v = addr.value; i >= 0; i--, v >>= 8n) bytes[i] = Number(v & 0xffn);
  return { family: addr.family, bytes };
}

/** Formats address bytes (4 or 16) in canonical text form (RFC 5952 for IPv6). */
export function formatIP(bytes: Uint8Array): string {
  if (bytes.length !== 4 && bytes.length !== 16) throw new WgInputError(`wireguard: address of ${bytes.length} bytes`);
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return formatAddr(bytes.length === 4 ? 4 : 6, value);
}

/** A parsed CIDR with host bits cleared. */
export interface ParsedCIDR extends ParsedIP {
  readonly prefix: number;
}

/** Parses a CIDR (`addr/len`; a bare address means a host route) and clears host bits; null when invalid. */
export function parseCIDR(s: string): ParsedCIDR | null {
  if (typeof s !== 'string' || s.length > 80) return null;
  const slash = s.indexOf('/');
  const ip = parseIP(slash < 0 ? s : s.slice(0, slash));
  if (!ip) return null;
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  const bytes = new Uint8Array(ip.bytes);
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family: ip.family, bytes, prefix };
}

/** Canonical text of a CIDR (host bits cleared, explicit prefix); throws {@link WgInputError}. */
export function canonicalCIDR(s: string): string {
  const c = parseCIDR(s);
  if (!c) throw new WgInputError(`wireguard: invalid allowed IP ${JSON.stringify(String(s).slice(0, 80))}`);
  return `${formatIP(c.bytes)}/${c.prefix}`;
}

/** A parsed endpoint. */
export interface ParsedEndpoint extends ParsedIP {
  readonly port: number;
}

/** Parses `ip:port` or `[ipv6]:port` (port 1-65535); null when invalid. */
export function parseEndpoint(s: string): ParsedEndpoint | null {
  if (typeof s !== 'string' || s.length > 80) return null;
  let host: string;
  let port: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') return null;
    host = s.slice(1, close);
    port = s.slice(close + 2);
    if (!isIPv6(host)) return null;
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return null;
    host = s.slice(0, colon);
    port = s.slice(colon + 1);
    if (!isIPv4(host)) return null;
  }
  if (!/^\d{1,5}$/.test(port)) return null;
  const p = Number(port);
  if (p < 1 || p > 65535) return null;
  const ip = parseIP(host);
  return ip ? { ...ip, port: p } : null;
}

/** Formats an endpoint canonically: `ip:port` or `[ipv6]:port`. */
export function formatEndpoint(bytes: Uint8Array, port: number): string {
  const h = formatIP(bytes);
  return bytes.length === 16 ? `[${h}]:${port}` : `${h}:${port}`;
}

/** Canonical text of an endpoint; throws {@link WgInputError}. */
export function canonicalEndpoint(s: string): string {
  const e = parseEndpoint(s);
  if (!e) throw new WgInputError(`wireguard: invalid endpoint ${JSON.stringify(String(s).slice(0, 80))} (want ip:port or [ipv6]:port)`);
  return formatEndpoint(e.bytes, e.port);
}

/** Upper bound on allowed IPs named in one peer update; far above any real node (pod CIDRs + mesh IP). */
export const MAX_ALLOWED_IPS_PER_PEER = 4096;
/** Upper bound on peers named in one device update. */
export const MAX_PEERS_PER_UPDATE = 100_000;
/** Linux interface names: 1-15 bytes, no '/', no whitespace, not "." or "..". */
const IFNAME_RE = /^[A-Za-z0-9_.\-]{1,15}$/;

/** Throws {@link WgInputError} unless `name` is a valid Linux interface name. */
export function checkIfname(name: string): void {
  if (typeof name !== 'string' || !IFNAME_RE.test(name) || name === '.' || name === '..') {
    throw new WgInputError(`wireguard: invalid interface name ${JSON.stringify(String(name).slice(0, 32))}`);
  }
}

/**
 * Validates an update and returns it with every CIDR and endpoint in canonical form and allowed IPs
 * de-duplicated. Throws {@link WgInputError} on the first problem; a backend calls this before
 * writing anything, so a malformed update is never partially applied.
 */
export function normalizeUpdate(name: string, update: WgDeviceUpdate): WgDeviceUpdate {
  checkIfname(name);
  const bad = (msg: string): never => {
    throw new WgInputError(`wireguard: set ${name}: ${msg}`);
  };
  if (typeof update !== 'object' || update === null) bad('update must be an object');
  const out: { -readonly [K in keyof WgDeviceUpdate]: WgDeviceUpdate[K] } = {};
  if (update.privateKey !== undefined) {
    if (!isValidKey(update.privateKey)) bad('private key is not a valid base64 key');
    out.privateKey = update.privateKey;
  }
  if (update.listenPort !== undefined) {
    if (!isUint(update.listenPort, 65535)) bad(`listen port ${String(update.listenPort)} is not 0-65535`);
    out.listenPort = update.listenPort;
  }
  if (update.fwmark !== undefined) {
    if (!isUint(update.fwmark, 0xffffffff)) bad(`fwmark ${String(update.fwmark)} is not a 32-bit unsigned integer`);
    out.fwmark = update.fwmark;
  }
  if (update.replacePeers) out.replacePeers = true;
  if (update.peers !== undefined) {
    if (!Array.isArray(update.peers)) bad('peers must be an array');
    if (update.peers.length > MAX_PEERS_PER_UPDATE) bad(`${update.peers.length} peers in one update (max ${MAX_PEERS_PER_UPDATE})`);
    const seen = new Set<string>();
    out.peers = update.peers.map((p, i) => {
      const where = `peer #${i}`;
      if (typeof p !== 'object' || p === null) bad(`${where} is not an object`);
      if (!isValidKey(p.publicKey)) bad(`${where}: public key is not a valid base64 key`);
      if (seen.has(p.publicKey)) bad(`${where}: public key ${p.publicKey} named twice`);
      seen.add(p.publicKey);
      const q: { -readonly [K in keyof WgPeerUpdate]: WgPeerUpdate[K] } = { publicKey: p.publicKey };
      if (p.remove) {
        q.remove = true;
        return q;
      }
      if (p.endpoint !== undefined) {
        try {
          q.endpoint = canonicalEndpoint(p.endpoint);
        } catch (err) {
          bad(`${where} ${p.publicKey}: ${(err as Error).message.replace(/^wireguard: /, '')}`);
        }
      }
      if (p.persistentKeepalive !== undefined) {
        if (!isUint(p.persistentKeepalive, 65535)) bad(`${where} ${p.publicKey}: keepalive ${String(p.persistentKeepalive)} is not 0-65535`);
        q.persistentKeepalive = p.persistentKeepalive;
      }
      if (p.allowedIPs !== undefined) {
        if (!Array.isArray(p.allowedIPs)) bad(`${where} ${p.publicKey}: allowedIPs must be an array`);
        if (p.allowedIPs.length > MAX_ALLOWED_IPS_PER_PEER) bad(`${where} ${p.publicKey}: ${p.allowedIPs.length} allowed IPs (max ${MAX_ALLOWED_IPS_PER_PEER})`);
        const ips: string[] = [];
        for (const c of p.allowedIPs) {
          let cc = '';
          try {
            cc = canonicalCIDR(c);
          } catch (err) {
            bad(`${where} ${p.publicKey}: ${(err as Error).message.replace(/^wireguard: /, '')}`);
          }
          if (!ips.includes(cc)) ips.push(cc);
        }
        q.allowedIPs = ips;
      }
      if (p.replaceAllowedIPs) {
        q.replaceAllowedIPs = true;
        if (q.allowedIPs === undefined) q.allowedIPs = [];
      }
      if (p.updateOnly) q.updateOnly = true;
      return q;
    });
  }
  return out;
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}
