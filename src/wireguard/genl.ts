/**
 * Encoder and parser of the kernel WireGuard generic netlink messages (linux/wireguard.h), written
 * here rather than taken from the `netlink` package's bundled helper, whose command numbers are
 * wrong and which never sets NLA_F_NESTED (required by kernels since 5.2). Pure: buffers in,
 * buffers out; the socket is in `kernel.ts`.
 *
 * Large SET requests are split like `wg(8)` does: a nested attribute's length is 16 bits, so each
 * message carries at most {@link DEFAULT_MESSAGE_BUDGET} bytes of peers; a peer whose allowed IPs
 * do not fit in one message continues in the next with WGPEER_F_UPDATE_ONLY and without
 * WGPEER_F_REPLACE_ALLOWEDIPS, and WGDEVICE_F_REPLACE_PEERS goes on the first message only.
 */
import type { MutableWgPeer, WgDevice, WgDeviceUpdate, WgPeerUpdate } from './backend.ts';
import { formatEndpoint, formatIP, parseCIDR, parseEndpoint } from './addr.ts';
import { GenlError } from './errors.ts';
import { keyFromBase64, keyToBase64, publicKeyFromPrivate } from './keys.ts';

/** Generic netlink family name and version. */
export const WG_GENL_NAME = 'wireguard';
export const WG_GENL_VERSION = 1;
/** Commands (enum wg_cmd). */
export const WG_CMD_GET_DEVICE = 0;
export const WG_CMD_SET_DEVICE = 1;
/** Flag on nested attributes. */
export const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = ~(0x8000 | 0x4000) & 0xffff;

/** enum wgdevice_attribute. */
export const WGDEVICE_A = { IFINDEX: 1, IFNAME: 2, PRIVATE_KEY: 3, PUBLIC_KEY: 4, FLAGS: 5, LISTEN_PORT: 6, FWMARK: 7, PEERS: 8 } as const;
/** enum wgpeer_attribute. */
export const WGPEER_A = {
  PUBLIC_KEY: 1,
  PRESHARED_KEY: 2,
  FLAGS: 3,
  ENDPOINT: 4,
  PERSISTENT_KEEPALIVE_INTERVAL: 5,
  LAST_HANDSHAKE_TIME: 6,
  RX_BYTES: 7,
  TX_BYTES: 8,
  ALLOWEDIPS: 9,
  PROTOCOL_VERSION: 10,
} as const;
/** enum wgallowedip_attribute. */
export const WGALLOWEDIP_A = { FAMILY: 1, IPADDR: 2, CIDR_MASK: 3 } as const;
export const WGDEVICE_F_REPLACE_PEERS = 1;
export const WGPEER_F_REMOVE_ME = 1;
export const WGPEER_F_REPLACE_ALLOWEDIPS = 2;
export const WGPEER_F_UPDATE_ONLY = 4;
const AF_INET = 2;
const AF_INET6 = 10;

/** Bytes of peer attributes per SET message; well below the 64 KiB nested-attribute limit. */
export const DEFAULT_MESSAGE_BUDGET = 16 * 1024;

// ---- attribute encoding ----

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** One attribute: 4-byte header, payload, padding to 4 bytes. */
export function attr(type: number, payload: Uint8Array): Buffer {
  const len = 4 + payload.length;
  if (len > 0xffff) throw new GenlError(`genl: attribute ${type & NLA_TYPE_MASK} is ${len} bytes (max 65535)`);
  const b = Buffer.alloc(align4(len));
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  b.set(payload, 4);
  return b;
}

/** A nested attribute (NLA_F_NESTED set). */
export function nested(type: number, children: readonly Uint8Array[]): Buffer {
  return attr(type | NLA_F_NESTED, Buffer.concat(children));
}

function u16(type: number, v: number): Buffer {
  const p = Buffer.alloc(2);
  p.writeUInt16LE(v);
  return attr(type, p);
}

function u32(type: number, v: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32LE(v >>> 0);
  return attr(type, p);
}

function str(type: number, s: string): Buffer {
  return attr(type, Buffer.from(`${s}\0`, 'utf8'));
}

