/**
 * DNS in network namespaces, the way pods use it: a "node" namespace with the gateway device weftgw0
 * carrying the gateway 10.244.1.1/24 and weft's DNS service on 10.244.1.1:53 (the real port), and a
 * "pod" namespace wired to it by the CNI's own routed veth (iproute2 NetnsOps), whose resolv.conf (ip netns exec bind-mounts
 * /etc/netns/<ns>/resolv.conf) is what the CNI result's dns section yields: nameserver = gateway,
 * search `<ns>.pod.weft.local pod.weft.local`. dig (dnsutils) resolves a pod on another node by its
 * full name and by its short name, PTR works, and a deleted pod's name is gone after the update.
 * Needs root, ip and dig. Namespace prefix: wdns-.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIprouteNetnsOps } from '../../src/cni/netns.ts';
import type { DnsSource } from '../../src/dns/service.ts';
import type { NodeInfo } from '../../src/model.ts';
import { labPrerequisites } from './prerequisites.ts';

const { skip, why } = labPrerequisites({ tools: ['ip', 'dig'] });

const tag = process.pid % 100000;
const nodeNs = `wdns-${tag}-n1`;
const podNs = `wdns-${tag}-p1`;
const vethHost = `wdns${tag}h`;
const netnsEtc = `/etc/netns/${podNs}`;

const info = (name: string, block: number): NodeInfo => ({
  format: 1, name, wgPublicKey: 'k', listenPort: 51820, endpoints: [], meshIP: `10.244.${block}.1`,
  podCIDRs: [`10.244.${block}.0/24`], claimedAt: block, keepalive: 0,
});
const source = (withApi: boolean): DnsSource => ({
  self: { info: info('node-1', 1), pods: [{ name: 'client', namespace: 'default', ips: ['10.244.1.2'] }] },
  remotes: [
    { state: 'alive', info: info('node-2', 2), pods: [] },
    { state: 'alive', info: info('node-3', 3), pods: [
      { name: 'web', namespace: 'default', ips: ['10.244.3.5'] },
      ...(withApi ? [{ name: 'api', namespace: 'prod', ips: ['10.244.3.6'] }] : []),
    ] },
  ],
});

const sh = (argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
const inPod = (argv: string[]) => sh(['ip', 'netns', 'exec', podNs, ...argv]);
const dig = (...args: string[]) => inPod(['dig', '+tries=2', '+time=2', ...args]);

describe.skipIf(skip)(`DNS from a pod namespace through the node gateway${why}`, () => {
  let server: ChildProcess | undefined;
  let tmp = '';

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'wdns-lab-'));
    sh(['ip', 'netns', 'add', nodeNs]);
    sh(['ip', 'netns', 'add', podNs]);
    const inNode = (args: string[]) => sh(['ip', '-n', nodeNs, ...args]);
    inNode(['link', 'set', 'lo', 'up']);
    const ops = createIprouteNetnsOps({ hostNetns: `/var/run/netns/${nodeNs}` });
    await ops.ensureGateway('weftgw0', ['10.244.1.1/24'], 1420);
    await ops.addPod({
      netns: `/var/run/netns/${podNs}`, ifname: 'eth0', hostIfname: vethHost, addresses: ['10.244.1.2/32'], gateways: ['10.244.1.1'],
      mtu: 1420, hostMac: '02:00:00:00:01:01', podMac: '02:00:00:00:01:02',
    });
    mkdirSync(netnsEtc, { recursive: true });
    writeFileSync(join(netnsEtc, 'resolv.conf'), 'nameserver 10.244.1.1\nsearch default.pod.weft.local pod.weft.local\noptions ndots:5\n');
    // The node's own upstream list: nothing reachable (out-of-zone names are not under test here).
    writeFileSync(join(tmp, 'resolv.conf'), 'nameserver 10.244.1.1\n');

    server = spawn('ip', ['netns', 'exec', nodeNs, process.execPath, join(import.meta.dirname, 'dns-serve.ts'),
      JSON.stringify(source(true)), '10.244.1.1:53', join(tmp, 'resolv.conf')], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (c) => reject(new Error(`dns server exited with ${c}`)));
    });
  });

  afterAll(async () => {
    if (server?.pid !== undefined && server.exitCode === null) {
      const exited = new Promise((r) => server!.once('exit', r));
      server.stdin!.end();
      process.kill(server.pid, 'SIGTERM');
      await exited;
    }
    for (const ns of [podNs, nodeNs]) {
      try { sh(['ip', 'netns', 'del', ns]); } catch { /* already gone */ }
    }
    rmSync(netnsEtc, { recursive: true, force: true });
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('resolves a pod on node 3 by its full name', () => {
    expect(dig('+short', 'web.default.pod.weft.local', 'A').trim()).toBe('10.244.3.5');
  });

  it('resolves short names through the search domains (same namespace, then <name>.<ns>)', () => {
    expect(dig('+search', '+short', 'web', 'A').trim()).toBe('10.244.3.5');
    expect(dig('+search', '+short', 'api.prod', 'A').trim()).toBe('10.244.3.6');
  });

  it('answers PTR, node names, and NXDOMAIN for unknown pods', () => {
    expect(dig('+short', '-x', '10.244.3.5').trim()).toBe('web.default.pod.weft.local.');
    expect(dig('+short', 'node-3.node.weft.local', 'A').trim()).toBe('10.244.3.1');
    expect(dig('nope.default.pod.weft.local', 'A')).toMatch(/status: NXDOMAIN/);
  });

  it('drops a deleted pod\'s name after the table update', async () => {
    server!.stdin!.write(`${JSON.stringify(source(false))}\n`);
    await new Promise<void>((resolve) => server!.stdout!.once('data', () => resolve()));
    expect(dig('api.prod.pod.weft.local', 'A')).toMatch(/status: NXDOMAIN/);
    expect(dig('+short', 'web.default.pod.weft.local', 'A').trim()).toBe('10.244.3.5');
  });
});
