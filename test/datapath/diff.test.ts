import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { DesiredPeer, DesiredState } from '../../src/model.ts';
import type { WgDevice, WgPeer } from '../../src/wireguard/backend.ts';
import { applyDeviceUpdate, diffAddresses, diffDevice, diffLink, diffPeers, diffRoutes, isEmptyUpdate, updateWrites } from '../../src/datapath/diff.ts';
import { RT_TABLE_MAIN, WEFT_FALLBACK_METRIC, WEFT_RT_PROTO, type RtRoute } from '../../src/datapath/rtnetlink.ts';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';
import { publicKeyFromPrivate } from '../../src/wireguard/keys.ts';
import { keyPair } from '../plan/helpers.ts';

const KEYS = Array.from({ length: 8 }, (_, i) => keyPair(100 + i).publicKey);
const CIDRS = ['10.244.1.0/24', '10.244.1.1/32', '10.244.2.0/24', '10.244.2.1/32', '10.244.3.0/24', 'fd00:10:0:1::/64', 'fd00:10:0:1::1/128', 'fd00:10:0:2::/64', '10.244.4.0/24', '10.244.5.0/24'];
const ENDPOINTS = ['192.0.2.1:51820', '192.0.2.2:51820', '[2001:db8::1]:51820', '192.0.2.1:51821'];
const self = keyPair(1);

function peer(key: string, over: Partial<WgPeer> = {}): WgPeer {
  return { publicKey: key, allowedIPs: [], persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0, ...over };
}
function device(peers: WgPeer[], over: Partial<WgDevice> = {}): WgDevice {
  return { name: 'weft0', publicKey: self.publicKey, listenPort: 51820, fwmark: 0, peers, ...over };
}
function desired(peers: DesiredPeer[]): DesiredState {
  return { ifname: 'weft0', listenPort: 51820, mtu: 1420, addresses: ['10.244.0.1/32'], peers, routes: [{ dst: '10.244.0.0/16', dev: 'weft0' }] };
}
const keys = { privateKey: self.privateKey, publicKey: self.publicKey };

describe('diffPeers', () => {
  it('is empty for equal states, with allowed IPs in any order', () => {
    const cur = [peer(KEYS[0]!, { endpoint: '192.0.2.1:51820', allowedIPs: ['10.244.1.1/32', '10.244.1.0/24'], persistentKeepalive: 25 })];
    const want: DesiredPeer[] = [{ name: 'a', publicKey: KEYS[0]!, endpoint: '192.0.2.1:51820', allowedIPs: ['10.244.1.0/24', '10.244.1.1/32'], persistentKeepalive: 25 }];
    expect(diffPeers(want, cur)).toEqual([]);
  });

  it('adds a new peer, removes an undesired one, leaves the unchanged one alone', () => {
    const cur = [peer(KEYS[0]!, { allowedIPs: ['10.244.1.0/24'] }), peer(KEYS[1]!, { allowedIPs: ['10.244.2.0/24'] })];
    const want: DesiredPeer[] = [
      { name: 'a', publicKey: KEYS[0]!, allowedIPs: ['10.244.1.0/24'], persistentKeepalive: 0 },
      { name: 'c', publicKey: KEYS[2]!, endpoint: '192.0.2.3:51820', allowedIPs: ['10.244.3.0/24'], persistentKeepalive: 25 },
    ];
    expect(diffPeers(want, cur)).toEqual([
      { publicKey: KEYS[1]!, remove: true },
      { publicKey: KEYS[2]!, allowedIPs: ['10.244.3.0/24'], endpoint: '192.0.2.3:51820', persistentKeepalive: 25 },
    ]);
  });

  it('changes only the field that differs', () => {
    const base = peer(KEYS[0]!, { endpoint: '192.0.2.1:51820', allowedIPs: ['10.244.1.0/24'] });
    const d: DesiredPeer = { name: 'a', publicKey: KEYS[0]!, endpoint: '192.0.2.1:51820', allowedIPs: ['10.244.1.0/24'], persistentKeepalive: 0 };
    expect(diffPeers([{ ...d, endpoint: '192.0.2.9:51820' }], [base])).toEqual([{ publicKey: KEYS[0], updateOnly: true, endpoint: '192.0.2.9:51820' }]);
    expect(diffPeers([{ ...d, persistentKeepalive: 25 }], [base])).toEqual([{ publicKey: KEYS[0], updateOnly: true, persistentKeepalive: 25 }]);
    expect(diffPeers([{ ...d, allowedIPs: ['10.244.1.0/24', '10.244.9.0/24'] }], [base])).toEqual([{ publicKey: KEYS[0], updateOnly: true, allowedIPs: ['10.244.9.0/24'] }]);
    expect(diffPeers([{ ...d, allowedIPs: ['10.244.9.0/24'] }], [base])).toEqual([{ publicKey: KEYS[0], updateOnly: true, allowedIPs: ['10.244.9.0/24'], replaceAllowedIPs: true }]);
  });

  it('leaves a roamed endpoint alone when the plan has none, and compares endpoints canonically', () => {
    const base = peer(KEYS[0]!, { endpoint: '[2001:db8::1]:51820', allowedIPs: [] });
    expect(diffPeers([{ name: 'a', publicKey: KEYS[0]!, allowedIPs: [], persistentKeepalive: 0 }], [base])).toEqual([]);
    expect(diffPeers([{ name: 'a', publicKey: KEYS[0]!, endpoint: '[2001:DB8:0::1]:51820', allowedIPs: [], persistentKeepalive: 0 }], [base])).toEqual([]);
  });
});

