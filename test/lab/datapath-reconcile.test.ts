/**
 * The real datapath in a network namespace: LinuxRtNetlink against the kernel, and the reconciler
 * driving wireguard-go (userspace backend) — first apply, zero-write no-op, drift repair (route and
 * peer removed by hand, interface deleted), foreign routes left alone, adoption by a new process,
 * and uninstall. Needs root, wireguard-go, ip, unshare.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredState } from '../../src/model.ts';
import { WEFT_FALLBACK_METRIC, WEFT_RT_PROTO, type RtRoute } from '../../src/datapath/rtnetlink.ts';
import { keyPair } from '../plan/helpers.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatapathDriver, deleteNamespaces, nsRun, sh } from './datapath-node.ts';
import { labPrerequisites } from './prerequisites.ts';

const { skip, why } = labPrerequisites({ tools: ['ip', 'wg', 'unshare', 'nsenter', 'tcpdump', 'ping', 'wireguard-go'], tun: true });
const NS = `wdp-r${process.pid % 10000}`;

describe.skipIf(skip)(`datapath on a real kernel and wireguard-go${why}`, () => {
  let d: DatapathDriver;
  const self = keyPair(1);
  const peers = Array.from({ length: 20 }, (_, i) => ({
    name: `node-${i + 1}`,
    publicKey: keyPair(10 + i).publicKey,
    endpoint: `192.0.2.${i + 2}:51820`,
    allowedIPs: [`10.244.${i + 1}.0/24`, `10.244.${i + 1}.1/32`],
    persistentKeepalive: i === 0 ? 25 : 0,
  }));
  const want: DesiredState = {
    ifname: 'weft0',
    listenPort: 51820,
    mtu: 1420,
    addresses: ['10.244.0.1/32'],
    peers,
    routes: [{ dst: '10.244.0.0/16', dev: 'weft0' }, { dst: 'fd00:10::/56', dev: 'weft0' }],
  };
  // iproute2 prints weft's protocol as "weft" where deploy/install-system-deps.sh named it, else as 147.
  const ipRoutes = () => nsRun(NS, ['ip', '-4', 'route', 'show', 'table', 'main']) + nsRun(NS, ['ip', '-6', 'route', 'show', 'table', 'main']);

  beforeAll(async () => {
    deleteNamespaces([NS]);
    sh(['ip', 'netns', 'add', NS]);
    sh(['ip', '-n', NS, 'link', 'add', 'eth0', 'type', 'bridge']);
    sh(['ip', '-n', NS, 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0']);
    sh(['ip', '-n', NS, 'link', 'set', 'eth0', 'up']);
    sh(['ip', '-n', NS, 'route', 'add', '10.99.0.0/16', 'dev', 'eth0', 'proto', 'static']);
    d = new DatapathDriver(NS);
    await d.call({ init: { privateKey: self.privateKey, stateDir: d.stateDir } });
  });

  afterAll(async () => {
    await d?.close();
    deleteNamespaces([NS]);
  });

  it('rtnetlink: add is EEXIST on a duplicate, deletes never touch another protocol, missing deletes succeed', async () => {
    await d.call({ rt: ['addRoute', { dst: '10.77.0.0/16', dev: 'eth0' }] });
    await expect(d.call({ rt: ['addRoute', { dst: '10.77.0.0/16', dev: 'eth0' }] })).rejects.toThrow(/EEXIST/);
    await d.call({ rt: ['addRoute', { dst: '10.77.0.0/16', blackhole: true, metric: WEFT_FALLBACK_METRIC }] });
    const routes = await d.call<RtRoute[]>({ rt: ['listRoutes', 4] });
    expect(routes.filter((r) => r.dst === '10.77.0.0/16').map((r) => [r.type, r.protocol, r.metric]).sort()).toEqual([
      ['blackhole', WEFT_RT_PROTO, WEFT_FALLBACK_METRIC],
      ['unicast', WEFT_RT_PROTO, 0],
    ]);
    expect(nsRun(NS, ['ip', 'route', 'show', '10.77.0.0/16'])).toMatch(/proto (147|weft)\b/);
    // The static route to 10.99/16 is not weft's: a weft delete of it is a no-op.
    await d.call({ rt: ['delRoute', { dst: '10.99.0.0/16', dev: 'eth0' }] });
    expect(nsRun(NS, ['ip', 'route', 'show', '10.99.0.0/16'])).toContain('proto static');
    await d.call({ rt: ['delRoute', { dst: '10.77.0.0/16', dev: 'eth0' }] });
    await d.call({ rt: ['delRoute', { dst: '10.77.0.0/16', blackhole: true, metric: WEFT_FALLBACK_METRIC }] });
    await d.call({ rt: ['delRoute', { dst: '10.77.0.0/16', dev: 'eth0' }] });
    expect(nsRun(NS, ['ip', 'route', 'show', '10.77.0.0/16'])).toBe('');
  });

  it('first apply builds the interface, peers, address, MTU and fail-closed routes', async () => {
    const r = await d.call<{ ok: boolean; writes: number; errors: string[] }>({ apply: want });
    expect(r.errors).toEqual([]);
    expect(r.ok).toBe(true);
    const link = nsRun(NS, ['ip', '-o', 'link', 'show', 'weft0']);
    expect(link).toContain('mtu 1420');
    expect(link).toMatch(/[<,]UP[,>]/);
    expect(nsRun(NS, ['ip', '-o', 'addr', 'show', 'dev', 'weft0'])).toContain('10.244.0.1/32');
    const routes = ipRoutes();
    expect(routes).toMatch(/^10\.244\.0\.0\/16 dev weft0 proto (147|weft) scope link/m);
    expect(routes).toMatch(/^blackhole 10\.244\.0\.0\/16 proto (147|weft) metric 2147483647/m);
    expect(routes).toMatch(/^fd00:10::\/56 dev weft0 proto (147|weft)/m);
    const dev = await d.call<{ peers: { publicKey: string; allowedIPs: string[]; persistentKeepalive: number }[]; publicKey: string }>({ wg: ['getDevice', 'weft0'] });
    expect(dev.publicKey).toBe(self.publicKey);
    expect(dev.peers).toHaveLength(20);
    expect(dev.peers.find((p) => p.publicKey === peers[0]!.publicKey)!.persistentKeepalive).toBe(25);
  });

  it('a no-op apply writes nothing', async () => {
    const r = await d.call<{ ok: boolean; writes: number }>({ apply: want });
    expect(r).toMatchObject({ ok: true, writes: 0 });
  });

  it('resync repairs a route deleted and a peer removed by hand, and leaves the static route alone', async () => {
    nsRun(NS, ['ip', 'route', 'del', '10.244.0.0/16', 'dev', 'weft0']);
    // `wg` talks to the UAPI socket; run it inside the driver's mount namespace via the driver's pid.
    const { pid } = JSON.parse(readFileSync(join(d.stateDir, 'weft0.pid'), 'utf8')) as { pid: number };
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('wireguard-go');
    sh(['nsenter', `--net=/run/netns/${NS}`, `--mount=/proc/${pid}/ns/mnt`, 'wg', 'set', 'weft0', 'peer', peers[3]!.publicKey, 'remove']);
    const r = await d.call<{ ok: boolean; writes: number }>({ resync: true });
    expect(r).toMatchObject({ ok: true, writes: 2 });
    expect(ipRoutes()).toMatch(/^10\.244\.0\.0\/16 dev weft0 proto (147|weft)/m);
    expect(ipRoutes()).toContain('10.99.0.0/16 dev eth0 proto static');
    const dev = await d.call<{ peers: unknown[] }>({ wg: ['getDevice', 'weft0'] });
    expect(dev.peers).toHaveLength(20);
  });

  it('a one-peer change writes exactly one peer', async () => {
    const changed = { ...want, peers: want.peers.map((p, i) => (i === 5 ? { ...p, endpoint: '192.0.2.200:51820' } : p)) };
    expect(await d.call({ apply: changed })).toMatchObject({ ok: true, writes: 1 });
    expect(await d.call({ apply: want })).toMatchObject({ ok: true, writes: 1 });
  });

  it('the blackhole fallback holds the cluster CIDR when the interface disappears; resync recreates it', async () => {
    nsRun(NS, ['ip', 'link', 'del', 'weft0']);
    await new Promise((r) => setTimeout(r, 500));
    // Only the fallback is left: a lookup hits the blackhole (iproute2 reports EINVAL for it), never eth0.
    expect(nsRun(NS, ['ip', 'route', 'show', '10.244.0.0/16']).trim()).toMatch(/^blackhole 10\.244\.0\.0\/16 proto (147|weft) metric 2147483647$/);
    expect(() => nsRun(NS, ['ip', 'route', 'get', '10.244.7.7'])).toThrow(/Invalid argument/);
    const r = await d.call<{ ok: boolean; errors: string[] }>({ resync: true });
    expect(r.errors).toEqual([]);
    expect(nsRun(NS, ['ip', 'route', 'get', '10.244.7.7'])).toContain('dev weft0');
    expect((await d.call<{ peers: unknown[] }>({ wg: ['getDevice', 'weft0'] })).peers).toHaveLength(20);
  });

  it('a fresh reconciler adopts the running interface without writing (agent restart)', async () => {
    await d.call({ init: { privateKey: self.privateKey, stateDir: d.stateDir } });
    expect(await d.call({ apply: want })).toMatchObject({ ok: true, writes: 0 });
  });

  it('uninstall removes weft routes and the interface, nothing else', async () => {
    await d.call({ uninstall: 'weft0' });
    expect(nsRun(NS, ['ip', '-o', 'link', 'show'])).not.toContain('weft0');
    expect(ipRoutes()).not.toMatch(/proto (147|weft)\b/);
    expect(ipRoutes()).toContain('10.99.0.0/16 dev eth0 proto static');
  });
});