function sockaddr(endpoint: string): Buffer {
  const e = parseEndpoint(endpoint);
  if (!e) throw new GenlError(`genl: bad endpoint ${JSON.stringify(endpoint.slice(0, 80))}`);
  if (e.family === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(e.port, 2);
    b.set(e.bytes, 4);
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(e.port, 2);
  b.set(e.bytes, 8);
  return b;
}

function allowedIP(cidr: string): Buffer {
  const c = parseCIDR(cidr);
  if (!c) throw new GenlError(`genl: bad allowed IP ${JSON.stringify(cidr.slice(0, 80))}`);
  // Array elements are nests of type 0, as wg(8) sends them; the kernel ignores the type.
  return nested(0, [
    u16(WGALLOWEDIP_A.FAMILY, c.family === 4 ? AF_INET : AF_INET6),
    attr(WGALLOWEDIP_A.IPADDR, c.bytes),
    attr(WGALLOWEDIP_A.CIDR_MASK, Uint8Array.of(c.prefix)),
  ]);
}

/**
 * Encodes a validated, normalized update for `ifname` as the attribute payloads of one or more
 * WG_CMD_SET_DEVICE messages (without netlink and genl headers), to be sent in order.
 */
export function encodeSetDevice(ifname: string, update: WgDeviceUpdate, budget = DEFAULT_MESSAGE_BUDGET): Buffer[] {
  const messages: Buffer[] = [];
  const device = (first: boolean): Buffer[] => {
    const a = [str(WGDEVICE_A.IFNAME, ifname)];
    if (!first) return a;
    if (update.privateKey !== undefined) a.push(attr(WGDEVICE_A.PRIVATE_KEY, keyFromBase64(update.privateKey, 'private key')));
    if (update.listenPort !== undefined) a.push(u16(WGDEVICE_A.LISTEN_PORT, update.listenPort));
    if (update.fwmark !== undefined) a.push(u32(WGDEVICE_A.FWMARK, update.fwmark));
    if (update.replacePeers) a.push(u32(WGDEVICE_A.FLAGS, WGDEVICE_F_REPLACE_PEERS));
    return a;
  };
  let peers: Buffer[] = [];
  let used = 0;
  const flush = () => {
    const first = messages.length === 0;
    const a = device(first);
    if (peers.length > 0) a.push(nested(WGDEVICE_A.PEERS, peers));
    messages.push(Buffer.concat(a));
    peers = [];
    used = 0;
  };
  const peerHead = (p: WgPeerUpdate, continuation: boolean): Buffer[] => {
    const a = [attr(WGPEER_A.PUBLIC_KEY, keyFromBase64(p.publicKey, 'public key'))];
    if (continuation) {
      a.push(u32(WGPEER_A.FLAGS, WGPEER_F_UPDATE_ONLY));
      return a;
    }
    let flags = 0;
    if (p.remove) flags |= WGPEER_F_REMOVE_ME;
    else {
      if (p.replaceAllowedIPs) flags |= WGPEER_F_REPLACE_ALLOWEDIPS;
      if (p.updateOnly) flags |= WGPEER_F_UPDATE_ONLY;
    }
    if (flags) a.push(u32(WGPEER_A.FLAGS, flags));
    if (p.remove) return a;
    if (p.endpoint !== undefined) a.push(attr(WGPEER_A.ENDPOINT, sockaddr(p.endpoint)));
    if (p.persistentKeepalive !== undefined) a.push(u16(WGPEER_A.PERSISTENT_KEEPALIVE_INTERVAL, p.persistentKeepalive));
    return a;
  };
  // Overhead of wrapping a peer: its own nest header plus the ALLOWEDIPS nest header.
  const WRAP = 8;
  for (const p of update.peers ?? []) {
    let head = peerHead(p, false);
    let ips = (p.remove ? [] : (p.allowedIPs ?? [])).map((c) => allowedIP(c));
    // An empty replace list still needs the (empty) ALLOWEDIPS nest, so the kernel clears them.
    let forceIPsNest = !p.remove && p.replaceAllowedIPs === true;
    for (;;) {
      const headLen = head.reduce((n, b) => n + b.length, 0);
      const room = budget - used - WRAP - headLen;
      let take = 0;
      let takeLen = 0;
      while (take < ips.length && takeLen + ips[take]!.length <= room) takeLen += ips[take++]!.length;
      const fitsAll = take === ips.length && room >= 0;
      // An empty message takes what fits (or a bare peer head) even when the rest must continue.
      const forced = peers.length === 0 && (take > 0 || ips.length === 0);
      if (fitsAll || forced) {
        const parts = [...head];
        if (take > 0 || forceIPsNest) parts.push(nested(WGPEER_A.ALLOWEDIPS, ips.slice(0, take)));
        peers.push(nested(0, parts));
        used += WRAP + headLen + takeLen;
        if (take === ips.length) break;
        // The rest of this peer's allowed IPs continue in the next message.
        flush();
        ips = ips.slice(take);
        head = peerHead(p, true);
        forceIPsNest = false;
        continue;
      }
      if (peers.length === 0) throw new GenlError('genl: message budget too small for one peer');
      flush();
    }
  }
  if (peers.length > 0 || messages.length === 0) flush();
  return messages;
}

/** The attribute payload of a WG_CMD_GET_DEVICE dump request for `ifname`. */
export function encodeGetDevice(ifname: string): Buffer {
  return str(WGDEVICE_A.IFNAME, ifname);
}

// ---- parsing ----

interface Attr {
  readonly type: number;
  readonly data: Buffer;
}

/** Splits a buffer into attributes; throws GenlError on a truncated or overlong attribute. */
export function parseAttrs(buf: Buffer): Attr[] {
  const out: Attr[] = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > buf.length) throw new GenlError(`genl: malformed attribute (type ${type}, length ${len}) at offset ${off}`);
    out.push({ type, data: buf.subarray(off + 4, off + len) });
    off += align4(len);
  }
  return out;
}

