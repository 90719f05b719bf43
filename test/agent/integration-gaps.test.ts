/**
 * The agent's integration seams: DNS forwarding allow list, --dns-listen addresses kept on the
 * bridge, the CNI DEL queue drained on every resync, and Kubernetes seeds followed after startup.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ApiServer } from '../../src/api/server.ts';
import type { Agent } from '../../src/agent/agent.ts';
import { dnsForwardFrom, missingDnsAddresses, mountCni, withDnsAddresses, type CniMount } from '../../src/agent/components.ts';
import { followKubeSeeds } from '../../src/agent/kube.ts';
import { enqueueDel } from '../../src/cni/del-queue.ts';
import type { ForwardedRequest } from '../../src/cni/spec.ts';
import { parseConfig } from '../../src/config.ts';
import { SourceAcl } from '../../src/dns/acl.ts';
import { FakeNetns } from '../cni/fake-netns.ts';

const log = pino({ level: 'silent' });

describe('DNS forwarding allow list', () => {
  it('forwards for the cluster, loopback and the node-local listen addresses only', () => {
    const config = parseConfig({ name: 'n1', clusterCidr: '10.244.0.0/16', dnsListen: '169.254.20.11:53,0.0.0.0:5353' }, {});
    const from = dnsForwardFrom(config);
    expect(from).toEqual(['10.244.0.0/16', '127.0.0.0/8', '::1/128', '169.254.20.11/32']);
    const acl = new SourceAcl(from);
    for (const ok of ['10.244.3.7', '10.244.0.1', '127.0.0.1', '::1', '::ffff:10.244.9.9', '169.254.20.11']) expect(acl.allows(ok), ok).toBe(true);
    for (const no of ['192.0.2.11', '198.18.0.5', '10.245.0.1', '169.254.20.12', '2001:db8::1', '8.8.8.8']) expect(acl.allows(no), no).toBe(false);
  });
});

describe('--dns-listen addresses on the gateway device', () => {
  const hp = (s: string) => parseConfig({ name: 'n1', dnsListen: s }, {}).dnsListen;

  it('adds the listen addresses no other interface carries, as host routes', () => {
    const node = [
      { ifname: 'lo', addr: '127.0.0.1' },
      { ifname: 'eth0', addr: '192.0.2.11' },
      { ifname: 'weftgw0', addr: '10.244.1.1' },
      { ifname: 'weftgw0', addr: '169.254.20.11' }, // added by an earlier run: still ours
    ];
    expect(missingDnsAddresses(hp('169.254.20.11:53,192.0.2.11:53,127.0.0.1:5353,0.0.0.0:53,[fd00::53]:53,169.254.20.11:5353'), node, 'weftgw0')).toEqual([
      '169.254.20.11/32',
      'fd00::53/128',
    ]);
    expect(missingDnsAddresses([], node, 'weftgw0')).toEqual([]);
    // Upgraded from the bridge version: the address on the legacy bridge is weft's too, so it moves
    // to the gateway device; on a device of someone else's it stays there.
    const upgraded = [{ ifname: 'weftbr0', addr: '169.254.20.11' }];
    expect(missingDnsAddresses(hp('169.254.20.11:53'), upgraded, ['weftgw0', 'weftbr0'])).toEqual(['169.254.20.11/32']);
    expect(missingDnsAddresses(hp('169.254.20.11:53'), upgraded, 'weftgw0')).toEqual([]);
  });

  it('every ensureGateway (agent repair and CNI) keeps them, so a repair never strips them', async () => {
    const ops = new FakeNetns();
    let node = [{ ifname: 'eth0', addr: '192.0.2.11' }];
    const wrapped = withDnsAddresses(ops, hp('169.254.20.11:53'), log, async () => node);
    await wrapped.ensureGateway('weftgw0', ['10.244.1.1/24'], 1400);
    expect(ops.calls.at(-1)).toBe('ensureGateway weftgw0 10.244.1.1/24,169.254.20.11/32');
    // Someone else put the address on the node: weft no longer claims it.
    node = [...node, { ifname: 'nodelocaldns', addr: '169.254.20.11' }];
    await wrapped.ensureGateway('weftgw0', ['10.244.1.1/24'], 1400);
    expect(ops.calls.at(-1)).toBe('ensureGateway weftgw0 10.244.1.1/24');
    // Without --dns-listen the ops are used as they are.
    expect(withDnsAddresses(ops, [], log)).toBe(ops);
  });
});

describe('CNI DEL queue', () => {
  let dir = '';
  let cni: CniMount | undefined;
  afterEach(async () => {
    await cni?.close();
    cni = undefined;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is drained on every resync, not only at start: a DEL queued after the first drain is released', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wagent-delq-'));
    const config = { ...parseConfig({ name: 'n1', stateDir: dir }, {}), resyncMs: 50 };
    const routes: string[] = [];
    const api = { route: (m: string, p: string) => routes.push(`${m} ${p}`) } as unknown as ApiServer;
    const published: number[] = [];
    const agent = { claim: { podCIDRs: ['10.244.5.0/24'] }, setLocalPods: (p: readonly unknown[]) => published.push(p.length) } as unknown as Agent;
    const net = new FakeNetns();
    net.namespaces.add('/var/run/netns/a');
    cni = await mountCni(api, config, agent, 1400, log, net);
    expect(routes).toContain('POST /v1/cni/del');
    const req: ForwardedRequest = {
      command: 'ADD', containerId: 'a', netns: '/var/run/netns/a', ifname: 'eth0',
      args: { K8S_POD_NAME: 'pod-a', K8S_POD_NAMESPACE: 'default' }, config: { cniVersion: '1.1.0', name: 'weft', type: 'weft-cni' },
    };
    await cni.handler.add(req);
    expect(cni.ipam.list().map((a) => a.containerId)).toEqual(['a']);
    // The plugin could not reach the agent (restart window) and queued the DEL.
    await enqueueDel(dir, { containerId: 'a', ifname: 'eth0', netns: '', queuedAt: Date.now() });
    await vi.waitFor(() => expect(cni!.ipam.list()).toEqual([]), { timeout: 5000, interval: 20 });
    expect(published.at(-1)).toBe(0);
  });
});

describe('Kubernetes seeds after startup', () => {
  it('hands seeds of Nodes that appear later to the mesh, once each, never its own address', async () => {
    const config = parseConfig({ name: 'n1', seeds: '192.0.2.12:7946' }, {});
    const joined: string[][] = [];
    let fail = false;
    const follow = followKubeSeeds(config, async (s) => {
      joined.push(s);
      if (fail) throw new Error('no seed answered');
    }, log);
    const snap = (seeds: string[]) => ({ podCIDRs: [], seeds, endpointIPs: ['192.0.2.11'] });
    follow(snap(['192.0.2.12:7946']));
    expect(joined).toEqual([]);
    follow(snap(['192.0.2.11:7946', '192.0.2.12:7946', '192.0.2.13:7946']));
    expect(joined).toEqual([['192.0.2.13:7946']]);
    follow(snap(['192.0.2.13:7946']));
    expect(joined).toHaveLength(1);
    fail = true;
    follow(snap(['192.0.2.13:7946', '[2001:db8::14]:7946', 'junk', '192.0.2.15:0']));
    expect(joined.at(-1)).toEqual(['[2001:db8::14]:7946']);
    await new Promise((r) => setTimeout(r, 0)); // the rejected join is logged, not thrown
  });
});
