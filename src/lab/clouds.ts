/**
 * `weft lab up --clouds 2` (issue 7): a second cloud behind a masquerading NAT. Cloud 1 is the lab's
 * underlay (bridge br0 in `P-ul`); cloud 2 is bridge br1 in `P-c2` (192.0.2.0/24), joined to cloud 1
 * by a router namespace `P-rt` that forwards only cloud 2 -> cloud 1 (and replies) and masquerades
 * cloud 2 behind its cloud-1 address (.254). Only cloud 1 is reachable from cloud 2, never the reverse.
 *
 * Cloud-2 nodes start without the mesh key and join with one token redeemed at node 1's join
 * listener (`weft join`). Linux masquerade maps per destination and remaps a colliding source port,
 * so nodes behind the same NAT get distinct `--wg-port` and `--mesh-port` ({@link cloud2Ports}).
 *
 *   P-ul br0 --rt1/c1 [P-rt: 198.18.x.254, 192.0.2.1, SNAT c2->c1] c2/rt2-- br1 in P-c2
 *   P-c2 br1 --c2n<i>/eth1-- node P-n<i>: 192.0.2.(9+k)/24, default via 192.0.2.1
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Lab, LabNode } from './lab.ts';
import { AGENT_ENV } from '../agent/node-flags.ts';

/** Fixed addressing of cloud 2 (a documentation range; it only exists inside the lab's namespaces). */
export const CLOUD2 = Object.freeze({ subnet: '192.0.2.0/24', gateway: '192.0.2.1', bridge: 'br1', nftTable: 'weftlabnat' });

/** Where cloud-2 nodes send their join: node 1's join listener (the agent's default `--join-port`). */
export const LAB_JOIN_PORT = 7947;

/** Most cloud-2 nodes a lab builds (addresses .10-.59, distinct ports per node). */
export const MAX_CLOUD2_NODES = 50;

/** The cloud-2 underlay namespace of lab `prefix`. */
export function cloud2Netns(prefix: string): string {
  return `${prefix}-c2`;
}

/** The router namespace between the two clouds of lab `prefix`. */
export function routerNetns(prefix: string): string {
  return `${prefix}-rt`;
}

/** The cloud-2 address of the k-th (1-based) cloud-2 node. */
export function cloud2IP(k: number): string {
  if (!Number.isInteger(k) || k < 1 || k > MAX_CLOUD2_NODES) throw new RangeError(`lab: cloud-2 node number ${k} is out of 1-${MAX_CLOUD2_NODES}`);
  return `192.0.2.${9 + k}`;
}

/**
 * Distinct ports for the k-th node behind the same NAT: WireGuard 51820+k-1, mesh 7946+10(k-1)
 * (steps of 10 keep clear of the join port 7947 next to each mesh port).
 */
export function cloud2Ports(k: number): { wgPort: number; meshPort: number } {
  cloud2IP(k);
  return { wgPort: 51820 + k - 1, meshPort: 7946 + 10 * (k - 1) };
}

/** The value following `flag` in an agent argv, as a number (undefined when absent). */
export function argvPort(argv: readonly string[], flag: string): number | undefined {
  const i = argv.indexOf(flag);
  const v = i >= 0 ? Number(argv[i + 1]) : NaN;
  return Number.isInteger(v) && v > 0 && v < 65_536 ? v : undefined;
}

/**
 * Builds cloud 2 and the NAT router next to a lab that is up (cloud 1). Every object goes through
 * the lab's host, so `weft lab down` removes it. Not idempotent: call once per lab.
 */
