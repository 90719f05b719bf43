/**
 * The one compliance suite every {@link WireGuardBackend} must pass: the fake (always), userspace
 * (wireguard-go in a lab namespace) and kernel (inside the VM lane). Call {@link describeCompliance}
 * from a test file with a harness that opens backend instances on one environment.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WgDevice, WgPeerUpdate, WireGuardBackend } from '../../src/wireguard/backend.ts';
import { canonicalCIDR } from '../../src/wireguard/addr.ts';
import { WgInputError } from '../../src/wireguard/errors.ts';
import { generatePrivateKey, publicKeyFromPrivate } from '../../src/wireguard/keys.ts';

/** What a backend under test provides. */
export interface ComplianceHarness {
  /** Opens a NEW backend instance on the same environment (a second one simulates an agent restart). */
  open(): Promise<WireGuardBackend>;
  /** Out-of-band change, as an operator running `wg set <if> peer <key> remove` would make. */
  removePeerOutOfBand(ifname: string, publicKey: string): Promise<void>;
  /** Out-of-band change of one peer's allowed IPs (`wg set <if> peer <key> allowed-ips <list>`). */
  setAllowedIPsOutOfBand(ifname: string, publicKey: string, allowedIPs: readonly string[]): Promise<void>;
  /** Frees everything the harness set up. */
  close(): Promise<void>;
}

/** Options of the suite. */
export interface ComplianceOptions {
  /** Interface name prefix (<= 11 characters). Default 'wgc'. */
  readonly ifPrefix?: string;
  /** Number of peers in the large test. Default 1000. */
  readonly manyPeers?: number;
}

/**
 * A peer public key: 32 random bytes. WireGuard accepts any 32 bytes as a peer key, and deriving
 * real ones (X25519 in pure JS) for 1,000 peers takes a minute under the VM lane's emulated CPU.
 */
function key(): string {
  return randomBytes(32).toString('base64');
}

function peer(d: WgDevice | null, publicKey: string) {
  const p = d?.peers.find((x) => x.publicKey === publicKey);
  if (!p) throw new Error(`peer ${publicKey} not on device`);
  return p;
}

