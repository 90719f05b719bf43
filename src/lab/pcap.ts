/**
 * Reads a classic pcap capture (Ethernet link type) of the lab's underlay and classifies every
 * frame, so the demo and the end-to-end tests can show that pod traffic crosses the underlay only
 * as WireGuard UDP. Pure: bytes in, summary out.
 */

/** The capture is not a pcap file we can read. */
export class PcapError extends Error {
  override name = 'PcapError';
}

/** One captured frame, decoded as far as the classifier needs. */
export interface Frame {
  readonly ethertype: number;
  readonly src?: string;
  readonly dst?: string;
  /** IP protocol number (6 TCP, 17 UDP, 1 ICMP...). */
  readonly proto?: number;
  readonly sport?: number;
  readonly dport?: number;
  /** The captured part of the transport payload (UDP only; may be cut by the snap length). */
  readonly payload?: Uint8Array;
  /** The payload's real length, from the UDP header (UDP only). */
  readonly payloadLength?: number;
  /** ICMPv4 type (ICMP only). */
  readonly icmpType?: number;
  /**
   * For ICMPv4 errors (destination unreachable, time exceeded, parameter problem): the header of the
   * packet the error quotes, decoded like a frame (ethertype 0x0800, no payload).
   */
  readonly quoted?: Frame;
}

const MAX_FRAMES = 2_000_000;

/** Parses a pcap file (either byte order, micro- or nanosecond variant). Truncated trailing records are ignored. */
export function parsePcap(buf: Uint8Array): Frame[] {
  if (buf.length < 24) throw new PcapError('pcap: file shorter than its global header');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, false);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = false;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = true;
  else throw new PcapError(`pcap: bad magic 0x${magic.toString(16)}`);
  const linktype = dv.getUint32(20, le);
  if (linktype !== 1) throw new PcapError(`pcap: link type ${linktype} is not Ethernet`);
  const frames: Frame[] = [];
  let off = 24;
  while (off + 16 <= buf.length && frames.length < MAX_FRAMES) {
    const incl = dv.getUint32(off + 8, le);
    const start = off + 16;
    if (incl > 262_144 || start + incl > buf.length) break;
    frames.push(decodeEthernet(buf.subarray(start, start + incl)));
    off = start + incl;
  }
  return frames;
}

function ipv4(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function ipv6(b: Uint8Array, at: number): string {
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(((b[at + i]! << 8) | b[at + i + 1]!).toString(16));
  return parts.join(':');
}

/** Decodes the IPv4 header (and ports, when captured) that an ICMP error quotes, starting at `off`. */
function decodeQuotedIPv4(f: Uint8Array, off: number): Frame {
  const ihl = (f[off]! & 0x0f) * 4;
  const proto = f[off + 9]!;
  const src = ipv4(f, off + 12);
  const dst = ipv4(f, off + 16);
  const l4 = off + ihl;
  if ((proto === 17 || proto === 6) && ihl >= 20 && f.length >= l4 + 4) {
    return { ethertype: 0x0800, src, dst, proto, sport: (f[l4]! << 8) | f[l4 + 1]!, dport: (f[l4 + 2]! << 8) | f[l4 + 3]! };
  }
  return { ethertype: 0x0800, src, dst, proto };
}

/** Decodes one Ethernet frame (with at most one 802.1Q tag). */
export function decodeEthernet(f: Uint8Array): Frame {
  if (f.length < 14) return { ethertype: -1 };
  let et = (f[12]! << 8) | f[13]!;
  let off = 14;
  if (et === 0x8100 && f.length >= 18) {
    et = (f[16]! << 8) | f[17]!;
    off = 18;
  }
  if (et === 0x0800 && f.length >= off + 20) {
    const ihl = (f[off]! & 0x0f) * 4;
    const proto = f[off + 9]!;
    const src = ipv4(f, off + 12);
    const dst = ipv4(f, off + 16);
    const l4 = off + ihl;
    const fragOffset = ((f[off + 6]! & 0x1f) << 8) | f[off + 7]!;
    if ((proto === 17 || proto === 6) && fragOffset === 0 && f.length >= l4 + 4) {
      const sport = (f[l4]! << 8) | f[l4 + 1]!;
      const dport = (f[l4 + 2]! << 8) | f[l4 + 3]!;
      if (proto === 17 && f.length >= l4 + 8) {
        const udpLen = (f[l4 + 4]! << 8) | f[l4 + 5]!;
        return { ethertype: et, src, dst, proto, sport, dport, payload: f.subarray(l4 + 8), payloadLength: Math.max(0, udpLen - 8) };
      }
      return { ethertype: et, src, dst, proto, sport, dport };
    }
    if (proto === 1 && fragOffset === 0 && f.length >= l4 + 4) {
      const icmpType = f[l4]!;
      if ((icmpType === 3 || icmpType === 11 || icmpType === 12) && f.length >= l4 + 8 + 20) {
        return { ethertype: et, src, dst, proto, icmpType, quoted: decodeQuotedIPv4(f, l4 + 8) };
      }
      return { ethertype: et, src, dst, proto, icmpType };
    }
    return { ethertype: et, src, dst, proto };
  }
  if (et === 0x86dd && f.length >= off + 40) {
    return { ethertype: et, src: ipv6(f, off + 8), dst: ipv6(f, off + 24), proto: f[off + 6]! };
  }
  return { ethertype: et };
}

/**
 * True when a UDP payload (`length` bytes on the wire, of which `p` was captured) has the shape of a WireGuard message: type 1-4 followed by three zero
 * bytes and the fixed sizes of handshake initiation (148), response (92), cookie reply (64), or a
 * transport data message (16-byte header, ciphertext, 16-byte tag: at least 32 bytes).
 */
export function isWireGuardMessage(p: Uint8Array, length: number = p.length): boolean {
  if (p.length < 4 || p[1] !== 0 || p[2] !== 0 || p[3] !== 0) return false;
  switch (p[0]) {
    case 1:
      return length === 148;
    case 2:
      return length === 92;
    case 3:
      return length === 64;
    case 4:
      // Plaintext is padded to 16 bytes but never past the interface MTU, so full-size packets
      // need not be a multiple of 16: only the minimum (header + tag, a keepalive) is fixed.
      return length >= 32;
    default:
      return false;
  }
}

/** What the classifier needs to know about the lab. */
export interface ClassifyOptions {
  readonly wgPorts: readonly number[];
  /** The mesh gossip port (UDP and TCP): control traffic, sealed with the mesh key. */
  readonly meshPort: number;
  /**
   * More sealed control ports counted with the gossip: the mesh ports of nodes behind a NAT (each has
   * its own) and the join listener (the token handshake is a tweetnacl box exchange).
   */
  readonly controlPorts?: readonly number[];
  /** IPv4 CIDRs whose addresses must never appear in an underlay IP header (the cluster/pod CIDRs). */
  readonly podCIDRs: readonly string[];
}

/** The verdict on one capture. */
export interface CaptureSummary {
  readonly total: number;
  /** UDP on a WireGuard port with a WireGuard-shaped payload. */
  readonly wireguard: number;
  /** Of which transport data messages (type 4): the encrypted pod traffic. */
  readonly wireguardData: number;
  /** Mesh gossip and other sealed control traffic (UDP or TCP on the mesh port or a control port). */
  readonly gossip: number;
  readonly arp: number;
  /** ICMP errors (unreachable, time exceeded) about WireGuard or sealed control traffic: underlay noise, not pod traffic. */
  readonly icmpErrors: number;
  /** Anything else (should be 0): a few samples are kept. */
  readonly other: number;
  readonly otherSamples: readonly string[];
  /** Frames carrying a pod address in their IP header (must be 0): a few samples are kept. */
  readonly podAddress: number;
  readonly podAddressSamples: readonly string[];
}

function v4ToInt(ip: string): number | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (!m) return undefined;
  return ((Number(m[1]) << 24) >>> 0) + (Number(m[2]) << 16) + (Number(m[3]) << 8) + Number(m[4]);
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const a = v4ToInt(ip);
  const n = v4ToInt(net ?? '');
  const l = Number(len);
  if (a === undefined || n === undefined || !(l >= 0 && l <= 32)) return false;
  const mask = l === 0 ? 0 : (0xffffffff << (32 - l)) >>> 0;
  return ((a & mask) >>> 0) === ((n & mask) >>> 0);
}

