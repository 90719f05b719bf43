/**
 * Issue 7 across a NAT (a first cut of the `--clouds 2` lab, built in this test from LabHost primitives):
 * cloud 1 is the lab's underlay (2 nodes); cloud 2 is a second bridge (192.0.2.0/24) behind a router
 * namespace that masquerades cloud 2 towards cloud 1. Only cloud 1 is reachable from cloud 2, never the
 * reverse. A cloud-2 node without the mesh key joins with a token through node 1's join listener, and
 * its pod and a cloud-1 pod reach each other both ways. Prefix: wtk.
 *
 * Every agent runs the mesh's WAN profile (cross-cloud). The NATed node publishes the address members
 * observe it at (the router) as its first WireGuard endpoint, so cloud 1 aims at the NAT mapping, and the
 * path survives datapath resyncs without the peer being dropped.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs, uniquePrefix } from '../../src/lab/host.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const has = (tool: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const missing = [
  ...(process.getuid?.() === 0 ? [] : ['root']),
  ...['ip', 'nsenter', 'unshare', 'ping', 'wg', 'nft'].filter((t) => !has(t)),
  ...(existsSync('/sys/module/wireguard') || has('wireguard-go') ? [] : ['wireguard-go (no WireGuard kernel module)']),
];
const skip = missing.length > 0;
const PREFIX = skip ? 'wtkx' : uniquePrefix('wtk');
const WHY = skip ? ` (skipped: missing ${missing.join(', ')})` : '';
const log = (msg: string): void => void process.stderr.write(`[token-nat] ${msg}\n`);

let lab: Lab;
let n1 = '';
let n3 = '';
const C2_NODE_IP = '192.0.2.10';
const C2_GW = '192.0.2.1';

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wtk[a-z0-9]{3}$/);
  // Every agent (spawned with this environment) runs the mesh's WAN timing, as a mesh spanning clouds should.
  process.env.WEFT_MESH_PROFILE = 'wan';
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '10s' });
  await lab.up({ nodes: 2, podsPerNode: 1 });
  n1 = lab.meta.nodes[0]!.name;
  const h = lab.host;
  const under = lab.underlayNetns;
  const rt = `${PREFIX}-rt`;
  const c2 = `${PREFIX}-c2`;
  const s1 = lab.meta.subnet; // e.g. 198.18.x.0/24
  const rtIP1 = s1.replace(/\.0\/24$/, '.254');
  await h.addNetns(rt);
  await h.addNetns(c2);
  await h.addBridge('br1', c2);
  await h.addVeth({ name: 'rt1', netns: under }, { name: 'c1', netns: rt });
  await h.exec({ netns: under }, ['ip', 'link', 'set', 'rt1', 'master', 'br0']);
  await h.addAddress(rt, 'c1', `${rtIP1}/24`);
  await h.addVeth({ name: 'rt2', netns: c2 }, { name: 'c2', netns: rt });
  await h.exec({ netns: c2 }, ['ip', 'link', 'set', 'rt2', 'master', 'br1']);
  await h.addAddress(rt, 'c2', `${C2_GW}/24`);
  await h.exec({ netns: rt }, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await h.exec({ netns: rt }, ['nft', '-f', '-'], {
    input: 'table ip wtknat {\n chain postnat { type nat hook postrouting priority 100; oifname "c1" masquerade; }\n chain filterfwd { type filter hook forward priority 0; policy drop; iifname "c2" oifname "c1" accept; ct state established,related accept; }\n}\n',
  });
  // The cloud-2 node: created by the lab on cloud 1, then moved behind the NAT.
  n3 = await lab.addNode({ start: false });
  const idx = lab.node(n3).index;
  await h.exec({ netns: under }, ['ip', 'link', 'del', `n${idx}`]);
  await h.addVeth({ name: `c2n${idx}`, netns: c2 }, { name: 'eth1', netns: n3 });
  await h.exec({ netns: c2 }, ['ip', 'link', 'set', `c2n${idx}`, 'master', 'br1']);
  await h.addAddress(n3, 'eth1', `${C2_NODE_IP}/24`);
  await h.exec({ netns: n3 }, ['ip', 'route', 'add', 'default', 'via', C2_GW]);
  await rm(join(lab.handle(n3).stateDir, 'mesh.key'));
}, 240_000);

afterAll(async () => {
  delete process.env.WEFT_MESH_PROFILE;
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

describe.skipIf(skip)(`weft join from behind a masquerading NAT${WHY}`, () => {
  it('cloud 2 reaches cloud 1, never the reverse', async () => {
    const toC1 = await lab.host.exec({ netns: n3 }, ['ping', '-n', '-c', '1', '-W', '2', lab.node(n1).underlayIP], { check: false });
    expect(toC1.code).toBe(0);
    const toC2 = await lab.host.exec({ netns: n1 }, ['ping', '-n', '-c', '1', '-W', '1', C2_NODE_IP], { check: false });
    expect(toC2.code).not.toBe(0);
  });

  it('a cloud-2 node joins with a token and its pod and a cloud-1 pod reach each other', async () => {
    const { token } = await lab.client(n1, 10_000).post<{ token: string }>('/v1/token/create', { ttl: '10m', uses: 1, seeds: [`${lab.node(n1).underlayIP}:7947`] });
    const argv = [...lab.node(n3).agentArgv];
    const i = argv.indexOf('agent');
    argv[argv.indexOf('--listen-addr') + 1] = C2_NODE_IP;
    const h = lab.host.node(n3);
    await lab.host.spawn(h, [...argv.slice(0, i), 'join', token, ...argv.slice(i + 1)], { logFile: join(h.logDir, 'agent.log'), label: `agent:${n3}` });
    await lab.waitReady(n3, 90_000);
    const p3 = await lab.addPod(n3, 1);
    const p1 = lab.meta.pods.find((p) => p.node === n1)!;
    try {
      await waitFor(`${p3.netns} -> ${p1.ip}`, 60_000, async () => ((await lab.exec(p3.netns, ['ping', '-n', '-c', '1', '-W', '2', p1.ip], { check: false })).code === 0 ? true : undefined));
      await waitFor(`${p1.netns} -> ${p3.ip}`, 30_000, async () => ((await lab.exec(p1.netns, ['ping', '-n', '-c', '1', '-W', '2', p3.ip], { check: false })).code === 0 ? true : undefined));
    } catch (err) {
      const s1 = await lab.client(n1).get<AgentStatus>('/v1/status').catch(() => undefined);
      const s3 = await lab.client(n3).get<AgentStatus>('/v1/status').catch(() => undefined);
      log(`n1 peers: ${JSON.stringify(s1?.peers)}`);
      log(`n3 peers: ${JSON.stringify(s3?.peers)}`);
      log(await lab.agentLogTail(n3, 30));
      throw err;
    }
  });

  it('with the WAN profile the NATed node is not dropped: the path survives resyncs without peer flaps', async () => {
    const p3 = lab.meta.pods.find((p) => p.node === n3)!;
    const p1 = lab.meta.pods.find((p) => p.node === n1)!;
    // Two resync periods (10 s each in the lab) and several probe rounds.
    await new Promise((r) => setTimeout(r, 25_000));
    const back = await lab.exec(p1.netns, ['ping', '-n', '-c', '3', '-W', '2', p3.ip], { check: false });
    const n1log = await readFile(join(lab.handle(n1).logDir, 'agent.log'), 'utf8');
    const removed = n1log.split('\n').filter((l) => l.includes(n3) && l.includes('peer-removed'));
    const s1 = await lab.client(n1).get<AgentStatus>('/v1/status');
    log(`n1's peer for ${n3}: ${JSON.stringify(s1.peers.find((p) => p.name === n3))}; peer-removed lines: ${removed.length}`);
    expect(removed).toEqual([]);
    expect(back.code).toBe(0);
  }, 60_000);
});
