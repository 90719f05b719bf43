/**
 * End-to-end test of issue 6 in one lab (real agents, real CNI plugin, wireguard-go): the agents
 * take their pod blocks and seeds from a fake Kubernetes API server instead of flags. The server
 * listens on the host end of a veth plugged into the lab's underlay bridge, so the node namespaces
 * reach it over the underlay like a real control plane. Each Node carries `spec.podCIDR` and its
 * underlay address as InternalIP; the agents run with `--kubeconfig` and neither `--seeds` nor
 * `--pod-cidr`, plus `--dns-listen 169.254.20.11:53` (the CoreDNS stub's address, which no
 * interface carries: the agent adds it to weftgw0). Cases, in order, sharing the lab:
 * blocks from Kubernetes; Node annotations; pod-to-pod reachability; DNS on the gateway and on
 * 169.254.20.11, and no forwarding for sources outside the cluster; a Node created later handed to
 * the running agents as a seed; a pod deleted from the API without a CNI DEL losing its DNS name;
 * traffic and DNS surviving the API server being stopped; `--uninstall` taking the link-local
 * address away with the gateway device weftgw0 and the pods' veths. Namespace prefix: wlk.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type LabPod } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';
import type { FakeApiServer } from '../k8s/fake-apiserver.ts';
import { nodeObject, nodePodCIDR, startLabApiServer, type LabApiServer } from './fake-api-lab.ts';

const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'ping', 'dig'], wireguard: true, prefix: 'wlk' });
const ZONE = 'weft.local';
const STUB = '169.254.20.11';
const POD_NS = 'default';

let lab: Lab;
let api: LabApiServer | undefined;
let server: FakeApiServer | undefined;
let tmp = '';
const cidrOf = nodePodCIDR;
const log = (msg: string): void => {
  process.stderr.write(`[e2e-k8s] ${msg}\n`);
};


/** Creates the pod in the API (scheduled to `node`), then through CNI in the lab, as a kubelet would. */
async function addPod(node: string, j: number): Promise<LabPod> {
  const name = `${node}-p${j}`;
  server!.upsertPod({ metadata: { name, namespace: POD_NS }, spec: { nodeName: node }, status: { phase: 'Running' } });
  return lab.addPod(node, j);
}

const dig = (where: string, ...args: string[]) => lab.exec(where, ['dig', '+time=2', '+tries=2', ...args], { check: false });
const status = (node: string) => lab.client(node).get<AgentStatus>('/v1/status');

async function pingOnce(pod: string, ip: string, tries = 3): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    const r = await lab.exec(pod, ['ping', '-n', '-c', '1', '-W', '2', ip], { check: false });
    if (r.code === 0) return true;
  }
  return false;
}

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wlk[a-z0-9]{3}$/);
  tmp = await mkdtemp(join(tmpdir(), `${PREFIX}-`));
  const kubeconfig = join(tmp, 'kubeconfig');
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '5s' });
  await lab.up({
    nodes: 2,
    podsPerNode: 0,
    kubeconfig,
    agentArgs: ['--dns-listen', `${STUB}:53`],
    beforeAgents: async (l) => {
      api = await startLabApiServer(l, PREFIX, kubeconfig);
      server = api.server;
    },
  });
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
  await api?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
}, 120_000);

