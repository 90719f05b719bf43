import { describe, expect, it } from 'vitest';
import { buildReport, checkRoutes, interfacesWithAddresses, probeAddresses, renderVerify, runVerify, type RouteScope, type VerifyIo } from '../../src/observe/verify.ts';
import { verifyOptionsFrom } from '../../src/cli/verify.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const scope: RouteScope = { ifname: 'weft0', clusterCIDRs: ['10.244.0.0/16'], remoteCIDRs: ['10.244.2.0/24', '10.244.2.1/32'], localCIDRs: ['10.244.1.0/24'] };

// What a healthy node's tables hold (shape of `ip -j route show table all`).
const healthy = [
  { dst: 'default', gateway: '198.18.0.254', dev: 'eth0' },
  { dst: '198.18.0.0/24', dev: 'eth0', protocol: 'kernel' },
  { dst: '10.244.0.0/16', dev: 'weft0', protocol: 'weft' },
  { dst: '10.244.2.0/24', dev: 'weft0', protocol: 'weft' },
  { dst: '10.244.1.0/24', dev: 'weftgw0', protocol: 'kernel' },
  // A local pod on its routed veth (the CNI's host route).
  { dst: '10.244.1.2', dev: 'weft4f0c2a1b', protocol: 'boot', scope: 'link' },
  { type: 'local', dst: '10.244.1.1', dev: 'weftgw0', table: 'local' },
  { type: 'broadcast', dst: '10.244.1.255', dev: 'weftgw0', table: 'local' },
  { type: 'unreachable', dst: '10.244.9.0/24' },
];

describe('probeAddresses', () => {
  it('picks first host, middle and last host, skipping the local block', () => {
    expect(probeAddresses('10.244.2.0/24')).toEqual(['10.244.2.1', '10.244.2.128', '10.244.2.254']);
    expect(probeAddresses('10.244.2.1/32')).toEqual(['10.244.2.1']);
    expect(probeAddresses('10.244.0.0/16', ['10.244.0.0/24'])).toEqual(['10.244.128.0', '10.244.255.254']);
    expect(probeAddresses('fd00:10::/64')).toEqual(['fd00:10::1', 'fd00:10:0:0:8000::', 'fd00:10::ffff:ffff:ffff:fffe']);
    expect(probeAddresses('not a cidr')).toEqual([]);
  });
});

describe('checkRoutes', () => {
  const good = [{ cidr: '10.244.2.0/24', addr: '10.244.2.1', dev: 'weft0' }];
  it('passes a healthy table', () => {
    expect(checkRoutes(scope, healthy, good)).toEqual([]);
  });
  it('flags a more specific plaintext route to a remote block in any table', () => {
    const leak = [...healthy, { dst: '10.244.2.0/25', gateway: '198.18.0.2', dev: 'eth0', protocol: 'boot' }, { dst: '10.244.7.7', dev: 'eth1', table: '100' }];
    const p = checkRoutes(scope, leak, good);
    expect(p).toHaveLength(2);
    expect(p[0]).toMatchObject({ cidr: '10.244.0.0/16' });
    expect(p[0]!.detail).toContain('route 10.244.2.0/25 dev eth0 via 198.18.0.2');
    expect(p[1]!.detail).toContain('table 100');
  });
  it('flags lookups that leave through another device or fail; accepts drop routes', () => {
    const p = checkRoutes(scope, healthy, [
      { cidr: '10.244.2.0/24', addr: '10.244.2.2', dev: 'eth0' },
      { cidr: '10.244.0.0/16', addr: '10.244.128.0', error: 'RTNETLINK answers: Network is unreachable' },
      { cidr: '10.244.0.0/16', addr: '10.244.9.1', type: 'unreachable' },
    ]);
    expect(p.map((x) => x.detail)).toEqual([
      '10.244.2.2 routes via eth0, not weft0',
      'route lookup of 10.244.128.0 failed: RTNETLINK answers: Network is unreachable',
    ]);
  });
  it('ignores routes wider than the cluster and routes of the own block', () => {
    expect(checkRoutes(scope, [{ dst: '10.0.0.0/8', dev: 'eth0' }, { dst: '10.244.1.128/25', dev: 'eth0' }], [])).toEqual([]);
  });
});

describe('interfacesWithAddresses', () => {
  it('finds the interface of the endpoint address and tolerates junk', () => {
    const json = [{ ifname: 'lo', addr_info: [{ local: '127.0.0.1' }] }, { ifname: 'eth0', addr_info: [{ local: '198.18.0.1' }] }, { nope: 1 }, null];
    expect(interfacesWithAddresses(json, ['198.18.0.1'])).toEqual(['eth0']);
    expect(interfacesWithAddresses({}, ['198.18.0.1'])).toEqual([]);
  });
});

/** A pcap file (Ethernet) holding the given IPv4 UDP packets. */
function pcap(packets: Array<{ src: string; dst: string; sport: number; dport: number; payload: number[] }>): Uint8Array {
  const parts: number[] = [0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1];
  for (const p of packets) {
    const ip = (s: string) => s.split('.').map(Number);
    const udpLen = 8 + p.payload.length;
    const frame = [...new Array(12).fill(0), 0x08, 0x00, 0x45, 0, 0, 20 + udpLen, 0, 0, 0, 0, 64, 17, 0, 0, ...ip(p.src), ...ip(p.dst), p.sport >> 8, p.sport & 255, p.dport >> 8, p.dport & 255, udpLen >> 8, udpLen & 255, 0, 0, ...p.payload];
    const len = frame.length;
    parts.push(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, len >> 8, len & 255, 0, 0, len >> 8, len & 255, ...frame);
  }
  return new Uint8Array(parts);
}