function need(a: Attr, n: number, what: string): Buffer {
  if (a.data.length < n) throw new GenlError(`genl: ${what} attribute is ${a.data.length} bytes, want ${n}`);
  return a.data;
}

function keyAttr(a: Attr, what: string): string | undefined {
  const d = need(a, 32, what).subarray(0, 32);
  return d.every((x) => x === 0) ? undefined : keyToBase64(d);
}

function parseSockaddr(d: Buffer): string | undefined {
  if (d.length < 2) return undefined;
  const fam = d.readUInt16LE(0);
  if (fam === AF_INET && d.length >= 8) return formatEndpoint(d.subarray(4, 8), d.readUInt16BE(2));
  if (fam === AF_INET6 && d.length >= 24) return formatEndpoint(d.subarray(8, 24), d.readUInt16BE(2));
  return undefined;
}

function parseAllowedIP(d: Buffer): string {
  let family = 0;
  let addr: Buffer | undefined;
  let mask = -1;
  for (const a of parseAttrs(d)) {
    if (a.type === WGALLOWEDIP_A.FAMILY) family = need(a, 2, 'allowed IP family').readUInt16LE(0);
    else if (a.type === WGALLOWEDIP_A.IPADDR) addr = a.data;
    else if (a.type === WGALLOWEDIP_A.CIDR_MASK) mask = need(a, 1, 'allowed IP mask')[0]!;
  }
  const len = family === AF_INET ? 4 : family === AF_INET6 ? 16 : 0;
  if (!len || !addr || addr.length < len || mask < 0 || mask > len * 8) throw new GenlError('genl: malformed allowed IP in dump');
  return `${formatIP(addr.subarray(0, len))}/${mask}`;
}

/** Limits applied while parsing a dump. */
export interface DumpLimits {
  readonly maxPeers: number;
  readonly maxAllowedIPsPerPeer: number;
}
/** Defaults: far above any real mesh. */
export const DEFAULT_DUMP_LIMITS: DumpLimits = { maxPeers: 100_000, maxAllowedIPsPerPeer: 65_536 };