/** Registers the compliance tests for one backend under `describe(label)`. */
export function describeCompliance(label: string, setup: () => Promise<ComplianceHarness>, opts: ComplianceOptions = {}): void {
  const prefix = opts.ifPrefix ?? 'wgc';
  const many = opts.manyPeers ?? 1000;
  describe(`WireGuard backend compliance: ${label}`, () => {
    let h: ComplianceHarness;
    let wg: WireGuardBackend;
    let n = 0;
    let ifname = '';
    const extra: WireGuardBackend[] = [];

    beforeAll(async () => {
      h = await setup();
      wg = await h.open();
    });
    afterAll(async () => {
      await wg?.close();
      for (const b of extra) await b.close();
      await h?.close();
    });
    const fresh = async (): Promise<string> => {
      ifname = `${prefix}${n++}`;
      await wg.ensureDevice(ifname);
      return ifname;
    };
    afterEach(async () => {
      if (ifname) await wg.deleteDevice(ifname);
      ifname = '';
    });

    it('creates a device idempotently, reads it back, and reports a missing one as null', async () => {
      const dev = await fresh();
      await wg.ensureDevice(dev);
      const d = await wg.getDevice(dev);
      expect(d).not.toBeNull();
      expect(d!.name).toBe(dev);
      expect(d!.peers).toEqual([]);
      expect(d!.fwmark).toBe(0);
      expect(await wg.getDevice(`${prefix}none`)).toBeNull();
    });

    it('sets the private key, listen port and fwmark; reports the derived public key', async () => {
      const dev = await fresh();
      const priv = generatePrivateKey();
      await wg.setDevice(dev, { privateKey: priv, listenPort: 41820, fwmark: 0x1234 });
      const d = await wg.getDevice(dev);
      expect(d!.publicKey).toBe(publicKeyFromPrivate(priv));
      expect(d!.listenPort).toBe(41820);
      expect(d!.fwmark).toBe(0x1234);
      // Fields not named are left alone.
      await wg.setDevice(dev, { listenPort: 41821 });
      const d2 = await wg.getDevice(dev);
      expect(d2!.publicKey).toBe(publicKeyFromPrivate(priv));
      expect(d2!.fwmark).toBe(0x1234);
      expect(d2!.listenPort).toBe(41821);
      await wg.setDevice(dev, { fwmark: 0 });
      expect((await wg.getDevice(dev))!.fwmark).toBe(0);
    });

    it('adds peers with endpoint, keepalive and dual-stack allowed IPs in canonical form, then removes one', async () => {
      const dev = await fresh();
      await wg.setDevice(dev, { privateKey: generatePrivateKey(), listenPort: 41830 });
      const a = key();
      const b = key();
      await wg.setDevice(dev, {
        peers: [
          { publicKey: a, endpoint: '192.0.2.10:51820', persistentKeepalive: 25, allowedIPs: ['10.244.1.0/24', '10.244.1.1/32', 'fd00:10:244:1::/64'] },
          { publicKey: b, endpoint: '[2001:DB8:0:0::7]:51820', allowedIPs: ['10.244.2.7/24'] },
        ],
      });
      const d = await wg.getDevice(dev);
      expect(d!.peers).toHaveLength(2);
      const pa = peer(d, a);
      expect(pa.endpoint).toBe('192.0.2.10:51820');
      expect(pa.persistentKeepalive).toBe(25);
      expect([...pa.allowedIPs].sort()).toEqual(['10.244.1.0/24', '10.244.1.1/32', 'fd00:10:244:1::/64']);
      expect(pa.lastHandshake).toBe(0);
      const pb = peer(d, b);
      expect(pb.endpoint).toBe('[2001:db8::7]:51820');
      expect(pb.persistentKeepalive).toBe(0);
      expect(pb.allowedIPs).toEqual(['10.244.2.0/24']);

      await wg.setDevice(dev, { peers: [{ publicKey: a, remove: true }] });
      const d2 = await wg.getDevice(dev);
      expect(d2!.peers.map((p) => p.publicKey)).toEqual([b]);
      // Removing a peer that is not there succeeds.
      await wg.setDevice(dev, { peers: [{ publicKey: a, remove: true }] });
      expect((await wg.getDevice(dev))!.peers).toHaveLength(1);
    });

    it('adds allowed IPs, replaces them exactly, clears them, and moves a CIDR between peers', async () => {
      const dev = await fresh();
      const a = key();
      const b = key();
      await wg.setDevice(dev, { peers: [{ publicKey: a, allowedIPs: ['10.1.0.0/24'] }, { publicKey: b, allowedIPs: ['10.2.0.0/24'] }] });
      await wg.setDevice(dev, { peers: [{ publicKey: a, allowedIPs: ['10.1.1.0/24'] }] });
      expect([...peer(await wg.getDevice(dev), a).allowedIPs].sort()).toEqual(['10.1.0.0/24', '10.1.1.0/24']);
      await wg.setDevice(dev, { peers: [{ publicKey: a, replaceAllowedIPs: true, allowedIPs: ['10.1.9.0/24', 'fd00::/64'] }] });
      expect([...peer(await wg.getDevice(dev), a).allowedIPs].sort()).toEqual(['10.1.9.0/24', 'fd00::/64']);
      // A CIDR belongs to one peer: giving it to b takes it from a.
      await wg.setDevice(dev, { peers: [{ publicKey: b, allowedIPs: ['10.1.9.0/24'] }] });
      const d = await wg.getDevice(dev);
      expect(peer(d, a).allowedIPs).toEqual(['fd00::/64']);
      expect([...peer(d, b).allowedIPs].sort()).toEqual(['10.1.9.0/24', '10.2.0.0/24']);
      await wg.setDevice(dev, { peers: [{ publicKey: b, replaceAllowedIPs: true, allowedIPs: [] }] });
      expect(peer(await wg.getDevice(dev), b).allowedIPs).toEqual([]);
    });

    it('changes the endpoint and keepalive without touching allowed IPs', async () => {
      const dev = await fresh();
      const a = key();
      await wg.setDevice(dev, { peers: [{ publicKey: a, endpoint: '192.0.2.1:1000', persistentKeepalive: 25, allowedIPs: ['10.9.0.0/16'] }] });
      await wg.setDevice(dev, { peers: [{ publicKey: a, endpoint: '198.18.0.5:2000' }] });
      let p = peer(await wg.getDevice(dev), a);
      expect(p.endpoint).toBe('198.18.0.5:2000');
      expect(p.persistentKeepalive).toBe(25);
      expect(p.allowedIPs).toEqual(['10.9.0.0/16']);
      await wg.setDevice(dev, { peers: [{ publicKey: a, endpoint: '[2001:db8::1]:3000', persistentKeepalive: 0 }] });
      p = peer(await wg.getDevice(dev), a);
      expect(p.endpoint).toBe('[2001:db8::1]:3000');
      expect(p.persistentKeepalive).toBe(0);
      await wg.setDevice(dev, { peers: [{ publicKey: a, persistentKeepalive: 10 }] });
      p = peer(await wg.getDevice(dev), a);
      expect(p.persistentKeepalive).toBe(10);
      expect(p.endpoint).toBe('[2001:db8::1]:3000');
    });

    it('replacePeers keeps only the peers named; updateOnly never creates a peer', async () => {
      const dev = await fresh();
      const [a, b, c] = [key(), key(), key()];
      await wg.setDevice(dev, { peers: [{ publicKey: a }, { publicKey: b }] });
      await wg.setDevice(dev, { replacePeers: true, peers: [{ publicKey: b, allowedIPs: ['10.7.0.0/24'] }, { publicKey: c }] });
      const d = await wg.getDevice(dev);
      expect(d!.peers.map((p) => p.publicKey).sort()).toEqual([b, c].sort());
      expect(peer(d, b).allowedIPs).toEqual(['10.7.0.0/24']);
      await wg.setDevice(dev, { peers: [{ publicKey: a, updateOnly: true, endpoint: '192.0.2.1:1' }, { publicKey: c, updateOnly: true, endpoint: '192.0.2.2:2' }] });
      const d2 = await wg.getDevice(dev);
      expect(d2!.peers.map((p) => p.publicKey).sort()).toEqual([b, c].sort());
      expect(peer(d2, c).endpoint).toBe('192.0.2.2:2');
      await wg.setDevice(dev, { replacePeers: true });
      expect((await wg.getDevice(dev))!.peers).toEqual([]);
    });

    it('rejects malformed updates with WgInputError and applies nothing', async () => {
      const dev = await fresh();
      const a = key();
      const bad: WgPeerUpdate[][] = [
        [{ publicKey: a }, { publicKey: 'not-a-key' }],
        [{ publicKey: a, allowedIPs: ['10.0.0.0/33'] }],
        [{ publicKey: a, endpoint: '192.0.2.1' }],
        [{ publicKey: a, endpoint: 'example.com:51820' }],
        [{ publicKey: a, persistentKeepalive: 70000 }],
        [{ publicKey: a }, { publicKey: a, remove: true }],
      ];
      for (const peers of bad) {
        await expect(wg.setDevice(dev, { peers })).rejects.toBeInstanceOf(WgInputError);
      }
      await expect(wg.setDevice(dev, { listenPort: 70000 })).rejects.toBeInstanceOf(WgInputError);
      await expect(wg.setDevice(dev, { privateKey: 'AAAA' })).rejects.toBeInstanceOf(WgInputError);
      await expect(wg.ensureDevice('bad/name')).rejects.toBeInstanceOf(WgInputError);
      expect((await wg.getDevice(dev))!.peers).toEqual([]);
    });

    it(`holds ${many} peers, read back completely across multi-part reads, and removes them`, async () => {
      const dev = await fresh();
      await wg.setDevice(dev, { privateKey: generatePrivateKey(), listenPort: 41840 });
      const keys = Array.from({ length: many }, () => key());
      const ipFor = (i: number) => `10.${100 + (i >> 8)}.${i & 255}.0/24`;
      const v6For = (i: number) => canonicalCIDR(`fd00:1::${i.toString(16)}:0/112`);
      await wg.setDevice(dev, {
        peers: keys.map((k, i) => ({
          publicKey: k,
          endpoint: `198.18.${i >> 8}.${i & 255}:51820`,
          persistentKeepalive: i % 2 === 0 ? 0 : 25,
          allowedIPs: [ipFor(i), v6For(i)],
        })),
      });
      const d = await wg.getDevice(dev);
      expect(d!.peers).toHaveLength(many);
      const byKey = new Map(d!.peers.map((p) => [p.publicKey, p]));
      keys.forEach((k, i) => {
        const p = byKey.get(k);
        expect(p, `peer ${i}`).toBeDefined();
        expect(p!.endpoint).toBe(`198.18.${i >> 8}.${i & 255}:51820`);
        expect(p!.persistentKeepalive).toBe(i % 2 === 0 ? 0 : 25);
        expect([...p!.allowedIPs].sort()).toEqual([ipFor(i), v6For(i)].sort());
      });
      // One change among many touches only that peer.
      await wg.setDevice(dev, { peers: [{ publicKey: keys[500 % many]!, endpoint: '192.0.2.99:9' }] });
      const d2 = await wg.getDevice(dev);
      expect(d2!.peers).toHaveLength(many);
      expect(peer(d2, keys[500 % many]!).endpoint).toBe('192.0.2.99:9');
      expect(peer(d2, keys[1]!).endpoint).toBe('198.18.0.1:51820');
      await wg.setDevice(dev, { peers: keys.map((k) => ({ publicKey: k, remove: true })) });
      expect((await wg.getDevice(dev))!.peers).toEqual([]);
    });

    it('adopts an existing device untouched from a new backend instance (agent restart)', async () => {
      const dev = await fresh();
      const priv = generatePrivateKey();
      const a = key();
      await wg.setDevice(dev, { privateKey: priv, listenPort: 41850, peers: [{ publicKey: a, endpoint: '192.0.2.3:4', allowedIPs: ['10.3.0.0/16'], persistentKeepalive: 5 }] });
      const before = await wg.getDevice(dev);
      const second = await h.open();
      extra.push(second);
      await second.ensureDevice(dev);
      const after = await second.getDevice(dev);
      expect(after).toEqual(before);
      expect(after!.privateKey).toBe(priv);
      // The second instance can change it too.
      await second.setDevice(dev, { peers: [{ publicKey: a, persistentKeepalive: 7 }] });
      expect(peer(await wg.getDevice(dev), a).persistentKeepalive).toBe(7);
    });

    it('sees drift made out of band and repairs it by re-applying the peer', async () => {
      const dev = await fresh();
      const a = key();
      const b = key();
      const desired: WgPeerUpdate[] = [
        { publicKey: a, endpoint: '192.0.2.1:51820', allowedIPs: ['10.4.0.0/24'], replaceAllowedIPs: true },
        { publicKey: b, endpoint: '192.0.2.2:51820', allowedIPs: ['10.5.0.0/24'], replaceAllowedIPs: true },
      ];
      await wg.setDevice(dev, { peers: desired });
      await h.removePeerOutOfBand(dev, a);
      await h.setAllowedIPsOutOfBand(dev, b, ['10.5.0.0/24', '10.66.0.0/16']);
      const drifted = await wg.getDevice(dev);
      expect(drifted!.peers.map((p) => p.publicKey)).toEqual([b]);
      expect([...peer(drifted, b).allowedIPs].sort()).toEqual(['10.5.0.0/24', '10.66.0.0/16']);
      await wg.setDevice(dev, { peers: desired });
      const repaired = await wg.getDevice(dev);
      expect(peer(repaired, a).endpoint).toBe('192.0.2.1:51820');
      expect(peer(repaired, a).allowedIPs).toEqual(['10.4.0.0/24']);
      expect(peer(repaired, b).allowedIPs).toEqual(['10.5.0.0/24']);
    });

    it('deletes a device idempotently', async () => {
      const dev = await fresh();
      await wg.deleteDevice(dev);
      expect(await wg.getDevice(dev)).toBeNull();
      await wg.deleteDevice(dev);
      ifname = '';
    });
  });
}
