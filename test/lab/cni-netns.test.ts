/**
 * Real ADD/CHECK/DEL into real network namespaces: the agent-side handler with the iproute2
 * NetnsOps, run for a simulated node namespace (`wrt-cni-node`, forwarding on as the agent sets it),
 * with pods in `wrt-cni-p*` on routed veths: no bridge; the gateway lives on `weftgw0`.
 * A second node (`wrt-cni-node6`) runs a dual-stack block.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { createCniHandler, type CniHandler } from '../../src/cni/handler.ts';
import { createIprouteNetnsOps } from '../../src/cni/netns.ts';
import { hostVethName, type ForwardedRequest } from '../../src/cni/spec.ts';
import { PodIpam } from '../../src/ipam/pods.ts';

const isRoot = process.getuid?.() === 0;
const hasIp = (() => {
  try {
    execFileSync('ip', ['-V']);
    execFileSync('nsenter', ['--version']);
    return true;
  } catch {
    return false;
  }
})();
const NODE = 'wrt-cni-node';
const NODE6 = 'wrt-cni-node6';
const PODS = ['wrt-cni-p1', 'wrt-cni-p2', 'wrt-cni-p3'];
const POD6 = 'wrt-cni-p6';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const nsPath = (n: string) => `/var/run/netns/${n}`;

describe.skipIf(!isRoot || !hasIp)('CNI handler in real namespaces (needs root, iproute2, nsenter)', () => {
  let dir: string;
  let ipam: PodIpam;
  let handler: CniHandler;
  let published: unknown[] = [];

  beforeAll(async () => {
    for (const n of [NODE, NODE6, ...PODS, POD6]) {
      try { sh('ip', ['netns', 'del', n]); } catch { /* not there */ }
      sh('ip', ['netns', 'add', n]);
    }
    for (const n of [NODE, NODE6]) sh('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    dir = await mkdtemp(join(tmpdir(), 'wrt-cni-'));
    ipam = await PodIpam.open({ stateDir: dir, blocks: ['10.244.7.0/24'], logger: pino({ level: 'silent' }) });
    handler = createCniHandler({
      ipam,
      netns: createIprouteNetnsOps({ hostNetns: nsPath(NODE) }),
      logger: pino({ level: 'silent' }),
      stateDir: dir,
      onPodsChanged: (p) => (published = p),
    });
  });

  afterAll(async () => {
    for (const n of [...PODS, POD6, NODE, NODE6]) {
      try { sh('ip', ['netns', 'del', n]); } catch { /* already gone */ }
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const req = (pod: string, command: ForwardedRequest['command'], extra: Partial<ForwardedRequest> = {}): ForwardedRequest => ({
    command,
    containerId: `cid-${pod}`,
    netns: nsPath(pod),
    ifname: 'eth0',
    args: { K8S_POD_NAME: pod, K8S_POD_NAMESPACE: 'lab' },
    config: { cniVersion: '1.1.0', name: 'weft', type: 'weft-cni' },
    ...extra,
  });

  const hostIf = (pod: string) => hostVethName(`cid-${pod}`, 'eth0');
  const json = (ns: string, args: string[]) => JSON.parse(sh('ip', ['-n', ns, '-j', ...args]) || '[]');
  const ping = (ns: string, to: string) => sh('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', to]);
  const addrs = (ns: string, dev: string) =>
    json(ns, ['addr', 'show', 'dev', dev])[0].addr_info
      .map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)
      .filter((a: string) => !a.startsWith('fe80:'))
      .sort();

  it('ADD wires a routed veth: /32 address, gateway route, default route, host route and neighbours; no bridge', async () => {
    const r1 = await handler.add(req(PODS[0]!, 'ADD'));
    expect(r1.ips).toEqual([{ address: '10.244.7.2/32', gateway: '10.244.7.1', interface: 1 }]);
    expect(r1.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.7.1' }]);
    expect(r1.interfaces[1]).toMatchObject({ name: 'eth0', sandbox: nsPath(PODS[0]!) });
    expect(r1.dns).toEqual({ nameservers: ['10.244.7.1'], search: ['lab.pod.weft.local', 'pod.weft.local'] });
    // Pod side.
    expect(addrs(PODS[0]!, 'eth0')).toEqual(['10.244.7.2/32']);
    expect(json(PODS[0]!, ['link', 'show', 'dev', 'eth0'])[0].address).toBe(r1.interfaces[1]!.mac);
    expect(json(PODS[0]!, ['route', 'show', '10.244.7.1/32'])[0]).toMatchObject({ dev: 'eth0', scope: 'link' });
    expect(json(PODS[0]!, ['route', 'show', 'default'])[0]).toMatchObject({ gateway: '10.244.7.1', dev: 'eth0' });
    expect(json(PODS[0]!, ['neigh', 'show', '10.244.7.1', 'dev', 'eth0'])[0]).toMatchObject({ lladdr: r1.interfaces[0]!.mac, state: ['PERMANENT'] });
    // Node side: the gateway on weftgw0 (dummy, or ifb on kernels without dummy), no bridge anywhere.
    const gw = json(NODE, ['-d', 'link', 'show', 'dev', 'weftgw0'])[0];
    expect(['dummy', 'ifb']).toContain(gw.linkinfo.info_kind);
    expect(gw.mtu).toBe(1420);
    expect(addrs(NODE, 'weftgw0')).toEqual(['10.244.7.1/24']);
    expect(json(NODE, ['-d', 'link', 'show', 'type', 'bridge'])).toEqual([]);
    const host = json(NODE, ['link', 'show', 'dev', hostIf(PODS[0]!)])[0];
    expect(host.master).toBeUndefined();
    expect(host.flags).toContain('UP');
    expect(json(NODE, ['route', 'show', '10.244.7.2/32'])[0]).toMatchObject({ dev: hostIf(PODS[0]!), scope: 'link' });
    expect(json(NODE, ['neigh', 'show', '10.244.7.2', 'dev', hostIf(PODS[0]!)])[0]).toMatchObject({ lladdr: r1.interfaces[1]!.mac, state: ['PERMANENT'] });
    ping(PODS[0]!, '10.244.7.1'); // pod to gateway (DNS, mesh IP)
    ping(NODE, '10.244.7.2'); // host to local pod

    // Same-node pod to pod: routed by the node, not bridged.
    const r2 = await handler.add(req(PODS[1]!, 'ADD'));
    expect(r2.ips[0]!.address).toBe('10.244.7.3/32');
    ping(PODS[0]!, '10.244.7.3');
    ping(PODS[1]!, '10.244.7.2');
    expect(published).toEqual([
      { name: PODS[0], namespace: 'lab', ips: ['10.244.7.2'] },
      { name: PODS[1], namespace: 'lab', ips: ['10.244.7.3'] },
    ]);
  });

  it('fail closed: an address of the block without a pod ends on weftgw0 and is dropped', async () => {
    expect(json(NODE, ['route', 'get', '10.244.7.200'])[0]).toMatchObject({ dev: 'weftgw0' });
    expect(() => ping(PODS[0]!, '10.244.7.200')).toThrow();
  });

  it('CHECK passes on a healthy pod and reports a missing pod route, gateway route or host route', async () => {
    await handler.check(req(PODS[0]!, 'CHECK'));
    sh('ip', ['-n', PODS[0]!, 'route', 'del', 'default']);
    await expect(handler.check(req(PODS[0]!, 'CHECK'))).rejects.toMatchObject({ code: 999, details: expect.stringMatching(/default route via 10.244.7.1 dev eth0 missing/) });
    sh('ip', ['-n', PODS[0]!, 'route', 'del', '10.244.7.1/32']);
    await expect(handler.check(req(PODS[0]!, 'CHECK'))).rejects.toMatchObject({ details: expect.stringMatching(/route to gateway 10.244.7.1 dev eth0 missing/) });
    await handler.check(req(PODS[1]!, 'CHECK'));
    sh('ip', ['-n', NODE, 'route', 'del', '10.244.7.3/32']);
    await expect(handler.check(req(PODS[1]!, 'CHECK'))).rejects.toMatchObject({ code: 999, details: `host route 10.244.7.3/32 dev ${hostIf(PODS[1]!)} missing` });
    await expect(handler.check(req(PODS[2]!, 'CHECK'))).rejects.toMatchObject({ code: 3 });
  });

  it('repeated ADD rebuilds the link and keeps the address', async () => {
    const again = await handler.add(req(PODS[0]!, 'ADD'));
    expect(again.ips[0]!.address).toBe('10.244.7.2/32');
    await handler.check(req(PODS[0]!, 'CHECK'));
    const again2 = await handler.add(req(PODS[1]!, 'ADD'));
    expect(again2.ips[0]!.address).toBe('10.244.7.3/32');
    await handler.check(req(PODS[1]!, 'CHECK'));
    ping(PODS[0]!, '10.244.7.3');
  });

  it('DEL removes the veth, its host route and neighbour, releases the address, and is idempotent', async () => {
    await handler.del(req(PODS[0]!, 'DEL'));
    expect(() => sh('ip', ['-n', NODE, 'link', 'show', 'dev', hostIf(PODS[0]!)])).toThrow();
    expect(() => sh('ip', ['-n', PODS[0]!, 'link', 'show', 'dev', 'eth0'])).toThrow();
    expect(json(NODE, ['route', 'show', '10.244.7.2/32'])).toEqual([]);
    expect(json(NODE, ['neigh', 'show', '10.244.7.2'])).toEqual([]);
    expect(ipam.get({ containerId: `cid-${PODS[0]}`, ifname: 'eth0' })).toEqual([]);
    await handler.del(req(PODS[0]!, 'DEL'));
    // What is left on the node: the other pod's veth, and weftgw0.
    expect(json(NODE, ['link', 'show']).map((l: { ifname: string }) => l.ifname).sort()).toEqual([hostIf(PODS[1]!), 'lo', 'weftgw0'].sort());
    expect(json(NODE, ['route', 'show']).map((r: { dst: string }) => r.dst).sort()).toEqual(['10.244.7.0/24', '10.244.7.3']);
  });

  it('DEL succeeds after the pod namespace is gone', async () => {
    await handler.add(req(PODS[2]!, 'ADD'));
    sh('ip', ['netns', 'del', PODS[2]!]);
    await handler.del(req(PODS[2]!, 'DEL'));
    await handler.del(req(PODS[2]!, 'DEL', { netns: '' }));
    expect(ipam.get({ containerId: `cid-${PODS[2]}`, ifname: 'eth0' })).toEqual([]);
    expect(json(NODE, ['route', 'show', '10.244.7.4/32'])).toEqual([]);
    sh('ip', ['netns', 'add', PODS[2]!]);
  });

  it('a failed ADD (namespace missing) leaves no address, link, route or neighbour behind', async () => {
    await expect(handler.add(req('wrt-cni-missing', 'ADD'))).rejects.toMatchObject({ code: 999 });
    expect(ipam.get({ containerId: 'cid-wrt-cni-missing', ifname: 'eth0' })).toEqual([]);
    expect(() => sh('ip', ['-n', NODE, 'link', 'show', 'dev', hostVethName('cid-wrt-cni-missing', 'eth0')])).toThrow();
    expect(json(NODE, ['route', 'show']).map((r: { dst: string }) => r.dst).sort()).toEqual(['10.244.7.0/24', '10.244.7.3']);
  });

  it('a failed pod-side setup removes the host end with its routes and neighbours', async () => {
    // The pod namespace already has an eth0: the veth's pod end cannot take the name.
    sh('ip', ['-n', PODS[2]!, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other']);
    await expect(handler.add(req(PODS[2]!, 'ADD'))).rejects.toMatchObject({ code: 999 });
    expect(() => sh('ip', ['-n', NODE, 'link', 'show', 'dev', hostIf(PODS[2]!)])).toThrow();
    expect(json(NODE, ['route', 'show']).map((r: { dst: string }) => r.dst).sort()).toEqual(['10.244.7.0/24', '10.244.7.3']);
    expect(json(NODE, ['neigh', 'show', 'nud', 'permanent']).map((n: { dst: string }) => n.dst)).toEqual(['10.244.7.3']);
    sh('ip', ['-n', PODS[2]!, 'link', 'del', 'eth0']);
  });

  it('ensureGateway replaces a stale gateway of the same family and keeps other families', async () => {
    const ops = createIprouteNetnsOps({ hostNetns: nsPath(NODE) });
    await ops.ensureGateway('weftgw0', ['10.244.7.1/24', 'fd00:7::1/120'], 1420);
    await ops.ensureGateway('weftgw0', ['10.244.9.1/24'], 1420);
    expect(addrs(NODE, 'weftgw0')).toEqual(['10.244.9.1/24', 'fd00:7::1/120']);
    await ops.ensureGateway('weftgw0', ['10.244.7.1/24'], 1420);
    expect(addrs(NODE, 'weftgw0')).toEqual(['10.244.7.1/24', 'fd00:7::1/120']);
    // Deleted behind our back: comes back with the same addresses, and the pods' host routes
    // survived the gap (they name no source address that could vanish with the device).
    sh('ip', ['-n', NODE, 'link', 'del', 'weftgw0']);
    expect(json(NODE, ['route', 'show', '10.244.7.3/32'])).toHaveLength(1);
    await handler.ensureGateway();
    expect(addrs(NODE, 'weftgw0')).toEqual(['10.244.7.1/24']);
    ping(PODS[1]!, '10.244.7.1');
    ping(NODE, '10.244.7.3');
  });

  it('removeIdleBridge keeps a legacy weftbr0 with ports and removes it once it has none', async () => {
    const ops = createIprouteNetnsOps({ hostNetns: nsPath(NODE) });
    sh('ip', ['-n', NODE, 'link', 'add', 'weftbr0', 'type', 'bridge']);
    sh('ip', ['-n', NODE, 'link', 'add', 'wrtold0', 'master', 'weftbr0', 'type', 'veth', 'peer', 'name', 'wrtold1']);
    expect(await ops.removeIdleBridge('weftbr0')).toBe(false);
    sh('ip', ['-n', NODE, 'link', 'del', 'wrtold0']);
    expect(await ops.removeIdleBridge('weftbr0')).toBe(true);
    expect(() => sh('ip', ['-n', NODE, 'link', 'show', 'dev', 'weftbr0'])).toThrow();
    expect(await ops.removeIdleBridge('weftbr0')).toBe(true);
  });

  it('dual stack: /32 and /128 with their gateways; same-node and host-to-pod over IPv6', async () => {
    const ipam6 = await PodIpam.open({ stateDir: join(dir, 'n6'), blocks: ['10.244.8.0/24', 'fd00:8::/120'], logger: pino({ level: 'silent' }) });
    const h6 = createCniHandler({ ipam: ipam6, netns: createIprouteNetnsOps({ hostNetns: nsPath(NODE6) }), logger: pino({ level: 'silent' }), stateDir: join(dir, 'n6') });
    const r = await h6.add({ ...req(POD6, 'ADD') });
    expect(r.ips).toEqual([
      { address: '10.244.8.2/32', gateway: '10.244.8.1', interface: 1 },
      { address: 'fd00:8::2/128', gateway: 'fd00:8::1', interface: 1 },
    ]);
    expect(r.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.8.1' }, { dst: '::/0', gw: 'fd00:8::1' }]);
    expect(addrs(NODE6, 'weftgw0')).toEqual(['10.244.8.1/24', 'fd00:8::1/120']);
    expect(addrs(POD6, 'eth0')).toEqual(['10.244.8.2/32', 'fd00:8::2/128']);
    ping(POD6, 'fd00:8::1');
    ping(NODE6, 'fd00:8::2');
    ping(NODE6, '10.244.8.2');
    await h6.check(req(POD6, 'CHECK'));
    sh('ip', ['-n', NODE6, '-6', 'route', 'del', 'fd00:8::2/128']);
    await expect(h6.check(req(POD6, 'CHECK'))).rejects.toMatchObject({ details: expect.stringMatching(/host route fd00:8::2\/128 dev wv[0-9a-f]{11} missing/) });
    sh('ip', ['-n', POD6, '-6', 'route', 'del', '::/0']);
    await expect(h6.check(req(POD6, 'CHECK'))).rejects.toMatchObject({ details: expect.stringMatching(/default route via fd00:8::1 dev eth0 missing/) });
    await h6.del(req(POD6, 'DEL'));
    expect(json(NODE6, ['-6', 'route', 'show', 'fd00:8::2/128'])).toEqual([]);
    expect(json(NODE6, ['neigh', 'show', 'nud', 'permanent'])).toEqual([]);
  });
});
