/**
 * The underlay capture classifier (pure): hand-built pcap files with WireGuard messages, gossip,
 * ARP, a clear-text pod packet and hostile/truncated input.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { classifyCapture, isWireGuardMessage, parsePcap, PcapError } from '../../src/lab/pcap.ts';

const OPTS = { wgPorts: [51820], meshPort: 7946, podCIDRs: ['10.244.0.0/16'] };

function ip4(s: string): number[] {
  return s.split('.').map(Number);
}

/** An Ethernet + IPv4 + UDP/TCP frame; `snap` cuts the captured bytes like tcpdump -s. */
function frame(o: { src: string; dst: string; proto: 6 | 17 | 1; sport?: number; dport?: number; payload?: Uint8Array }): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const l4 = o.proto === 17 ? 8 : o.proto === 6 ? 20 : 8;
  const total = 20 + l4 + payload.length;
  const b = new Uint8Array(14 + total);
  b.set([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
  b.set([0x45, 0, total >> 8, total & 255, 0, 0, 0x40, 0, 64, o.proto, 0, 0, ...ip4(o.src), ...ip4(o.dst)], 14);
  const t = 34;
  b.set([(o.sport ?? 0) >> 8, (o.sport ?? 0) & 255, (o.dport ?? 0) >> 8, (o.dport ?? 0) & 255], t);
  if (o.proto === 17) b.set([(8 + payload.length) >> 8, (8 + payload.length) & 255], t + 4);
  b.set(payload, t + l4);
  return b;
}

function arp(): Uint8Array {
  const b = new Uint8Array(42);
  b.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
  return b;
}

function pcap(frames: Uint8Array[], opts: { le?: boolean; snap?: number } = {}): Uint8Array {
  const le = opts.le ?? true;
  const parts: Uint8Array[] = [];
  const head = new DataView(new ArrayBuffer(24));
  head.setUint32(0, 0xa1b2c3d4, le);
  head.setUint16(4, 2, le);
  head.setUint16(6, 4, le);
  head.setUint32(16, opts.snap ?? 65535, le);
  head.setUint32(20, 1, le);
  parts.push(new Uint8Array(head.buffer));
  for (const f of frames) {
    const cut = f.subarray(0, Math.min(f.length, opts.snap ?? 65535));
    const rec = new DataView(new ArrayBuffer(16));
    rec.setUint32(8, cut.length, le);
    rec.setUint32(12, f.length, le);
    parts.push(new Uint8Array(rec.buffer), cut);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function wg(type: number, len: number): Uint8Array {
  const p = new Uint8Array(len);
  p[0] = type;
  return p;
}

/** An ICMPv4 error (type, code 0) from `src` to `dst` quoting the IP + first 8 bytes of `orig`. */
function icmpError(type: number, src: string, dst: string, orig: Uint8Array): Uint8Array {
  return frame({ src, dst, proto: 1, sport: type << 8, payload: orig.subarray(14, 14 + 28) });
}

describe('pcap classifier', () => {
  it('ICMP errors about WireGuard or control traffic are underlay noise; about anything else, other; quoting a pod address, a leak', () => {
    const wgOut = frame({ src: '192.0.2.11', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(4, 32) });
    const gossipOut = frame({ src: '192.0.2.11', dst: '198.18.0.12', proto: 17, sport: 7946, dport: 7946, payload: new Uint8Array(64) });
    const dnsOut = frame({ src: '192.0.2.11', dst: '198.18.0.12', proto: 17, sport: 40000, dport: 53 });
    const podOut = frame({ src: '10.244.1.2', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(4, 32) });
    const frames = [
      icmpError(3, '198.19.0.254', '192.0.2.11', wgOut),
      icmpError(11, '198.19.0.254', '192.0.2.11', gossipOut),
      icmpError(3, '198.19.0.254', '192.0.2.11', dnsOut),
      icmpError(3, '198.19.0.254', '192.0.2.11', podOut),
      frame({ src: '198.19.0.254', dst: '192.0.2.11', proto: 1, sport: 8 << 8 }),
    ];
    const s = classifyCapture(parsePcap(pcap(frames)), OPTS);
    expect(s).toMatchObject({ total: 5, icmpErrors: 2, other: 3, podAddress: 1 });
    expect(s.podAddressSamples[0]).toMatch(/icmp type 3 quoting proto 17 10\.244\.1\.2:51820/);
    expect(s.otherSamples.join('\n')).toMatch(/quoting proto 17 192\.0\.2\.11:40000 -> 198\.18\.0\.12:53/);
  });

  it('counts WireGuard handshakes and data (also when the snap length cut them), gossip and ARP, and nothing else', () => {
    const frames = [
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(1, 148) }),
      frame({ src: '198.18.0.12', dst: '198.18.0.11', proto: 17, sport: 51820, dport: 51820, payload: wg(2, 92) }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(4, 32) }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(4, 1372) }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 7946, dport: 7946, payload: new Uint8Array(300) }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 6, sport: 40000, dport: 7946 }),
      arp(),
    ];
    const s = classifyCapture(parsePcap(pcap(frames, { snap: 256 })), OPTS);
    expect(s).toMatchObject({ total: 7, wireguard: 4, wireguardData: 2, gossip: 2, arp: 1, other: 0, podAddress: 0 });
    // Big-endian files read the same.
    expect(classifyCapture(parsePcap(pcap(frames, { le: false })), OPTS)).toEqual(classifyCapture(parsePcap(pcap(frames)), OPTS));
  });

  it('flags clear-text pod traffic and non-WireGuard UDP on the WireGuard port', () => {
    const frames = [
      frame({ src: '10.244.1.2', dst: '10.244.2.2', proto: 1 }),
      frame({ src: '198.18.0.11', dst: '10.244.2.2', proto: 6, sport: 1, dport: 80 }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(1, 100) }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 51820, dport: 51820, payload: wg(9, 148) }),
      frame({ src: '198.18.0.11', dst: '198.18.0.12', proto: 17, sport: 5353, dport: 5353, payload: wg(4, 64) }),
    ];
    const s = classifyCapture(parsePcap(pcap(frames)), OPTS);
    expect(s.podAddress).toBe(2);
    expect(s.podAddressSamples[0]).toContain('10.244.1.2');
    expect(s.wireguard).toBe(0);
    expect(s.other).toBe(5);
  });

  it('counts sealed control ports (NATed mesh ports, the join listener) with the gossip; anything else stays other', () => {
    const frames = [
      frame({ src: '198.18.0.254', dst: '198.18.0.11', proto: 17, sport: 7956, dport: 7946, payload: new Uint8Array(200) }),
      frame({ src: '198.18.0.254', dst: '198.18.0.11', proto: 6, sport: 41000, dport: 7947 }),
      frame({ src: '198.18.0.254', dst: '198.18.0.11', proto: 17, sport: 51821, dport: 51820, payload: wg(4, 64) }),
      frame({ src: '198.18.0.254', dst: '198.18.0.11', proto: 6, sport: 41000, dport: 7948 }),
    ];
    const s = classifyCapture(parsePcap(pcap(frames)), { ...OPTS, wgPorts: [51820, 51821], controlPorts: [7956, 7947] });
    expect(s).toMatchObject({ gossip: 2, wireguard: 1, wireguardData: 1, other: 1, podAddress: 0 });
    expect(s.otherSamples).toEqual(['proto 6 198.18.0.254:41000 -> 198.18.0.11:7948']);
    // Without the control ports the NATed frames still count by their cloud-1 end (7946, 51820); the join listener does not.
    expect(classifyCapture(parsePcap(pcap(frames)), OPTS)).toMatchObject({ gossip: 1, wireguard: 1, other: 2 });
  });

  it('WireGuard message shapes', () => {
    expect(isWireGuardMessage(wg(1, 148))).toBe(true);
    expect(isWireGuardMessage(wg(1, 149))).toBe(false);
    expect(isWireGuardMessage(wg(3, 64))).toBe(true);
    expect(isWireGuardMessage(wg(4, 31))).toBe(false);
    expect(isWireGuardMessage(wg(4, 16), 1420)).toBe(true);
    const reserved = wg(4, 64);
    reserved[2] = 1;
    expect(isWireGuardMessage(reserved)).toBe(false);
  });

  it('rejects non-pcap input and never throws on truncated or random records', () => {
    expect(() => parsePcap(new Uint8Array(10))).toThrow(PcapError);
    expect(() => parsePcap(new Uint8Array(24))).toThrow(/bad magic/);
    const good = pcap([arp(), frame({ src: '1.2.3.4', dst: '5.6.7.8', proto: 17, sport: 1, dport: 2 })]);
    for (let cut = 24; cut < good.length; cut++) expect(parsePcap(good.subarray(0, cut)).length).toBeLessThanOrEqual(2);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const file = new Uint8Array(24 + bytes.length);
        file.set(pcap([]).subarray(0, 24));
        file.set(bytes, 24);
        const s = classifyCapture(parsePcap(file), OPTS);
        expect(s.total).toBe(s.wireguard + s.gossip + s.arp + s.other);
      }),
    );
  });
});
