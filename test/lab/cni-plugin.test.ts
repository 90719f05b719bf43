/**
 * The plugin process, exactly as a runtime calls it, against the agent's real API server and CNI
 * handler with real namespaces (`wrt-pl-*`; pods on routed veths): ADD/CHECK/DEL, an agent restart in the middle
 * (addresses survive, none is handed out twice), and DELs queued while the agent is down and
 * drained when it comes back (host veth removed, address released).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { ApiServer } from '../../src/api/server.ts';
import { createCniHandler, type CniHandler } from '../../src/cni/handler.ts';
import { createIprouteNetnsOps } from '../../src/cni/netns.ts';
import { hostVethName } from '../../src/cni/spec.ts';
import { PodIpam } from '../../src/ipam/pods.ts';
import { runPlugin } from '../cni/run-plugin.ts';

const isRoot = process.getuid?.() === 0;
const NODE = 'wrt-pl-node';
const PODS = ['wrt-pl-p1', 'wrt-pl-p2', 'wrt-pl-p3'];
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const log = pino({ level: 'silent' });

describe.skipIf(!isRoot)('weft-cni process against a real agent handler in namespaces (needs root)', () => {
  let dir: string;
  let sock: string;
  let api: ApiServer | undefined;
  let ipam: PodIpam;
  let handler: CniHandler;

  const startAgent = async () => {
    ipam = await PodIpam.open({ stateDir: dir, blocks: ['10.244.8.0/24'], logger: log });
    handler = createCniHandler({ ipam, netns: createIprouteNetnsOps({ hostNetns: `/var/run/netns/${NODE}` }), logger: log, stateDir: dir });
    await handler.drainDelQueue();
    api = new ApiServer({ logger: log });
    for (const r of handler.routes()) api.route(r.method, r.path, r.handler);
    await api.listenUnix(sock);
  };
  const stopAgent = async () => {
    await api?.close();
    api = undefined;
  };
  const conf = () => JSON.stringify({ cniVersion: '1.0.0', name: 'weft', type: 'weft-cni', socket: sock, stateDir: dir });
  const env = (command: string, pod: string) => ({
    CNI_COMMAND: command,
    CNI_CONTAINERID: `cid-${pod}`,
    CNI_NETNS: `/var/run/netns/${pod}`,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `K8S_POD_NAMESPACE=lab;K8S_POD_NAME=${pod}`,
  });
  const hostLinkExists = (pod: string) => {
    try {
      sh('ip', ['-n', NODE, 'link', 'show', 'dev', hostVethName(`cid-${pod}`, 'eth0')]);
      return true;
    } catch {
      return false;
    }
  };

  beforeAll(async () => {
    for (const n of [NODE, ...PODS]) {
      try { sh('ip', ['netns', 'del', n]); } catch { /* not there */ }
      sh('ip', ['netns', 'add', n]);
    }
    // The agent enables forwarding on the node; same-node pods are routed, not bridged.
    sh('ip', ['netns', 'exec', NODE, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    dir = await mkdtemp(join(tmpdir(), 'wrt-pl-'));
    sock = join(dir, 'weft.sock');
    await startAgent();
  });
  afterAll(async () => {
    await stopAgent();
    for (const n of [...PODS, NODE]) {
      try { sh('ip', ['netns', 'del', n]); } catch { /* gone */ }
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('ADD, CHECK (with the prevResult) and same-node pod-to-pod ping over routed veths', async () => {
    const a = await runPlugin(env('ADD', PODS[0]!), conf());
    expect(a.code).toBe(0);
    expect(a.json).toMatchObject({ cniVersion: '1.0.0', ips: [{ address: '10.244.8.2/32', gateway: '10.244.8.1', interface: 1 }], routes: [{ dst: '0.0.0.0/0', gw: '10.244.8.1' }] });
    const b = await runPlugin(env('ADD', PODS[1]!), conf());
    expect(b.json).toMatchObject({ ips: [{ address: '10.244.8.3/32' }] });
    const withPrev = JSON.stringify({ ...JSON.parse(conf()), prevResult: a.json });
    expect((await runPlugin(env('CHECK', PODS[0]!), withPrev)).code).toBe(0);
    sh('ip', ['netns', 'exec', PODS[0]!, 'ping', '-c', '1', '-W', '2', '10.244.8.3']);
    sh('ip', ['netns', 'exec', NODE, 'ping', '-c', '1', '-W', '2', '10.244.8.2']);
    // A host route deleted behind weft's back: CHECK reports it (code 999).
    sh('ip', ['-n', NODE, 'route', 'del', '10.244.8.3/32']);
    const bad = await runPlugin(env('CHECK', PODS[1]!), conf());
    expect(bad.json).toMatchObject({ code: 999, details: expect.stringMatching(/host route 10.244.8.3\/32 dev wv[0-9a-f]{11} missing/) });
    sh('ip', ['-n', NODE, 'route', 'add', '10.244.8.3/32', 'dev', hostVethName(`cid-${PODS[1]}`, 'eth0')]);
    expect((await runPlugin(env('CHECK', PODS[1]!), conf())).code).toBe(0);
  });

  it('an agent restart keeps every address; the next ADD gets a fresh one', async () => {
    await stopAgent();
    expect((await runPlugin(env('ADD', PODS[2]!), conf())).json).toMatchObject({ code: 11 });
    expect((await runPlugin(env('CHECK', PODS[0]!), conf())).json).toMatchObject({ code: 11 });
    await startAgent();
    expect(ipam.list().map((x) => x.ip)).toEqual(['10.244.8.2', '10.244.8.3']);
    const c = await runPlugin(env('ADD', PODS[2]!), conf());
    expect(c.json).toMatchObject({ ips: [{ address: '10.244.8.4/32' }] });
  });

  it('DEL while the agent is down succeeds, and the agent drains it at start', async () => {
    await stopAgent();
    const d = await runPlugin(env('DEL', PODS[1]!), conf());
    expect(d.code).toBe(0);
    expect(hostLinkExists(PODS[1]!)).toBe(true); // nothing done yet: the agent is down
    sh('ip', ['netns', 'del', PODS[2]!]); // and a pod whose namespace vanished meanwhile
    expect((await runPlugin(env('DEL', PODS[2]!), conf())).code).toBe(0);
    await startAgent();
    expect(hostLinkExists(PODS[1]!)).toBe(false);
    expect(ipam.list().map((x) => x.containerId)).toEqual([`cid-${PODS[0]}`]);
    sh('ip', ['netns', 'add', PODS[2]!]);
  });

  it('DEL through the agent is idempotent', async () => {
    expect((await runPlugin(env('DEL', PODS[0]!), conf())).code).toBe(0);
    expect((await runPlugin(env('DEL', PODS[0]!), conf())).code).toBe(0);
    expect(hostLinkExists(PODS[0]!)).toBe(false);
    expect(ipam.list()).toEqual([]);
    // Nothing of any pod left on the node: no veth, no host route, no neighbour; only weftgw0.
    expect(JSON.parse(sh('ip', ['-n', NODE, '-j', 'link', 'show'])).map((l: { ifname: string }) => l.ifname).sort()).toEqual(['lo', 'weftgw0']);
    expect(JSON.parse(sh('ip', ['-n', NODE, '-j', 'route', 'show'])).map((r: { dst: string }) => r.dst)).toEqual(['10.244.8.0/24']);
    expect(JSON.parse(sh('ip', ['-n', NODE, '-j', 'neigh', 'show']) || '[]')).toEqual([]);
  });
});