function describe(f: Frame): string {
  if (f.src === undefined) return `ethertype 0x${f.ethertype.toString(16)}`;
  const ports = f.sport !== undefined ? `:${f.sport} -> ` : ' -> ';
  const quoted = f.quoted ? ` (icmp type ${f.icmpType} quoting ${describe(f.quoted)})` : '';
  return `proto ${f.proto} ${f.src}${ports}${f.dst}${f.dport !== undefined ? `:${f.dport}` : ''}${quoted}`;
}

/** Classifies every frame of a capture. */
export function classifyCapture(frames: readonly Frame[], opts: ClassifyOptions): CaptureSummary {
  let wireguard = 0;
  let wireguardData = 0;
  let gossip = 0;
  let arp = 0;
  let icmpErrors = 0;
  let other = 0;
  let podAddress = 0;
  const otherSamples: string[] = [];
  const podAddressSamples: string[] = [];
  const control = [opts.meshPort, ...(opts.controlPorts ?? [])];
  const carriesPod = (x: Frame): boolean => x.src !== undefined && x.dst !== undefined && opts.podCIDRs.some((c) => inCidr(x.src!, c) || inCidr(x.dst!, c));
  const onControl = (x: Frame): boolean => (x.proto === 17 || x.proto === 6) && (control.includes(x.sport!) || control.includes(x.dport!));
  for (const f of frames) {
    // A pod address in the header, or in the header an ICMP error quotes, is plaintext pod traffic.
    if (carriesPod(f) || (f.quoted !== undefined && carriesPod(f.quoted))) {
      podAddress++;
      if (podAddressSamples.length < 10) podAddressSamples.push(describe(f));
    }
    if (f.ethertype === 0x0806) {
      arp++;
      continue;
    }
    const onWg = f.proto === 17 && (opts.wgPorts.includes(f.sport!) || opts.wgPorts.includes(f.dport!));
    if (onWg && f.payload && isWireGuardMessage(f.payload, f.payloadLength)) {
      wireguard++;
      if (f.payload[0] === 4) wireguardData++;
      continue;
    }
    if (onControl(f)) {
      gossip++;
      continue;
    }
    // An ICMP error about WireGuard or control traffic (a NAT mapping gone, a port closed during a
    // restart) is underlay noise; one about anything else stays in `other`.
    const q = f.quoted;
    if (q !== undefined && !carriesPod(q) && ((q.proto === 17 && (opts.wgPorts.includes(q.sport!) || opts.wgPorts.includes(q.dport!))) || onControl(q))) {
      icmpErrors++;
      continue;
    }
    other++;
    if (otherSamples.length < 10) otherSamples.push(describe(f));
  }
  return { total: frames.length, wireguard, wireguardData, gossip, arp, icmpErrors, other, otherSamples, podAddress, podAddressSamples };
}
