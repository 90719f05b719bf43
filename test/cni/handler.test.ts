import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { ApiError } from '../../src/api/server.ts';
import { createCniHandler, parseForwarded, type CniHandler } from '../../src/cni/handler.ts';
import { enqueueDel } from '../../src/cni/del-queue.ts';
import { hostVethName, type ForwardedRequest } from '../../src/cni/spec.ts';
import { PodIpam } from '../../src/ipam/pods.ts';
import type { PodRecord } from '../../src/model.ts';
import { FakeNetns } from './fake-netns.ts';

const log = pino({ level: 'silent' });
let dir: string;
let ipam: PodIpam;
let net: FakeNetns;
let handler: CniHandler;
let published: PodRecord[][];

const req = (id: string, command: ForwardedRequest['command'] = 'ADD', extra: Partial<ForwardedRequest> = {}): ForwardedRequest => ({
  command,
  containerId: id,
  netns: `/var/run/netns/${id}`,
  ifname: 'eth0',
  args: { K8S_POD_NAME: `pod-${id}`, K8S_POD_NAMESPACE: 'default' },
  config: { cniVersion: '1.1.0', name: 'weft', type: 'weft-cni' },
  ...extra,
});

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wcni-handler-'));
  ipam = await PodIpam.open({ stateDir: dir, blocks: ['10.244.5.0/24'], logger: log });
  net = new FakeNetns();
  for (const id of ['a', 'b', 'c']) net.namespaces.add(`/var/run/netns/${id}`);
  published = [];
  let n = 0;
  handler = createCniHandler({ ipam, netns: net, logger: log, stateDir: dir, mtu: 1400, dnsZone: 'weft.test.', onPodsChanged: (p) => published.push(p), randomBytes: (k) => new Uint8Array(k).fill(++n) });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('CNI handler', () => {
  it('ADD returns a spec 1.1.0 result and publishes the pod', async () => {
    const r = await handler.add(req('a'));
    expect(r).toEqual({
      cniVersion: '1.1.0',
      interfaces: [
        { name: hostVethName('a', 'eth0'), mac: '02:01:01:01:01:01', mtu: 1400 },
        { name: 'eth0', mac: '02:02:02:02:02:02', mtu: 1400, sandbox: '/var/run/netns/a' },
      ],
      ips: [{ address: '10.244.5.2/32', gateway: '10.244.5.1', interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: '10.244.5.1' }],
      dns: { nameservers: ['10.244.5.1'], search: ['default.pod.weft.test', 'pod.weft.test'] },
    });
    expect(net.gateways.get('weftgw0')).toEqual(new Set(['10.244.5.1/24']));
    expect(net.links.get(hostVethName('a', 'eth0'))).toMatchObject({ addresses: ['10.244.5.2/32'], gateways: ['10.244.5.1'], hostMac: '02:01:01:01:01:01', podMac: '02:02:02:02:02:02' });
    expect(published.at(-1)).toEqual([{ name: 'pod-a', namespace: 'default', ips: ['10.244.5.2'] }]);
  });

  it('ADD without pod args still works, with a generic search domain', async () => {
    const r = await handler.add(req('a', 'ADD', { args: {} }));
    expect(r.dns?.search).toEqual(['pod.weft.test']);
    expect(published.at(-1)).toEqual([]);
  });

  it('ensures the gateway device once, and re-ensures it when a link setup fails', async () => {
    await handler.add(req('a'));
    await handler.add(req('b'));
    expect(net.calls.filter((c) => c.startsWith('ensureGateway'))).toHaveLength(1);
    net.gateways.clear();
    await handler.add(req('c'));
    expect(net.calls.filter((c) => c.startsWith('ensureGateway'))).toHaveLength(2);
    expect(net.gateways.get('weftgw0')).toEqual(new Set(['10.244.5.1/24']));
  });

  it('dual stack: one /32 and one /128 with their own gateways; DNS prefers the IPv4 gateway', async () => {
    ipam.setBlocks(['10.244.5.0/24', 'fd00:5::/120']);
    const r = await handler.add(req('a'));
    expect(r.ips).toEqual([
      { address: '10.244.5.2/32', gateway: '10.244.5.1', interface: 1 },
      { address: 'fd00:5::2/128', gateway: 'fd00:5::1', interface: 1 },
    ]);
    expect(r.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.5.1' }, { dst: '::/0', gw: 'fd00:5::1' }]);
    expect(r.dns?.nameservers).toEqual(['10.244.5.1']);
    expect(net.gateways.get('weftgw0')).toEqual(new Set(['10.244.5.1/24', 'fd00:5::1/120']));
  });

  it('a failed ADD releases the fresh address and returns code 999 with details', async () => {
    net.failNextAdd = new Error('boom');
    net.gateways.set('weftgw0', new Set(['10.244.5.1/24']));
    await handler.add(req('a')).catch(() => {}); // first call also ensures; failNextAdd consumed, retry succeeds
    expect(ipam.get({ containerId: 'a', ifname: 'eth0' })).toHaveLength(1);
    await expect(handler.add(req('zzz'))).rejects.toMatchObject({ name: 'CniError', code: 999, details: expect.stringMatching(/does not exist/) });
    expect(ipam.get({ containerId: 'zzz', ifname: 'eth0' })).toEqual([]);
  });

  it('a stale host veth left by a crash is replaced', async () => {
    await handler.add(req('a'));
    const stale = { ...net.links.get(hostVethName('a', 'eth0'))!, hostIfname: hostVethName('b', 'eth0'), netns: '/var/run/netns/b', addresses: ['10.244.5.99/32'] };
    net.links.set(hostVethName('b', 'eth0'), stale);
    const r = await handler.add(req('b'));
    expect(r.ips[0]!.address).toBe('10.244.5.3/32');
    expect(net.links.get(hostVethName('b', 'eth0'))!.addresses).toEqual(['10.244.5.3/32']);
  });

  it('repeated ADD keeps the address and rebuilds the link', async () => {
    const r1 = await handler.add(req('a'));
    const r2 = await handler.add(req('a'));
    expect(r2.ips).toEqual(r1.ips);
    expect(net.calls).toContain(`delPod ${hostVethName('a', 'eth0')}`);
    expect(net.links.size).toBe(1);
  });

  it('ADD with no block is code 11 (try again later)', async () => {
    ipam.setBlocks([]);
    await expect(handler.add(req('a'))).rejects.toMatchObject({ code: 11 });
    await expect(handler.status()).rejects.toMatchObject({ code: 50 });
  });

  it('exhaustion is a clear error', async () => {
    ipam.setBlocks(['10.244.5.0/30']);
    net.namespaces.add('/var/run/netns/d');
    await handler.add(req('a'));
    await expect(handler.add(req('b'))).rejects.toMatchObject({ code: 999, message: expect.stringMatching(/no pod addresses left/) });
  });

  it('concurrent ADDs get distinct addresses', async () => {
    for (let i = 0; i < 50; i++) net.namespaces.add(`/var/run/netns/p${i}`);
    const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => handler.add(req(`p${i}`))));
    expect(new Set(rs.map((r) => r.ips[0]!.address)).size).toBe(50);
  });

  it('DEL is idempotent and succeeds for unknown containers; it republishes', async () => {
    await handler.add(req('a'));
    await handler.del(req('a', 'DEL'));
    expect(net.links.size).toBe(0);
    expect(ipam.list()).toEqual([]);
    expect(published.at(-1)).toEqual([]);
    await handler.del(req('a', 'DEL'));
    await handler.del(req('never', 'DEL', { netns: '' }));
  });

  it('DEL that cannot remove the link fails (so the runtime retries) and keeps the address', async () => {
    await handler.add(req('a'));
    net.failDel = new Error('EBUSY');
    await expect(handler.del(req('a', 'DEL'))).rejects.toMatchObject({ code: 999 });
    expect(ipam.list()).toHaveLength(1);
  });

  it('CHECK: ok, unknown container (3), mismatching prevResult', async () => {
    await handler.add(req('a'));
    await handler.check(req('a', 'CHECK'));
    await expect(handler.check(req('b', 'CHECK'))).rejects.toMatchObject({ code: 3 });
    await expect(handler.check(req('a', 'CHECK', { prevResult: { ips: [{ address: '10.9.9.9/24' }] } }))).rejects.toMatchObject({ code: 999, details: expect.stringMatching(/prevResult does not list 10.244.5.2\/32/) });
    await handler.check(req('a', 'CHECK', { prevResult: { ips: [{ address: '10.244.5.2/32' }] } }));
    net.hostRoutesGone.add(hostVethName('a', 'eth0'));
    await expect(handler.check(req('a', 'CHECK'))).rejects.toMatchObject({ code: 999, details: expect.stringMatching(/host route 10.244.5.2\/32 dev wv[0-9a-f]{11} missing/) });
    net.links.clear();
    await expect(handler.check(req('a', 'CHECK'))).rejects.toMatchObject({ details: expect.stringMatching(/missing/) });
  });

  it('GC releases attachments not listed as valid', async () => {
    await handler.add(req('a'));
    await handler.add(req('b'));
    const r = await handler.gc(req('', 'GC', { config: { cniVersion: '1.1.0', name: 'weft', 'cni.dev/valid-attachments': [{ containerID: 'b', ifname: 'eth0' }, 'junk'] } }));
    expect(r).toEqual({ released: 1 });
    expect(ipam.list().map((x) => x.containerId)).toEqual(['b']);
    expect([...net.links.keys()]).toEqual([hostVethName('b', 'eth0')]);
    await expect(handler.gc(req('', 'GC'))).rejects.toMatchObject({ code: 7 });
  });

  it('drains the DEL queue the plugin wrote while the agent was down', async () => {
    await handler.add(req('a'));
    await handler.add(req('b'));
    await enqueueDel(dir, { containerId: 'a', ifname: 'eth0', netns: '', queuedAt: 1 });
    await enqueueDel(dir, { containerId: 'a', ifname: 'eth0', netns: '', queuedAt: 2 }); // repeated DEL: one entry
    await enqueueDel(dir, { containerId: 'gone', ifname: 'eth0', netns: '', queuedAt: 1 });
    expect(await handler.drainDelQueue()).toEqual({ drained: 2, failed: 0, dropped: 0 });
    expect(ipam.list().map((x) => x.containerId)).toEqual(['b']);
    expect(await handler.drainDelQueue()).toEqual({ drained: 0, failed: 0, dropped: 0 });
  });

  it('routes map errors to API errors with CNI codes and HTTP statuses', async () => {
    const routes = Object.fromEntries(handler.routes().map((r) => [`${r.method} ${r.path}`, r.handler]));
    expect(Object.keys(routes).sort()).toEqual(['GET /v1/cni/status', 'POST /v1/cni/add', 'POST /v1/cni/check', 'POST /v1/cni/del', 'POST /v1/cni/gc']);
    const call = (k: string, body: unknown) => Promise.resolve(routes[k]!({ method: 'POST', path: k, query: new URLSearchParams(), body, via: 'unix' }));
    const ok = await call('POST /v1/cni/add', req('a'));
    expect(ok.status).toBe(200);
    expect((ok.json as { ips: unknown[] }).ips).toHaveLength(1);
    await expect(call('POST /v1/cni/add', 'nope')).rejects.toMatchObject({ status: 400, code: 6 });
    await expect(call('POST /v1/cni/add', { ...req('a'), containerId: undefined })).rejects.toMatchObject({ status: 400, code: 4 });
    await expect(call('POST /v1/cni/check', req('b', 'CHECK'))).rejects.toBeInstanceOf(ApiError);
    await expect(call('POST /v1/cni/check', req('b', 'CHECK'))).rejects.toMatchObject({ status: 404, code: 3 });
    expect((await call('GET /v1/cni/status', undefined)).json).toEqual({ ready: true, blocks: ['10.244.5.0/24'] });
    ipam.setBlocks([]);
    await expect(call('GET /v1/cni/status', undefined)).rejects.toMatchObject({ status: 503, code: 50 });
    expect(handler.stats()).toMatchObject({ adds: 1, errors: 5 });
  });
});

describe('parseForwarded', () => {
  it.each([
    [{ ...req('a'), ifname: 'a b' }, /ifname/],
    [{ ...req('a'), ifname: 'x'.repeat(16) }, /ifname/],
    [{ ...req('a'), netns: '' }, /netns is required/],
    [{ ...req('a'), containerId: 'x'.repeat(300) }, /containerId must be/],
    [{ ...req('a'), config: [] }, /config must be an object/],
    [{ ...req('a'), args: 'K=V' }, /args must be an object/],
  ])('rejects %#', (body, re) => expect(() => parseForwarded(body, 'ADD')).toThrow(re));
  it('DEL needs no netns, GC needs no target', () => {
    expect(parseForwarded({ ...req('a'), netns: '' }, 'DEL').netns).toBe('');
    expect(parseForwarded({ config: { cniVersion: '1.1.0' } }, 'GC').containerId).toBe('');
  });
});
