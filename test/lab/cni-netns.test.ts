/**
 * Real ADD/CHECK/DEL into real network namespaces: the agent-side handler with the iproute2
 * NetnsOps, run for a simulated node namespace (`wcni-lab-node`), with pods in `wcni-lab-p*`.
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
const NODE = 'wcni-lab-node';
const PODS = ['wcni-lab-p1', 'wcni-lab-p2', 'wcni-lab-p3'];
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const nsPath = (n: string) => `/var/run/netns/${n}`;

describe.skipIf(!isRoot || !hasIp)('CNI handler in real namespaces (needs root, iproute2, nsenter)', () => {
  let dir: string;
  let ipam: PodIpam;
  let handler: CniHandler;
  let published: unknown[] = [];

  beforeAll(async () => {
    for (const n of [NODE, ...PODS]) {
      try { sh('ip', ['netns', 'del', n]); } catch { /* not there */ }
      sh('ip', ['netns', 'add', n]);
    }
    dir = await mkdtemp(join(tmpdir(), 'wcni-lab-'));
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
    for (const n of [...PODS, NODE]) {
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

  it('ADD wires the pod: address, default route via the bridge gateway, reachable gateway and neighbour pod', async () => {
    const r1 = await handler.add(req(PODS[0]!, 'ADD'));
    expect(r1.ips).toEqual([{ address: '10.244.7.2/24', gateway: '10.244.7.1', interface: 1 }]);
    expect(r1.interfaces[1]).toMatchObject({ name: 'eth0', sandbox: nsPath(PODS[0]!) });
    expect(r1.dns).toEqual({ nameservers: ['10.244.7.1'], search: ['lab.pod.weft.local', 'pod.weft.local'] });
    const addr = JSON.parse(sh('ip', ['-n', PODS[0]!, '-j', 'addr', 'show', 'dev', 'eth0']));
    expect(addr[0].addr_info.map((a: { local: string }) => a.local)).toContain('10.244.7.2');
    expect(addr[0].address).toBe(r1.interfaces[1]!.mac);
    const routes = JSON.parse(sh('ip', ['-n', PODS[0]!, '-j', 'route', 'show', 'default']));
    expect(routes[0]).toMatchObject({ gateway: '10.244.7.1', dev: 'eth0' });
    const br = JSON.parse(sh('ip', ['-n', NODE, '-j', 'addr', 'show', 'dev', 'weftbr0']));
    expect(br[0].addr_info.map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)).toContain('10.244.7.1/24');
    const host = JSON.parse(sh('ip', ['-n', NODE, '-j', 'link', 'show', 'dev', hostVethName(`cid-${PODS[0]}`, 'eth0')]));
    expect(host[0].master).toBe('weftbr0');
    sh('ip', ['netns', 'exec', PODS[0]!, 'ping', '-c', '1', '-W', '2', '10.244.7.1']);

    const r2 = await handler.add(req(PODS[1]!, 'ADD'));
    expect(r2.ips[0]!.address).toBe('10.244.7.3/24');
    sh('ip', ['netns', 'exec', PODS[0]!, 'ping', '-c', '1', '-W', '2', '10.244.7.3']);
    expect(published).toEqual([
      { name: PODS[0], namespace: 'lab', ips: ['10.244.7.2'] },
      { name: PODS[1], namespace: 'lab', ips: ['10.244.7.3'] },
    ]);
  });

  it('CHECK passes on a healthy pod and reports a missing route', async () => {
    await handler.check(req(PODS[0]!, 'CHECK'));
    sh('ip', ['-n', PODS[0]!, 'route', 'del', 'default']);
    await expect(handler.check(req(PODS[0]!, 'CHECK'))).rejects.toMatchObject({ code: 999, details: expect.stringMatching(/default route via 10.244.7.1 dev eth0 missing/) });
    await expect(handler.check(req(PODS[2]!, 'CHECK'))).rejects.toMatchObject({ code: 3 });
  });

  it('repeated ADD rebuilds the link and keeps the address', async () => {
    const again = await handler.add(req(PODS[0]!, 'ADD'));
    expect(again.ips[0]!.address).toBe('10.244.7.2/24');
    await handler.check(req(PODS[0]!, 'CHECK'));
  });

  it('DEL removes the veth and releases the address, and is idempotent', async () => {
    await handler.del(req(PODS[0]!, 'DEL'));
    expect(() => sh('ip', ['-n', NODE, 'link', 'show', 'dev', hostVethName(`cid-${PODS[0]}`, 'eth0')])).toThrow();
    expect(() => sh('ip', ['-n', PODS[0]!, 'link', 'show', 'dev', 'eth0'])).toThrow();
    expect(ipam.get({ containerId: `cid-${PODS[0]}`, ifname: 'eth0' })).toEqual([]);
    await handler.del(req(PODS[0]!, 'DEL'));
  });

  it('DEL succeeds after the pod namespace is gone', async () => {
    await handler.add(req(PODS[2]!, 'ADD'));
    sh('ip', ['netns', 'del', PODS[2]!]);
    await handler.del(req(PODS[2]!, 'DEL'));
    await handler.del(req(PODS[2]!, 'DEL', { netns: '' }));
    expect(ipam.get({ containerId: `cid-${PODS[2]}`, ifname: 'eth0' })).toEqual([]);
    sh('ip', ['netns', 'add', PODS[2]!]);
  });

  it('ensureBridge replaces a stale gateway of the same family and keeps other families', async () => {
    const ops = createIprouteNetnsOps({ hostNetns: nsPath(NODE) });
    await ops.ensureBridge('weftbr0', ['10.244.7.1/24', 'fd00:7::1/120'], 1420);
    await ops.ensureBridge('weftbr0', ['10.244.9.1/24'], 1420);
    const addrs = () =>
      JSON.parse(sh('ip', ['-n', NODE, '-j', 'addr', 'show', 'dev', 'weftbr0']))[0].addr_info
        .map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)
        .filter((a: string) => !a.startsWith('fe80:'))
        .sort();
    expect(addrs()).toEqual(['10.244.9.1/24', 'fd00:7::1/120']);
    await ops.ensureBridge('weftbr0', ['10.244.7.1/24'], 1420);
    expect(addrs()).toEqual(['10.244.7.1/24', 'fd00:7::1/120']);
  });

  it('a failed ADD (namespace missing) leaves no address and no link behind', async () => {
    await expect(handler.add(req('wcni-lab-missing', 'ADD'))).rejects.toMatchObject({ code: 999 });
    expect(ipam.get({ containerId: 'cid-wcni-lab-missing', ifname: 'eth0' })).toEqual([]);
    expect(() => sh('ip', ['-n', NODE, 'link', 'show', 'dev', hostVethName('cid-wcni-lab-missing', 'eth0')])).toThrow();
  });
});