describe.skipIf(skip)(`e2e: agents configured from the Kubernetes API server${WHY}`, () => {
  it("each agent's pod block is its Node's podCIDR (no --pod-cidr, no --seeds) and both are in one mesh", async () => {
    for (const n of lab.meta.nodes) {
      expect(n.agentArgv).not.toContain('--pod-cidr');
      expect(n.agentArgv).not.toContain('--seeds');
      const s = await status(n.name);
      expect(s.node.podCIDRs).toEqual([cidrOf(n.index)]);
      expect(s.node.meshIP).toBe(cidrOf(n.index).replace('.0/24', '.1'));
      expect(s.mesh.members.alive).toBe(2);
    }
  });

  it('annotates its Node with its WireGuard public key and mesh IP', async () => {
    for (const n of lab.meta.nodes) {
      const s = await status(n.name);
      await waitFor(`annotations on ${n.name}`, 20_000, async () => {
        const a = server!.getNode(n.name)?.metadata.annotations as Record<string, string> | undefined;
        return a?.['weft.dev/public-key'] === s.node.publicKey && a?.['weft.dev/mesh-ip'] === s.node.meshIP ? true : undefined;
      });
    }
  });

  it('pods on different nodes reach each other', async () => {
    const [n1, n2] = lab.meta.nodes.map((n) => n.name);
    await addPod(n1!, 1);
    await addPod(n1!, 2); // deleted from the API later, without a CNI DEL
    await addPod(n2!, 1);
    const [a, , c] = lab.meta.pods;
    expect(a!.ip.startsWith(cidrOf(1).slice(0, -4))).toBe(true);
    expect(c!.ip.startsWith(cidrOf(2).slice(0, -4))).toBe(true);
    expect(await pingOnce(a!.netns, c!.ip, 10)).toBe(true);
    expect(await pingOnce(c!.netns, a!.ip)).toBe(true);
  }, 120_000);

  it('serves DNS on the gateway and on the --dns-listen link-local address it added to weftgw0; no forwarding for outside sources', async () => {
    const [n1, n2] = lab.meta.nodes;
    const [a, b, c] = lab.meta.pods;
    const gw = await lab.exec(n1!.name, ['ip', '-j', 'addr', 'show', 'dev', 'weftgw0']);
    expect(JSON.parse(gw.stdout)[0].addr_info.map((x: { local: string; prefixlen: number }) => `${x.local}/${x.prefixlen}`)).toContain(`${STUB}/32`);
    const name = `${b!.podName}.${POD_NS}.pod.${ZONE}`;
    // The remote pod's name, from a pod on the other node, through its gateway and through the stub address.
    await waitFor(`${name} from ${c!.netns}`, 30_000, async () => ((await dig(c!.netns, '+short', `@${cidrOf(2).replace('.0/24', '.1')}`, name, 'A')).stdout.trim() === b!.ip ? true : undefined));
    expect((await dig(c!.netns, '+short', `@${STUB}`, name, 'A')).stdout.trim()).toBe(b!.ip);
    expect((await dig(a!.netns, '+short', `@${STUB}`, `${n2!.name}.node.${ZONE}`, 'A')).stdout.trim()).toBe(cidrOf(2).replace('.0/24', '.1'));
    // A source outside the cluster (the node's underlay address) gets in-zone answers but no forwarding.
    const gw1 = cidrOf(1).replace('.0/24', '.1');
    const outside = await dig(n1!.name, '-b', n1!.underlayIP, `@${gw1}`, 'example.com', 'A');
    expect(outside.stdout).toMatch(/status: REFUSED/);
    expect((await dig(n1!.name, '+short', '-b', n1!.underlayIP, `@${gw1}`, name, 'A')).stdout.trim()).toBe(b!.ip);
    // A pod may have names forwarded (there is no upstream in the lab: anything but REFUSED).
    const inside = await dig(a!.netns, `@${gw1}`, 'example.com', 'A');
    expect(inside.stdout).toMatch(/status: /);
    expect(inside.stdout).not.toMatch(/status: REFUSED/);
  }, 120_000);

  it('a Node created later is handed to the running agents as a seed, and its agent gets its block from it', async () => {
    const index = Math.max(...lab.meta.nodes.map((n) => n.index)) + 1;
    const name = `${PREFIX}-n${index}`;
    const ip = lab.meta.nodes[0]!.underlayIP.replace(/\.\d+$/, `.${10 + index}`);
    server!.upsertNode(nodeObject(name, ip, cidrOf(index)));
    const logOf = (n: string) => readFile(join(lab.handle(n).logDir, 'agent.log'), 'utf8');
    for (const n of lab.meta.nodes) {
      await waitFor(`${n.name} to take ${ip} as a seed`, 20_000, async () => ((await logOf(n.name)).split('\n').some((l) => l.includes('new seeds from kubernetes') && l.includes(`${ip}:`)) ? true : undefined));
    }
    expect(await lab.addNode()).toBe(name);
    expect((await status(name)).node.podCIDRs).toEqual([cidrOf(index)]);
    await waitFor('3 members everywhere', 30_000, async () => {
      for (const n of lab.meta.nodes) if ((await status(n.name)).mesh.members.alive !== 3) return undefined;
      return true;
    });
  }, 120_000);

  it('a pod deleted from the API without a CNI DEL loses its DNS name, on its node and elsewhere', async () => {
    const [a, b, c] = lab.meta.pods;
    const name = `${b!.podName}.${POD_NS}.pod.${ZONE}`;
    const gw = (pod: LabPod) => lab.meta.nodes.find((n) => n.name === pod.node)!.meshIP;
    server!.deletePod(POD_NS, b!.podName);
    // The agent judges a pod only 30 s after its CNI ADD (src/k8s/pod-gc.ts grace).
    for (const from of [a!, c!]) {
      await waitFor(`${name} to be gone for ${from.netns}`, 60_000, async () => ((await dig(from.netns, `@${gw(from)}`, name, 'A')).stdout.includes('status: NXDOMAIN') ? true : undefined), 500);
    }
    // The pods still in the API keep theirs; the deleted pod's address is still allocated (no DEL).
    expect((await dig(c!.netns, '+short', `@${gw(c!)}`, `${a!.podName}.${POD_NS}.pod.${ZONE}`, 'A')).stdout.trim()).toBe(a!.ip);
    const ipam = await lab.client(b!.node).get<{ allocations: { pod?: string }[] }>('/v1/status/ipam');
    expect(ipam.allocations.map((x) => x.pod)).toContain(b!.podName);
  }, 120_000);

  it('with the API server down for a minute, pod-to-pod traffic and DNS keep working throughout', async () => {
    await api!.close();
    const [a, , c] = lab.meta.pods;
    const gwC = lab.meta.nodes.find((n) => n.name === c!.node)!.meshIP;
    // Checked every 10 s across a whole minute: several resyncs and watch reconnect attempts pass,
    // and nothing is withdrawn while the API server is unreachable.
    for (let round = 1; round <= 6; round++) {
      await new Promise((r) => setTimeout(r, 10_000));
      expect(await pingOnce(a!.netns, c!.ip), `ping a->c at ${round * 10} s`).toBe(true);
      expect(await pingOnce(c!.netns, a!.ip), `ping c->a at ${round * 10} s`).toBe(true);
      expect((await dig(c!.netns, '+short', `@${gwC}`, `${a!.podName}.${POD_NS}.pod.${ZONE}`, 'A')).stdout.trim()).toBe(a!.ip);
      expect((await dig(a!.netns, '+short', `@${STUB}`, `${c!.podName}.${POD_NS}.pod.${ZONE}`, 'A')).stdout.trim()).toBe(c!.ip);
    }
    for (const n of lab.meta.nodes) expect((await status(n.name)).ready).toBe(true);
  }, 120_000);

  it('--uninstall removes the --dns-listen address weft added (with weftgw0) and the pod veths', async () => {
    const n = lab.meta.nodes[0]!;
    await lab.stopAgent(n.name, 'term');
    await waitFor(`the agent of ${n.name} to exit`, 30_000, async () => (lab.agentPid(n.name) === undefined ? true : undefined));
    const r = await lab.exec(n.name, [lab.nodeBin, join(lab.repoDir, 'src', 'main.ts'), 'agent', '--uninstall', '--name', n.name, '--backend', lab.meta.backend], { check: false, timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const addrs = JSON.parse((await lab.exec(n.name, ['ip', '-j', 'addr', 'show'])).stdout) as { ifname: string; addr_info: { local: string }[] }[];
    expect(addrs.map((l) => l.ifname)).not.toContain('weftgw0');
    expect(addrs.map((l) => l.ifname).filter((x) => /^wv[0-9a-f]{11}$/.test(x))).toEqual([]);
    expect(addrs.flatMap((l) => l.addr_info.map((x) => x.local))).not.toContain(STUB);
  }, 60_000);
});