describe('diffDevice', () => {
  it('sets the private key only when the public key differs, and the port when it differs', () => {
    expect(isEmptyUpdate(diffDevice(desired([]), device([]), keys))).toBe(true);
    expect(diffDevice(desired([]), device([], { publicKey: undefined }), keys)).toEqual({ privateKey: self.privateKey });
    expect(diffDevice(desired([]), device([], { listenPort: 1 }), keys)).toEqual({ listenPort: 51820 });
    expect(updateWrites({ listenPort: 1, peers: [{ publicKey: KEYS[0]! }, { publicKey: KEYS[1]! }] })).toBe(3);
  });

  // State generators: allowed IPs are unique across peers on both sides, as WireGuard enforces.
  const owners = (n: number) => fc.array(fc.integer({ min: -1, max: n - 1 }), { minLength: CIDRS.length, maxLength: CIDRS.length });
  const peerFields = fc.record({
    present: fc.boolean(),
    endpoint: fc.option(fc.constantFrom(...ENDPOINTS), { nil: undefined }),
    keepalive: fc.constantFrom(0, 0, 25, 15),
  });
  const side = fc.tuple(fc.array(peerFields, { minLength: KEYS.length, maxLength: KEYS.length }), owners(KEYS.length));
  const build = ([fields, own]: [{ present: boolean; endpoint?: string; keepalive: number }[], number[]]) =>
    fields.flatMap((f, i) => (f.present ? [{ i, f, ips: CIDRS.filter((_, c) => own[c] === i) }] : []));

  it('applying the diff to the current state yields the desired state; a second diff is empty (property)', async () => {
    await fc.assert(
      fc.asyncProperty(side, side, fc.constantFrom(51820, 1), async (cur, want, port) => {
        const current = device(build(cur).map(({ i, f, ips }) => peer(KEYS[i]!, { endpoint: f.endpoint, allowedIPs: i % 2 ? [...ips].reverse() : ips, persistentKeepalive: f.keepalive })), { listenPort: port });
        const wantPeers: DesiredPeer[] = build(want).map(({ i, f, ips }) => ({ name: `n${i}`, publicKey: KEYS[i]!, allowedIPs: ips, persistentKeepalive: f.keepalive, ...(f.endpoint ? { endpoint: f.endpoint } : {}) }));
        const d = desired(wantPeers);
        const u = diffDevice(d, current, keys);
        const after = applyDeviceUpdate(current, u, publicKeyFromPrivate);
        expect(isEmptyUpdate(diffDevice(d, after, keys))).toBe(true);
        expect(after.peers.map((p) => p.publicKey).sort()).toEqual(wantPeers.map((p) => p.publicKey).sort());
        for (const w of wantPeers) {
          const got = after.peers.find((p) => p.publicKey === w.publicKey)!;
          expect([...got.allowedIPs].sort()).toEqual([...w.allowedIPs].sort());
          expect(got.persistentKeepalive).toBe(w.persistentKeepalive);
          if (w.endpoint) expect(got.endpoint).toBe(w.endpoint);
        }
        // Untouched peers: a peer already right is never named in the update.
        for (const p of u.peers ?? []) {
          const c = current.peers.find((x) => x.publicKey === p.publicKey);
          const w = wantPeers.find((x) => x.publicKey === p.publicKey);
          if (c && w) expect(diffPeers([w], [c])).not.toEqual([]);
        }
        // The same patch on the backend engineer's fake (kernel-like semantics) converges too.
        const fake = new FakeWireGuardBackend();
        await fake.ensureDevice('weft0');
        await fake.setDevice('weft0', { privateKey: self.privateKey, listenPort: current.listenPort, peers: current.peers.map((p) => ({ publicKey: p.publicKey, allowedIPs: p.allowedIPs, persistentKeepalive: p.persistentKeepalive, ...(p.endpoint ? { endpoint: p.endpoint } : {}) })) });
        await fake.setDevice('weft0', u);
        expect(isEmptyUpdate(diffDevice(d, (await fake.getDevice('weft0'))!, keys))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('applyDeviceUpdate', () => {
  it('does not recreate a vanished peer from an updateOnly change, and moves allowed IPs between peers', () => {
    const cur = device([peer(KEYS[0]!, { allowedIPs: ['10.244.1.0/24'] })]);
    const after = applyDeviceUpdate(cur, { peers: [{ publicKey: KEYS[1]!, updateOnly: true, endpoint: '192.0.2.1:51820' }, { publicKey: KEYS[2]!, allowedIPs: ['10.244.1.0/24'] }] }, publicKeyFromPrivate);
    expect(after.peers.map((p) => [p.publicKey, p.allowedIPs])).toEqual([[KEYS[0], []], [KEYS[2], ['10.244.1.0/24']]]);
  });
});

describe('diffLink and diffAddresses', () => {
  it('sets MTU and up only when needed', () => {
    const d = desired([]);
    expect(diffLink(d, { index: 3, name: 'weft0', mtu: 1420, up: true })).toEqual({});
    expect(diffLink(d, { index: 3, name: 'weft0', mtu: 1500, up: false })).toEqual({ mtu: 1420, up: true });
  });
  it('adds missing, removes stale, keeps link-local', () => {
    expect(diffAddresses(['10.244.0.1/32'], ['10.244.0.1/32', 'fe80::1/64'])).toEqual({ add: [], del: [] });
    expect(diffAddresses(['10.244.5.1/32'], ['10.244.0.1/32', '169.254.1.1/16'])).toEqual({ add: ['10.244.5.1/32'], del: ['10.244.0.1/32'] });
    expect(diffAddresses(['fd00::1/128'], ['FD00:0::1/128'])).toEqual({ add: [], del: [] });
  });
});

describe('diffRoutes', () => {
  const r = (dst: string, over: Partial<RtRoute> = {}): RtRoute => ({ dst, type: 'unicast', dev: 'weft0', ifindex: 5, protocol: WEFT_RT_PROTO, table: RT_TABLE_MAIN, metric: 0, ...over });
  const bh = (dst: string, metric = WEFT_FALLBACK_METRIC): RtRoute => ({ dst, type: 'blackhole', protocol: WEFT_RT_PROTO, table: RT_TABLE_MAIN, metric });
  const want = [{ dst: '10.244.0.0/16', dev: 'weft0' }, { dst: 'fd00:10::/56', dev: 'weft0' }];
  const fallbacks = want.map((w) => ({ dst: w.dst, blackhole: true as const, metric: WEFT_FALLBACK_METRIC }));

  it('is empty when the weft routes and their fallbacks are in place', () => {
    const cur = [r('10.244.0.0/16'), r('fd00:10::/56', { metric: 1024 }), bh('10.244.0.0/16'), bh('fd00:10::/56'), r('0.0.0.0/0', { protocol: 3, dev: 'eth0' })];
    expect(diffRoutes(want, cur)).toEqual({ add: [], replace: [], del: [], replaceForeign: [] });
  });
  it('adds missing routes with their blackhole fallbacks and deletes stale weft routes, never foreign ones', () => {
    const d = diffRoutes(want, [r('10.245.0.0/16'), bh('10.245.0.0/16'), bh('10.244.0.0/16', 5), r('192.168.0.0/16', { protocol: 4, dev: 'eth0' }), r('10.99.0.0/16', { protocol: 4, type: 'blackhole' })]);
    expect(d.add).toEqual([fallbacks[0], want[0], fallbacks[1], want[1]]);
    expect(d.del).toEqual([{ dst: '10.245.0.0/16', dev: 'weft0' }, { dst: '10.245.0.0/16', blackhole: true, metric: WEFT_FALLBACK_METRIC }, { dst: '10.244.0.0/16', blackhole: true, metric: 5 }]);
    expect(d.replace).toEqual([]);
  });
  it('keeps the fallback when only the interface route vanished (interface gone) and re-adds the route', () => {
    const d = diffRoutes(want, [bh('10.244.0.0/16'), bh('fd00:10::/56')]);
    expect(d).toEqual({ add: want, replace: [], del: [], replaceForeign: [] });
  });
  it('replaces a weft route on the wrong device and a foreign route to the cluster CIDR (fail-closed)', () => {
    const foreign = r('fd00:10::/56', { protocol: 4, dev: 'eth0', gateway: '2001:db8::1' });
    const d = diffRoutes(want, [r('10.244.0.0/16', { dev: 'eth0', ifindex: 2 }), foreign, bh('10.244.0.0/16'), bh('fd00:10::/56')]);
    expect(d.replace).toEqual(want);
    expect(d.replaceForeign).toEqual([foreign]);
    expect(d.del).toEqual([]);
    expect(d.add).toEqual([]);
  });
  it('ignores routes in other tables', () => {
    expect(diffRoutes([], [r('10.244.0.0/16', { table: 100 })]).del).toEqual([]);
  });
});