/**
 * Merges the attribute payloads of every message of one WG_CMD_GET_DEVICE dump into a device.
 * A peer that spans messages (its allowed IPs continue in the next one, which starts with the same
 * public key) is merged, as the kernel's dump splits it so.
 */
export function parseDump(
  ifname: string,
  payloads: readonly Buffer[],
  limits: DumpLimits = DEFAULT_DUMP_LIMITS,
  publicOf: (privateKey: string) => string = publicKeyFromPrivate,
): WgDevice {
  let privateKey: string | undefined;
  let listenPort = 0;
  let fwmark = 0;
  const peers: MutableWgPeer[] = [];
  for (const payload of payloads) {
    for (const a of parseAttrs(payload)) {
      switch (a.type) {
        case WGDEVICE_A.PRIVATE_KEY:
          privateKey = keyAttr(a, 'private key') ?? privateKey;
          break;
        case WGDEVICE_A.LISTEN_PORT:
          listenPort = need(a, 2, 'listen port').readUInt16LE(0);
          break;
        case WGDEVICE_A.FWMARK:
          fwmark = need(a, 4, 'fwmark').readUInt32LE(0);
          break;
        case WGDEVICE_A.PEERS:
          for (const pa of parseAttrs(a.data)) {
            const p = parsePeer(pa.data, limits);
            const last = peers[peers.length - 1];
            if (last && last.publicKey === p.publicKey) {
              if (last.allowedIPs.length + p.allowedIPs.length > limits.maxAllowedIPsPerPeer) {
                throw new GenlError(`genl: dump of ${ifname}: more than ${limits.maxAllowedIPsPerPeer} allowed IPs for one peer`);
              }
              last.allowedIPs = [...last.allowedIPs, ...p.allowedIPs];
              continue;
            }
            if (peers.length >= limits.maxPeers) throw new GenlError(`genl: dump of ${ifname}: more than ${limits.maxPeers} peers`);
            peers.push(p);
          }
          break;
        default:
          break;
      }
    }
  }
  return {
    name: ifname,
    ...(privateKey !== undefined ? { privateKey, publicKey: publicOf(privateKey) } : {}),
    listenPort,
    fwmark,
    peers,
  };
}

function parsePeer(buf: Buffer, limits: DumpLimits): MutableWgPeer {
  const p: MutableWgPeer = { publicKey: '', allowedIPs: [], persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0 };
  for (const a of parseAttrs(buf)) {
    switch (a.type) {
      case WGPEER_A.PUBLIC_KEY:
        p.publicKey = keyToBase64(need(a, 32, 'peer public key').subarray(0, 32));
        break;
      case WGPEER_A.PRESHARED_KEY: {
        const k = keyAttr(a, 'preshared key');
        if (k !== undefined) p.presharedKey = k;
        break;
      }
      case WGPEER_A.ENDPOINT: {
        const e = parseSockaddr(a.data);
        if (e !== undefined) p.endpoint = e;
        break;
      }
      case WGPEER_A.PERSISTENT_KEEPALIVE_INTERVAL:
        p.persistentKeepalive = need(a, 2, 'keepalive').readUInt16LE(0);
        break;
      case WGPEER_A.LAST_HANDSHAKE_TIME:
        p.lastHandshake = Number(need(a, 16, 'handshake time').readBigInt64LE(0));
        break;
      case WGPEER_A.RX_BYTES:
        p.rxBytes = Number(need(a, 8, 'rx bytes').readBigUInt64LE(0));
        break;
      case WGPEER_A.TX_BYTES:
        p.txBytes = Number(need(a, 8, 'tx bytes').readBigUInt64LE(0));
        break;
      case WGPEER_A.ALLOWEDIPS:
        for (const ip of parseAttrs(a.data)) {
          if (p.allowedIPs.length >= limits.maxAllowedIPsPerPeer) throw new GenlError(`genl: more than ${limits.maxAllowedIPsPerPeer} allowed IPs for one peer`);
          p.allowedIPs.push(parseAllowedIP(ip.data));
        }
        break;
      default:
        break;
    }
  }
  if (!p.publicKey) throw new GenlError('genl: peer without a public key in dump');
  return p;
}