export async function addCloud2(lab: Lab): Promise<void> {
  const h = lab.host;
  const rt = routerNetns(lab.prefix);
  const c2 = cloud2Netns(lab.prefix);
  const rtIP1 = lab.meta.subnet.replace(/\.0\/24$/, '.254');
  await h.addNetns(rt);
  await h.addNetns(c2);
  for (const ns of [rt, c2]) {
    // Quiet underlays (no router solicitations / MLD) so captures hold only what weft sends.
    await h.exec({ netns: ns }, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], { check: false });
  }
  await h.addBridge(CLOUD2.bridge, c2);
  await h.addVeth({ name: 'rt1', netns: lab.underlayNetns }, { name: 'c1', netns: rt });
  await h.exec({ netns: lab.underlayNetns }, ['ip', 'link', 'set', 'rt1', 'master', 'br0']);
  await h.addAddress(rt, 'c1', `${rtIP1}/24`);
  await h.addVeth({ name: 'rt2', netns: c2 }, { name: 'c2', netns: rt });
  await h.exec({ netns: c2 }, ['ip', 'link', 'set', 'rt2', 'master', CLOUD2.bridge]);
  await h.addAddress(rt, 'c2', `${CLOUD2.gateway}/24`);
  await h.exec({ netns: rt }, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await h.exec({ netns: rt }, ['nft', '-f', '-'], {
    input:
      `table ip ${CLOUD2.nftTable} {\n` +
      ' chain postnat { type nat hook postrouting priority 100; oifname "c1" masquerade; }\n' +
      ' chain filterfwd { type filter hook forward priority 0; policy drop; iifname "c2" oifname "c1" accept; ct state established,related accept; }\n' +
      '}\n',
  });
  await h.setMeta({ clouds: 2 });
}

/**
 * Adds a node in cloud 2 without starting its agent: created by the lab on cloud 1, then moved
 * behind the NAT, with its own address and ports and without the mesh key (it joins by token).
 * Returns its name.
 */
export async function addCloud2Node(lab: Lab): Promise<string> {
  const k = lab.meta.nodes.filter((n) => n.cloud === 2).length + 1;
  const ip = cloud2IP(k);
  const { wgPort, meshPort } = cloud2Ports(k);
  const name = await lab.addNode({ start: false });
  const h = lab.host;
  const c2 = cloud2Netns(lab.prefix);
  const node = lab.node(name);
  await h.exec({ netns: lab.underlayNetns }, ['ip', 'link', 'del', `n${node.index}`]);
  await h.addVeth({ name: `c2n${node.index}`, netns: c2 }, { name: 'eth1', netns: name });
  await h.exec({ netns: c2 }, ['ip', 'link', 'set', `c2n${node.index}`, 'master', CLOUD2.bridge]);
  await h.addAddress(name, 'eth1', `${ip}/24`);
  await h.exec({ netns: name }, ['ip', 'route', 'add', 'default', 'via', CLOUD2.gateway]);
  await rm(join(lab.handle(name).stateDir, 'mesh.key'), { force: true });
  const argv = [...node.agentArgv];
  argv[argv.indexOf('--listen-addr') + 1] = ip;
  argv[argv.indexOf('--wg-port') + 1] = String(wgPort);
  argv[argv.indexOf('--mesh-port') + 1] = String(meshPort);
  const moved: LabNode = { ...node, underlayIP: ip, cloud: 2, agentArgv: argv };
  await h.setMeta({ nodes: lab.meta.nodes.map((n) => (n.name === name ? moved : n)) });
  return name;
}

/** Creates a token at node `seedNode`'s agent good for `uses` joins through its join listener. */
export async function createJoinToken(lab: Lab, seedNode: string, uses: number, ttl = '10m'): Promise<string> {
  const { token } = await lab.client(seedNode, 10_000).post<{ token: string }>('/v1/token/create', { ttl, uses, seeds: [`${lab.node(seedNode).underlayIP}:${LAB_JOIN_PORT}`] });
  return token;
}

/**
 * Starts node `name`'s agent as `weft join <token> <agent flags>` without waiting for it; `argv` (its
 * recorded agent argv by default) lets a test change a flag. Returns the PID.
 */
export async function spawnJoin(lab: Lab, name: string, token: string, argv: readonly string[] = lab.node(name).agentArgv): Promise<number> {
  const i = argv.indexOf('agent');
  if (i < 0) throw new RangeError(`lab: the agent argv of ${name} has no "agent" command`);
  const h = lab.host.node(name);
  return lab.host.spawn(h, [...argv.slice(0, i), 'join', token, ...argv.slice(i + 1)], { logFile: join(h.logDir, 'agent.log'), label: `agent:${name}`, env: AGENT_ENV });
}

