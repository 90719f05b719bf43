import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { chooseEndpoint, planDatapath, planMTU, PlanError, type DatapathConfig } from '../../src/plan/datapath.ts';
import { nodeInfo, remote } from './helpers.ts';

const v4: DatapathConfig = { ifname: 'weft0', listenPort: 51820, clusterCIDRs: ['10.244.0.0/16'], mtu: 'auto', underlayMTU: 1500, underlayFamilies: [4] };
const dual: DatapathConfig = { ...v4, clusterCIDRs: ['fd00:10::/56', '10.244.0.0/16'], underlayFamilies: [4, 6] };
const self = nodeInfo(0);

describe('planDatapath', () => {
  it('plans one peer per alive/suspect remote with pod CIDRs + mesh IP host route, sorted', () => {
    const s = planDatapath(self, [remote(nodeInfo(2)), remote(nodeInfo(1), 'suspect'), remote(nodeInfo(3), 'dead'), remote(nodeInfo(4), 'left')], v4);
    expect(s).toEqual({
      ifname: 'weft0',
      listenPort: 51820,
      mtu: 1440,
      addresses: ['10.244.0.1/32'],
      peers: [
        { name: 'node-1', publicKey: nodeInfo(1).wgPublicKey, endpoint: '192.0.2.2:51820', allowedIPs: ['10.244.1.0/24', '10.244.1.1/32'], persistentKeepalive: 0 },
        { name: 'node-2', publicKey: nodeInfo(2).wgPublicKey, endpoint: '192.0.2.3:51820', allowedIPs: ['10.244.2.0/24', '10.244.2.1/32'], persistentKeepalive: 0 },
      ],
      routes: [{ dst: '10.244.0.0/16', dev: 'weft0' }],
    });
  });

  it('is fail-closed: routes are exactly the cluster CIDRs into the WireGuard interface, even with no peers', () => {
    const s = planDatapath(self, [], dual);
    expect(s.peers).toEqual([]);
    expect(s.routes).toEqual([
      { dst: '10.244.0.0/16', dev: 'weft0' },
      { dst: 'fd00:10::/56', dev: 'weft0' },
    ]);
  });

  it('refuses to plan without a cluster CIDR', () => {
    expect(() => planDatapath(self, [], { ...v4, clusterCIDRs: [] })).toThrow(PlanError);
    expect(() => planDatapath(self, [], { ...v4, clusterCIDRs: ['10.244.0.1/16'] })).toThrow(/bad cluster CIDR/);
  });

  it('skips itself and duplicate keys', () => {
    const dupe = nodeInfo(5, { wgPublicKey: nodeInfo(1).wgPublicKey });
    const s = planDatapath(self, [remote(nodeInfo(0)), remote(nodeInfo(1)), remote(dupe), remote(nodeInfo(6, { wgPublicKey: self.wgPublicKey }))], v4);
    expect(s.peers.map((p) => p.name)).toEqual(['node-1']);
  });

  it('sets keepalive only where the remote asks for it', () => {
    const s = planDatapath(self, [remote(nodeInfo(1, { keepalive: 25 })), remote(nodeInfo(2))], v4);
    expect(s.peers.map((p) => p.persistentKeepalive)).toEqual([25, 0]);
  });

  it('plans dual stack: both pod CIDRs, v6 mesh IP as /128, v6 self address', () => {
    const r = nodeInfo(1, { podCIDRs: ['10.244.1.0/24', 'fd00:10:0:1::/64'], meshIP: 'fd00:10:0:1::1', endpoints: ['[2001:db8::1]:51820', '192.0.2.2:51820'] });
    const me = nodeInfo(0, { meshIP: 'fd00:10::1', podCIDRs: ['10.244.0.0/24', 'fd00:10::/64'] });
    const s = planDatapath(me, [remote(r)], { ...dual, underlayFamilies: [6, 4] });
    expect(s.addresses).toEqual(['fd00:10::1/128']);
    expect(s.peers[0]!.allowedIPs).toEqual(['10.244.1.0/24', 'fd00:10:0:1::/64', 'fd00:10:0:1::1/128']);
    expect(s.peers[0]!.endpoint).toBe('[2001:db8::1]:51820');
    expect(s.mtu).toBe(1420);
    expect(planDatapath(me, [remote(r)], dual).peers[0]!.endpoint).toBe('192.0.2.2:51820');
  });

  it('leaves the endpoint unset when no endpoint of a reachable family exists', () => {
    const s = planDatapath(self, [remote(nodeInfo(1, { endpoints: ['[2001:db8::1]:51820'] }))], v4);
    expect(s.peers[0]).not.toHaveProperty('endpoint');
  });

  it('is deterministic whatever the order of the remotes (property)', () => {
    const nodes = Array.from({ length: 12 }, (_, i) => remote(nodeInfo(i + 1), i % 5 === 0 ? 'dead' : 'alive'));
    fc.assert(
      fc.property(fc.shuffledSubarray(nodes, { minLength: 0 }), (sub) => {
        const a = planDatapath(self, sub, v4);
        const b = planDatapath(self, [...sub].reverse(), v4);
        expect(b).toEqual(a);
        for (const r of a.routes) expect(r.dev).toBe('weft0');
      }),
    );
  });
});

describe('planMTU', () => {
  const t: [Partial<DatapathConfig>, number][] = [
    [{ mtu: 'auto', underlayMTU: 1500, underlayFamilies: [4] }, 1440],
    [{ mtu: 'auto', underlayMTU: 1500, underlayFamilies: [6, 4] }, 1420],
    [{ mtu: 'auto', underlayMTU: 9000, underlayFamilies: [4] }, 8940],
    [{ mtu: 1380, underlayMTU: 1500, underlayFamilies: [4] }, 1380],
  ];
  it.each(t)('%o -> %d', (c, want) => {
    expect(planMTU({ ...v4, ...c })).toBe(want);
  });
  it('rejects impossible values', () => {
    expect(() => planMTU({ ...v4, mtu: 100 })).toThrow(PlanError);
    expect(() => planMTU({ ...v4, underlayMTU: Number.NaN })).toThrow(PlanError);
    expect(() => planMTU({ ...dual, mtu: 1200 })).toThrow(/IPv6/);
  });
});

describe('chooseEndpoint', () => {
  it('picks the first endpoint of the preferred family, then of the next', () => {
    const eps = ['bad', '[2001:db8::5]:1', '192.0.2.1:2', '192.0.2.9:3'];
    expect(chooseEndpoint(eps, [4, 6])).toBe('192.0.2.1:2');
    expect(chooseEndpoint(eps, [6, 4])).toBe('[2001:db8::5]:1');
    expect(chooseEndpoint(['[2001:db8::5]:1'], [4])).toBeUndefined();
  });
});

describe('keepalive only where needed (issue 7)', () => {
  it('keeps a link alive when either side is behind NAT, never between two public nodes', () => {
    const natted = planDatapath({ ...self, keepalive: 25 }, [remote(nodeInfo(1)), remote(nodeInfo(2, { keepalive: 20 }))], v4);
    expect(natted.peers.map((p) => p.persistentKeepalive)).toEqual([25, 20]);
    const open = planDatapath(self, [remote(nodeInfo(1)), remote(nodeInfo(2))], v4);
    expect(open.peers.map((p) => p.persistentKeepalive)).toEqual([0, 0]);
  });
});
