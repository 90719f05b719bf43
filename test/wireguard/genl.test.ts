import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { WgPeerUpdate } from '../../src/wireguard/backend.ts';
import { normalizeUpdate } from '../../src/wireguard/addr.ts';
import { GenlError } from '../../src/wireguard/errors.ts';
import {
  NLA_F_NESTED,
  WGDEVICE_A,
  WGDEVICE_F_REPLACE_PEERS,
  WGPEER_A,
  WGPEER_F_REPLACE_ALLOWEDIPS,
  WGPEER_F_UPDATE_ONLY,
  attr,
  encodeSetDevice,
  nested,
  parseAttrs,
  parseDump,
} from '../../src/wireguard/genl.ts';
import { generateKeyPair, keyFromBase64 } from '../../src/wireguard/keys.ts';

const key = () => generateKeyPair().publicKey;

/** Raw walk that keeps the type flags (parseAttrs masks them). */
function rawAttrs(buf: Buffer): { type: number; data: Buffer }[] {
  const out = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    out.push({ type: buf.readUInt16LE(off + 2), data: buf.subarray(off + 4, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

function flagsOf(peerBuf: Buffer): number {
  const f = parseAttrs(peerBuf).find((a) => a.type === WGPEER_A.FLAGS);
  return f ? f.data.readUInt32LE(0) : 0;
}

describe('kernel WireGuard message encoding', () => {
  it('sets NLA_F_NESTED on PEERS, each peer, ALLOWEDIPS and each allowed IP', () => {
    const a = key();
    const [msg] = encodeSetDevice('wg0', normalizeUpdate('wg0', { listenPort: 51820, peers: [{ publicKey: a, allowedIPs: ['10.0.0.0/24', 'fd00::/64'] }] }));
    const top = rawAttrs(msg!);
    expect(top.find((x) => (x.type & 0x3fff) === WGDEVICE_A.IFNAME)!.data.toString()).toBe('wg0\0');
    expect(top.find((x) => (x.type & 0x3fff) === WGDEVICE_A.LISTEN_PORT)!.data.readUInt16LE(0)).toBe(51820);
    const peersNest = top.find((x) => (x.type & 0x3fff) === WGDEVICE_A.PEERS)!;
    expect(peersNest.type & NLA_F_NESTED).toBe(NLA_F_NESTED);
    const [peer] = rawAttrs(peersNest.data);
    expect(peer!.type & NLA_F_NESTED).toBe(NLA_F_NESTED);
    const inner = rawAttrs(peer!.data);
    expect(Buffer.from(inner.find((x) => x.type === WGPEER_A.PUBLIC_KEY)!.data)).toEqual(Buffer.from(keyFromBase64(a)));
    const ips = inner.find((x) => (x.type & 0x3fff) === WGPEER_A.ALLOWEDIPS)!;
    expect(ips.type & NLA_F_NESTED).toBe(NLA_F_NESTED);
    const list = rawAttrs(ips.data);
    expect(list).toHaveLength(2);
    for (const ip of list) expect(ip.type & NLA_F_NESTED).toBe(NLA_F_NESTED);
  });

  it('splits large updates; REPLACE_PEERS only on the first message; a split peer continues with UPDATE_ONLY', () => {
    const big = key();
    const bigIPs = Array.from({ length: 300 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
    const others = Array.from({ length: 200 }, () => key());
    const update = normalizeUpdate('wg0', {
      replacePeers: true,
      privateKey: generateKeyPair().privateKey,
      peers: [
        ...others.slice(0, 100).map((k) => ({ publicKey: k, endpoint: '192.0.2.1:1', allowedIPs: ['10.200.0.0/16'] })),
        { publicKey: big, replaceAllowedIPs: true, allowedIPs: bigIPs },
        ...others.slice(100).map((k) => ({ publicKey: k, allowedIPs: ['10.201.0.0/16'] })),
      ],
    });
    const msgs = encodeSetDevice('wg0', update, 2048);
    expect(msgs.length).toBeGreaterThan(5);
    msgs.forEach((m, i) => {
      expect(m.length).toBeLessThan(2048 + 200);
      const top = parseAttrs(m);
      const flags = top.find((a) => a.type === WGDEVICE_A.FLAGS);
      if (i === 0) expect(flags!.data.readUInt32LE(0)).toBe(WGDEVICE_F_REPLACE_PEERS);
      else expect(flags).toBeUndefined();
      expect(top.some((a) => a.type === WGDEVICE_A.PRIVATE_KEY)).toBe(i === 0);
    });
    // Every message's fragments of the big peer: the first replaces, the rest are update-only appends.
    const fragments = msgs.flatMap((m) =>
      parseAttrs(m)
        .filter((a) => a.type === WGDEVICE_A.PEERS)
        .flatMap((a) => parseAttrs(a.data))
        .filter((p) => Buffer.from(parseAttrs(p.data).find((x) => x.type === WGPEER_A.PUBLIC_KEY)!.data).equals(Buffer.from(keyFromBase64(big)))),
    );
    expect(fragments.length).toBeGreaterThan(1);
    expect(flagsOf(fragments[0]!.data)).toBe(WGPEER_F_REPLACE_ALLOWEDIPS);
    for (const f of fragments.slice(1)) expect(flagsOf(f.data)).toBe(WGPEER_F_UPDATE_ONLY);
    // SET and GET share the attribute layout: parsing the messages as a dump gives back the update.
    const d = parseDump('wg0', msgs);
    expect(d.peers).toHaveLength(201);
    expect(d.peers.find((p) => p.publicKey === big)!.allowedIPs).toEqual(bigIPs);
    expect(d.peers.map((p) => p.publicKey)).toEqual([...others.slice(0, 100), big, ...others.slice(100)]);
  });

  it('sends an empty ALLOWEDIPS nest to clear a peer, and a bare peer for removal', () => {
    const a = key();
    const b = key();
    const [m] = encodeSetDevice('wg0', normalizeUpdate('wg0', { peers: [{ publicKey: a, replaceAllowedIPs: true, allowedIPs: [] }, { publicKey: b, remove: true }] }));
    const peers = parseAttrs(parseAttrs(m!).find((x) => x.type === WGDEVICE_A.PEERS)!.data);
    expect(parseAttrs(peers[0]!.data).some((x) => x.type === WGPEER_A.ALLOWEDIPS)).toBe(true);
    expect(parseAttrs(peers[1]!.data).map((x) => x.type)).toEqual([WGPEER_A.PUBLIC_KEY, WGPEER_A.FLAGS]);
    expect(flagsOf(peers[1]!.data)).toBe(1);
  });

  it('round-trips random updates through encode (any budget) and parse', () => {
    const cidr = fc.oneof(
      fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([ip, m]) => `${ip}/${m}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([ip, m]) => `${ip}/${m}`),
    );
    const peer = fc.record({
      publicKey: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64')),
      endpoint: fc.option(fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([ip, p]) => `${ip}:${p}`), { nil: undefined }),
      persistentKeepalive: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
      allowedIPs: fc.array(cidr, { maxLength: 40 }),
    });
    fc.assert(
      fc.property(fc.uniqueArray(peer, { selector: (p) => p.publicKey, maxLength: 30 }), fc.integer({ min: 600, max: 20000 }), (peers, budget) => {
        const u = normalizeUpdate('wg0', { peers: peers.map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as unknown as WgPeerUpdate) });
        const d = parseDump('wg0', encodeSetDevice('wg0', u, budget));
        expect(d.peers.map((p) => p.publicKey)).toEqual(u.peers!.map((p) => p.publicKey));
        d.peers.forEach((p, i) => {
          const want = u.peers![i]!;
          expect(p.allowedIPs).toEqual(want.allowedIPs);
          expect(p.endpoint).toBe(want.endpoint);
          expect(p.persistentKeepalive).toBe(want.persistentKeepalive ?? 0);
        });
      }),
      { numRuns: 60 },
    );
  });
});

describe('kernel WireGuard dump parsing of hostile input', () => {
  it('rejects truncated and overlong attributes', () => {
    const bad = Buffer.from([8, 0, 1, 0, 1, 2]);
    expect(() => parseDump('wg0', [bad])).toThrow(GenlError);
    const short = Buffer.from([2, 0, 1, 0]);
    expect(() => parseDump('wg0', [short])).toThrow(GenlError);
  });

  it('rejects a peer without a key and a short key', () => {
    expect(() => parseDump('wg0', [nested(WGDEVICE_A.PEERS, [nested(0, [attr(WGPEER_A.PERSISTENT_KEEPALIVE_INTERVAL, Buffer.from([1, 0]))])])])).toThrow(/without a public key/);
    expect(() => parseDump('wg0', [nested(WGDEVICE_A.PEERS, [nested(0, [attr(WGPEER_A.PUBLIC_KEY, Buffer.alloc(5))])])])).toThrow(/5 bytes/);
  });

  it('bounds peers and allowed IPs', () => {
    const u = normalizeUpdate('wg0', { peers: [{ publicKey: key() }, { publicKey: key() }, { publicKey: key(), allowedIPs: ['10.0.0.0/8', '11.0.0.0/8'] }] });
    const msgs = encodeSetDevice('wg0', u);
    expect(() => parseDump('wg0', msgs, { maxPeers: 2, maxAllowedIPsPerPeer: 10 })).toThrow(/more than 2 peers/);
    expect(() => parseDump('wg0', msgs, { maxPeers: 10, maxAllowedIPsPerPeer: 1 })).toThrow(/allowed IPs/);
  });
});