function fakeIo(capture: Uint8Array, routes: unknown[], getDev: (addr: string) => string): VerifyIo & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async run(argv) {
      calls.push(argv.join(' '));
      if (argv[2] === 'route' && argv[3] === 'get') return { code: 0, stdout: JSON.stringify([{ dst: argv[4], dev: getDev(argv[4]!) }]), stderr: '' };
      if (argv.includes('show')) return { code: 0, stdout: JSON.stringify(argv[2] === '-4' ? routes : []), stderr: '' };
      return { code: 1, stdout: '', stderr: 'unexpected' };
    },
    async capture() {
      return capture;
    },
  };
}

describe('runVerify', () => {
  const wg = { src: '198.18.0.1', dst: '198.18.0.2', sport: 51820, dport: 51820, payload: [4, 0, 0, 0, ...new Array(28).fill(7)] };
  const opts = { ...scope, seconds: 1, underlays: ['eth0'], wgPorts: [51820], meshPort: 7946 };

  it('passes with only WireGuard on the wire and every lookup into weft0', async () => {
    const io = fakeIo(pcap([wg, wg]), healthy, () => 'weft0');
    const r = await runVerify(io, opts);
    expect(r.ok).toBe(true);
    expect(r.captures[0]!.summary).toMatchObject({ total: 2, wireguardData: 2, podAddress: 0 });
    expect(io.calls).toContain('ip -j route get 10.244.2.128');
    expect(renderVerify(r)).toContain('verify: ok');
  });

  it('fails on a plaintext pod packet and on a lookup leaving by the underlay', async () => {
    const leak = { src: '10.244.1.2', dst: '10.244.2.2', sport: 5000, dport: 53, payload: [1, 2, 3] };
    const io = fakeIo(pcap([wg, leak]), healthy, (a) => (a.startsWith('10.244.2.') ? 'eth0' : 'weft0'));
    const r = await runVerify(io, opts);
    expect(r.ok).toBe(false);
    expect(r.leakedPackets).toBe(1);
    expect(r.routeProblems.length).toBeGreaterThan(0);
    const text = renderVerify(r);
    expect(text).toContain('FAIL plaintext pod packet: proto 17 10.244.1.2:5000 -> 10.244.2.2:53');
    expect(text).toContain('verify: FAILED');
  });

  it('never passes without a capture, and rejects unreadable captures and bad bounds', async () => {
    expect(buildReport(scope, 1, [], [], []).ok).toBe(false);
    await expect(runVerify(fakeIo(new Uint8Array([1, 2, 3]), healthy, () => 'weft0'), opts)).rejects.toThrow(/cannot read the capture of eth0/);
    await expect(runVerify(fakeIo(pcap([]), healthy, () => 'weft0'), { ...opts, seconds: 0 })).rejects.toThrow(/--seconds/);
    await expect(runVerify(fakeIo(pcap([]), healthy, () => 'weft0'), { ...opts, underlays: [] })).rejects.toThrow(/no underlay/);
  });
});

describe('verifyOptionsFrom', () => {
  it('takes remote CIDRs and WireGuard ports from the peers and underlay addresses from the endpoints', () => {
    const status = {
      node: { name: 'n1', backend: 'userspace', publicKey: 'k', meshIP: '10.244.1.1', podCIDRs: ['10.244.1.0/24'], listenPort: 51820, mtu: 1420, ifname: 'weft0', endpoints: ['198.18.0.1:51820'] },
      ready: true, mesh: { members: {} }, datapath: { reconciles: 0, errors: 0, writes: 0, lastDurationMs: 0 }, now: 0,
      peers: [{ name: 'n2', publicKey: 'p', endpoint: '198.18.0.2:51999', allowedIPs: ['10.244.2.0/24', '10.244.2.1/32'], lastHandshake: 0, rxBytes: 0, txBytes: 0, state: 'alive', link: 'handshaking' }],
    } as unknown as AgentStatus;
    const v = verifyOptionsFrom(status, { seconds: 3, underlays: [], clusterCIDRs: ['10.244.0.0/16'], meshPort: 7946 });
    expect(v).toMatchObject({ ifname: 'weft0', remoteCIDRs: ['10.244.2.0/24', '10.244.2.1/32'], localCIDRs: ['10.244.1.0/24'], wgPorts: [51820, 51999], endpointIPs: ['198.18.0.1'] });
  });
});

describe('podAddressFrames', () => {
  it('finds pod addresses in IPv4 and IPv6 headers', async () => {
    const { podAddressFrames } = await import('../../src/observe/verify.ts');
    const frames = [
      { ethertype: 0x0800, src: '198.18.0.1', dst: '198.18.0.2', proto: 17, sport: 51820, dport: 51820 },
      { ethertype: 0x0800, src: '10.244.1.2', dst: '10.244.2.2', proto: 6, sport: 40000, dport: 80 },
      { ethertype: 0x86dd, src: 'fd00:10:0:2:0:0:0:5', dst: '2001:db8:0:0:0:0:0:1', proto: 58 },
      { ethertype: 0x0806 },
    ];
    const r = podAddressFrames(frames, ['10.244.0.0/16', 'fd00:10::/56']);
    expect(r.count).toBe(2);
    expect(r.samples).toEqual(['proto 6 10.244.1.2:40000 -> 10.244.2.2:80', 'proto 58 fd00:10:0:2:0:0:0:5 -> 2001:db8:0:0:0:0:0:1']);
  });
});