/** Starts node `name`'s agent as `weft join <token> <its agent flags>` and waits until it is ready. */
export async function joinNode(lab: Lab, name: string, token: string, readyTimeoutMs = 90_000): Promise<void> {
  await spawnJoin(lab, name, token);
  await lab.waitReady(name, readyTimeoutMs);
}

/**
 * The second half of `weft lab up --clouds 2`: builds cloud 2, adds `nodes` cloud-2 nodes, joins them
 * with one token created at the lab's first node, and gives each `podsPerNode` pods.
 */
export async function upCloud2(lab: Lab, opts: { nodes: number; podsPerNode: number; readyTimeoutMs?: number }): Promise<string[]> {
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > MAX_CLOUD2_NODES) throw new RangeError(`lab: --cloud2-nodes must be between 1 and ${MAX_CLOUD2_NODES}`);
  await addCloud2(lab);
  const names: string[] = [];
  for (let k = 0; k < opts.nodes; k++) names.push(await addCloud2Node(lab));
  const seed = lab.meta.nodes.find((n) => n.cloud !== 2)!.name;
  const token = await createJoinToken(lab, seed, opts.nodes);
  for (const name of names) {
    await joinNode(lab, name, token, opts.readyTimeoutMs ?? 90_000);
    for (let j = 1; j <= opts.podsPerNode; j++) await lab.addPod(name, j);
  }
  return names;
}

/** The nftables table (bridge family, in the underlay namespace of a cloud) that isolates nodes from each other. */
export const ISOLATION_TABLE = 'weftlabiso';

/** The underlay namespace and bridge port of a node: cloud 1's br0 (`n<i>`) or cloud 2's br1 (`c2n<i>`). */
function underlayPort(lab: Lab, name: string): { netns: string; port: string; cloud: 1 | 2 } {
  const n = lab.node(name);
  return n.cloud === 2 ? { netns: cloud2Netns(lab.prefix), port: `c2n${n.index}`, cloud: 2 } : { netns: lab.underlayNetns, port: `n${n.index}`, cloud: 1 };
}

/**
 * Makes nodes `a` and `b` of one cloud unable to reach each other directly while both still reach
 * everyone else, like a VPC with client isolation or a firewall between two hosts: an nftables
 * `bridge` filter in that cloud's underlay namespace drops frames between their two bridge ports
 * (both ways). The table goes with the namespace at `weft lab down`, or with {@link reconnectNodes}.
 * Calling again for another pair adds rules.
 */
export async function isolateNodes(lab: Lab, a: string, b: string): Promise<void> {
  const [pa, pb] = [underlayPort(lab, a), underlayPort(lab, b)];
  if (pa.cloud !== pb.cloud) throw new RangeError(`lab: ${a} and ${b} are in different clouds (their traffic crosses the router, not one bridge)`);
  await lab.host.exec({ netns: pa.netns }, ['nft', '-f', '-'], {
    input:
      `table bridge ${ISOLATION_TABLE} {\n` +
      ' chain isolate { type filter hook forward priority 0; policy accept; }\n' +
      '}\n' +
      `add rule bridge ${ISOLATION_TABLE} isolate iifname "${pa.port}" oifname "${pb.port}" drop\n` +
      `add rule bridge ${ISOLATION_TABLE} isolate iifname "${pb.port}" oifname "${pa.port}" drop\n`,
  });
}

/** Lifts every {@link isolateNodes} cut in `cloud`; succeeds when there is none. */
export async function reconnectNodes(lab: Lab, cloud: 1 | 2 = 1): Promise<void> {
  const netns = cloud === 2 ? cloud2Netns(lab.prefix) : lab.underlayNetns;
  const r = await lab.host.exec({ netns }, ['nft', 'delete', 'table', 'bridge', ISOLATION_TABLE], { check: false });
  if (r.code !== 0 && !/No such file or directory/.test(r.stderr)) throw new Error(`lab: cannot lift the isolation in ${netns}: ${r.stderr.trim()}`);
}
