import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.ts';
import { FileBlockStore } from '../../src/agent/block-store.ts';
import { makePlanFn } from '../../src/agent/plan.ts';
import type { DatapathPort, DatapathStats, DnsPort, HostNetPort } from '../../src/agent/ports.ts';
import { parseConfig } from '../../src/config.ts';
import type { DesiredState, NodeInfo, PodRecord, RemoteNode } from '../../src/model.ts';
import { createAgentMetrics } from '../../src/observe/metrics.ts';
import { Health } from '../../src/observe/health.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { FakeMesh, FakeMeshNet } from './fake-mesh.ts';
import type { WgDevice } from '../../src/wireguard/backend.ts';
import { datapathFrom } from '../../src/agent/components.ts';
import { FakeRtNetlink, linkFakes } from '../../src/datapath/rtnetlink-fake.ts';
import { WEFT_RT_PROTO } from '../../src/datapath/rtnetlink.ts';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';

const logger = pino({ level: 'silent' });

/** Records what the agent asks of the datapath; can be told to fail. */
class RecordingDatapath implements DatapathPort {
  applied: DesiredState[] = [];
  failNext = 0;
  #stats = { reconciles: 0, errors: 0, writes: 0, lastDurationMs: 0 };
  async apply(desired: DesiredState): Promise<void> {
    this.#stats.reconciles++;
    if (this.failNext > 0) {
      this.failNext--;
      this.#stats.errors++;
      throw new Error('injected failure');
    }
    this.applied.push(desired);
  }
  stats(): DatapathStats {
    return { ...this.#stats };
  }
  last(): DesiredState | undefined {
    return this.applied.at(-1);
  }
  async stop(): Promise<void> {}
  async uninstall(): Promise<void> {}
}

class RecordingHostNet implements HostNetPort {
  gateways: string[] = [];
  forwarding: (4 | 6)[][] = [];
  async ensureGateway(cidrs: readonly string[]): Promise<void> {
    this.gateways.push(...cidrs);
  }
  async enableForwarding(f: readonly (4 | 6)[]): Promise<void> {
    this.forwarding.push([...f]);
  }
  async removeGateway(): Promise<void> {}
}

class RecordingDns implements DnsPort {
  last: { self: NodeInfo; local: readonly PodRecord[]; remotes: readonly RemoteNode[] } | undefined;
  update(self: NodeInfo, local: readonly PodRecord[], remotes: readonly RemoteNode[]): void {
    this.last = { self, local, remotes };
  }
  async close(): Promise<void> {}
}

interface Node {
  name: string;
  agent: Agent;
  dp: RecordingDatapath;
  host: RecordingHostNet;
  dns: RecordingDns;
  stateDir: string;
  publicKey: string;
}

let dir: string;
let net: FakeMeshNet;
let running: Agent[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wag-agent-'));
  net = new FakeMeshNet();
});
afterEach(async () => {
  await Promise.all(running.map((a) => a.stop()));
  running = [];
  await rm(dir, { recursive: true, force: true });
});

const keys = new Map<string, string>();
function publicKeyOf(name: string): string {
  if (!keys.has(name)) keys.set(name, generateKeyPair().publicKey);
  return keys.get(name)!;
}

function makeNode(name: string, index: number, flags: Record<string, string> = {}, dp: DatapathPort = new RecordingDatapath(), extra: { mesh?: FakeMesh; readDevice?: () => Promise<WgDevice | null>; adoptGraceMs?: number; logger?: Logger; health?: Health } = {}): Node {
  const stateDir = join(dir, name);
  const config = parseConfig({ name, listenAddr: `192.0.2.${10 + index}`, stateDir, runDir: join(dir, `${name}-run`), ...flags }, {});
  const host = new RecordingHostNet();
  const dns = new RecordingDns();
  const publicKey = publicKeyOf(name);
  const agent = new Agent({
    config,
    logger: extra.logger ?? logger,
    clock: Date.now,
    random: Math.random,
    mesh: extra.mesh ?? net.member(name),
    readDevice: extra.readDevice,
    adoptGraceMs: extra.adoptGraceMs,
    wgPublicKey: publicKey,
    backendKind: 'fake',
    endpoints: [`192.0.2.${10 + index}:51820`],
    plan: makePlanFn(config, { mtu: 1500, families: [4] }),
    datapath: dp,
    blockStore: new FileBlockStore(stateDir),
    hostNet: host,
    dns,
    metrics: createAgentMetrics({}, { processMetrics: false }),
    initialSyncMs: 5,
    health: extra.health,
  });
  running.push(agent);
  return { name, agent, dp: dp as RecordingDatapath, host, dns, stateDir, publicKey };
}

async function settle(nodes: Node[]): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setImmediate(r));
    await Promise.all(nodes.map((n) => n.agent.idle()));
  }
}

describe('Agent over a fake mesh', () => {
  it('plans one peer per other node with its block and mesh IP, and routes the cluster CIDR into weft0', async () => {
    const nodes = [0, 1, 2].map((i) => makeNode(`n${i}`, i, { podCidr: `10.244.${i}.0/24` }));
    await Promise.all(nodes.map((n) => n.agent.start()));
    await settle(nodes);
    for (const [i, n] of nodes.entries()) {
      const d = n.dp.last()!;
      expect(d.ifname).toBe('weft0');
      expect(d.mtu).toBe(1440);
      expect(d.addresses).toEqual([`10.244.${i}.1/32`]);
      expect(d.routes).toEqual([{ dst: '10.244.0.0/16', dev: 'weft0' }]);
      const others = nodes.filter((o) => o !== n);
      expect(d.peers.map((p) => p.name)).toEqual(others.map((o) => o.name));
      for (const p of d.peers) {
        const j = Number(p.name.slice(1));
        expect(p.publicKey).toBe(nodes[j]!.publicKey);
        expect(p.endpoint).toBe(`192.0.2.${10 + j}:51820`);
        expect(p.allowedIPs).toEqual([`10.244.${j}.0/24`, `10.244.${j}.1/32`]);
      }
      expect(n.host.gateways).toEqual([`10.244.${i}.1/24`]);
      expect(n.host.forwarding).toEqual([[4]]);
      expect(n.agent.self?.meshIP).toBe(`10.244.${i}.1`);
    }
  });

  it('drops a dead or departed node at the next plan', async () => {
    const nodes = [0, 1, 2].map((i) => makeNode(`n${i}`, i, { podCidr: `10.244.${i}.0/24` }));
    await Promise.all(nodes.map((n) => n.agent.start()));
    await settle(nodes);
    net.kill('n2');
    await settle(nodes);
    expect(nodes[0]!.dp.last()!.peers.map((p) => p.name)).toEqual(['n1']);
    expect(nodes[1]!.dp.last()!.peers.map((p) => p.name)).toEqual(['n0']);
    await nodes[1]!.agent.stop({ leave: true });
    await settle([nodes[0]!]);
    expect(nodes[0]!.dp.last()!.peers).toEqual([]);
    expect(nodes[0]!.dp.last()!.routes).toEqual([{ dst: '10.244.0.0/16', dev: 'weft0' }]);
  });

  it('claims distinct blocks, persists them, and adopts the stored block on restart', async () => {
    const nodes = [0, 1, 2].map((i) => makeNode(`n${i}`, i));
    for (const n of nodes) await n.agent.start();
    await settle(nodes);
    const blocks = nodes.map((n) => n.agent.claim!.podCIDRs[0]!);
    expect(new Set(blocks).size).toBe(3);
    for (const b of blocks) expect(b).toMatch(/^10\.244\.\d+\.0\/24$/);
    const claimedAt = nodes[0]!.agent.claim!.claimedAt;

    await nodes[0]!.agent.stop();
    const again = makeNode('n0', 0);
    await again.agent.start();
    await settle([again, nodes[1]!, nodes[2]!]);
    expect(again.agent.claim).toEqual({ podCIDRs: [blocks[0]], claimedAt });
    expect(again.dp.last()).toEqual(nodes[0]!.dp.last());
  });

  it('re-claims when it loses its block to an older claim, and both sides agree on the winner', async () => {
    const older = makeNode('old', 0);
    const store = new FileBlockStore(join(dir, 'new'));
    await store.save({ podCIDRs: ['10.244.77.0/24'], claimedAt: Date.now() + 10_000 });
    await new FileBlockStore(older.stateDir).save({ podCIDRs: ['10.244.77.0/24'], claimedAt: Date.now() - 10_000 });
    const newer = makeNode('new', 1);
    await older.agent.start();
    await newer.agent.start();
    await settle([older, newer]);
    expect(older.agent.claim!.podCIDRs).toEqual(['10.244.77.0/24']);
    expect(newer.agent.claim!.podCIDRs).not.toEqual(['10.244.77.0/24']);
    expect(await store.load()).toEqual(newer.agent.claim);
    const newBlock = newer.agent.claim!.podCIDRs[0]!;
    expect(older.dp.last()!.peers[0]!.allowedIPs).toContain(newBlock);
    expect(newer.dp.last()!.peers[0]!.allowedIPs).toContain('10.244.77.0/24');
    expect(newer.host.gateways.at(-1)).toBe(newBlock.replace('.0/24', '.1/24'));
  });

  it('publishes local pods and withdraws deleted ones; remotes see them for DNS', async () => {
    const [a, b] = [0, 1].map((i) => makeNode(`n${i}`, i, { podCidr: `10.244.${i}.0/24` })) as [Node, Node];
    await a.agent.start();
    await b.agent.start();
    a.agent.setLocalPods([
      { name: 'web', namespace: 'default', ips: ['10.244.0.2'] },
      { name: 'db', namespace: 'prod', ips: ['10.244.0.3'] },
    ]);
    await settle([a, b]);
    const podsOfA = (): string[] => b.dns.last!.remotes.find((r) => r.info.name === 'n0')!.pods.map((p) => `${p.namespace}/${p.name}=${p.ips.join(',')}`).sort();
    expect(podsOfA()).toEqual(['default/web=10.244.0.2', 'prod/db=10.244.0.3']);
    expect(a.dns.last!.local.map((p) => p.name)).toEqual(['web', 'db']);

    a.agent.setLocalPods([{ name: 'web', namespace: 'default', ips: ['10.244.0.2'] }]);
    await settle([a, b]);
    expect(podsOfA()).toEqual(['default/web=10.244.0.2']);
  });

  it('keeps turning after a failed datapath apply and retries at the next trigger', async () => {
    const dp = new RecordingDatapath();
    dp.failNext = 1;
    const a = makeNode('n0', 0, { podCidr: '10.244.0.0/24' }, dp);
    await a.agent.start();
    expect((await a.agent.status()).ready).toBe(false);
    expect(dp.applied).toEqual([]);
    const b = makeNode('n1', 1, { podCidr: '10.244.1.0/24' });
    await b.agent.start();
    await settle([a, b]);
    expect(dp.last()!.peers.map((p) => p.name)).toEqual(['n1']);
    expect((await a.agent.status()).ready).toBe(true);
  });

  it('reports status with peers named from the plan', async () => {
    const nodes = [0, 1].map((i) => makeNode(`n${i}`, i, { podCidr: `10.244.${i}.0/24` }));
    await Promise.all(nodes.map((n) => n.agent.start()));
    await settle(nodes);
    const s = await nodes[0]!.agent.status();
    expect(s.node).toMatchObject({ name: 'n0', backend: 'fake', meshIP: '10.244.0.1', podCIDRs: ['10.244.0.0/24'], listenPort: 51820, mtu: 1440, ifname: 'weft0' });
    expect(s.mesh.members.alive).toBe(2);
    expect(s.peers).toEqual([expect.objectContaining({ name: 'n1', endpoint: '192.0.2.11:51820', state: 'alive' })]);
  });
});

describe('Agent with the real datapath reconciler over fake WireGuard and fake rtnetlink', () => {
  interface DpNode extends Node {
    fake: FakeWireGuardBackend;
    rt: FakeRtNetlink;
  }
  const privateKeys = new Map<string, string>();
  function dpNode(name: string, i: number, shared?: { fake: FakeWireGuardBackend; rt: FakeRtNetlink }, failJoin = false, adoptGraceMs?: number): DpNode {
    if (!privateKeys.has(name)) {
      const kp = generateKeyPair();
      privateKeys.set(name, kp.privateKey);
      keys.set(name, kp.publicKey);
    }
    const fake = shared ? new FakeWireGuardBackend({ sharedWith: shared.fake }) : new FakeWireGuardBackend();
    const rt = shared?.rt ?? new FakeRtNetlink();
    if (!rt.hasLink('eth0')) rt.createLink('eth0', { mtu: 1500, up: true });
    const dp = datapathFrom(linkFakes(fake, rt), rt, { ifname: 'weft0', resyncMs: 3_600_000 }, logger, privateKeys.get(name)!);
    const mesh = net.member(name);
    mesh.failJoin = failJoin;
    const n = makeNode(name, i, { podCidr: `10.244.${i}.0/24`, seeds: failJoin ? '192.0.2.99:7946' : '' }, dp, { mesh, readDevice: () => fake.getDevice('weft0'), adoptGraceMs });
    return { ...n, fake, rt };
  }
  const peersOf = async (n: DpNode) => Object.fromEntries(((await n.fake.getDevice('weft0'))?.peers ?? []).map((p) => [p.publicKey, [...p.allowedIPs].sort()]));

  it('puts the planned peers and routes on the device, removes a departed node, and a restart adopts with zero writes', async () => {
    const nodes = [0, 1, 2].map((i) => dpNode(`n${i}`, i));
    await Promise.all(nodes.map((n) => n.agent.start()));
    await settle(nodes);
    const [a, b, c] = nodes as [DpNode, DpNode, DpNode];
    expect(await peersOf(a)).toEqual({ [b.publicKey]: ['10.244.1.0/24', '10.244.1.1/32'], [c.publicKey]: ['10.244.2.0/24', '10.244.2.1/32'] });
    const dev = (await a.fake.getDevice('weft0'))!;
    expect(dev.listenPort).toBe(51820);
    expect(dev.peers.find((p) => p.publicKey === b.publicKey)!.endpoint).toBe('192.0.2.11:51820');
    // Fail-closed: every weft route for the cluster CIDR goes into weft0 (blackhole fallbacks, if the datapath adds any, carry no device).
    const routes = a.rt.allRoutes().filter((r) => r.protocol === WEFT_RT_PROTO && (r as { type?: string }).type !== 'blackhole').map((r) => `${r.dst} ${r.dev}`);
    expect(routes).toEqual(['10.244.0.0/16 weft0']);
    expect(await a.rt.listAddresses('weft0')).toEqual(['10.244.0.1/32']);
    expect((await a.agent.status()).ready).toBe(true);

    net.kill('n2');
    await settle(nodes);
    await a.agent.idle();
    expect(Object.keys(await peersOf(a))).toEqual([b.publicKey]);
    expect(Object.keys(await peersOf(b))).toEqual([a.publicKey]);

    // Restart n0 over the same "kernel": nothing is rewritten.
    await a.agent.stop();
    const setCalls = a.fake.counters.setCalls;
    const rtWrites = a.rt.writes;
    const again = dpNode('n0', 0, { fake: a.fake, rt: a.rt });
    await again.agent.start();
    await settle([again, b]);
    await again.agent.idle();
    expect(again.agent.claim!.podCIDRs).toEqual(['10.244.0.0/24']);
    expect(a.fake.counters.setCalls).toBe(setCalls);
    expect(a.rt.writes).toBe(rtWrites);
    expect(Object.keys(await peersOf(again))).toEqual([b.publicKey]);
    const status = await again.agent.status();
    expect(status.peers.map((p) => [p.name, p.state])).toEqual([['n1', 'alive']]);
  });

  it.each([
    ['seeds that do not answer', true],
    ['no seeds at all', false],
  ])('after a restart with %s, leaves the existing peers alone until another member is heard', async (_what, failJoin) => {
    const [a, b] = [dpNode('n0', 0), dpNode('n1', 1)];
    await a.agent.start();
    await b.agent.start();
    await settle([a, b]);
    expect(Object.keys(await peersOf(a))).toEqual([b.publicKey]);
    await a.agent.stop();
    await b.agent.stop({ leave: true });
    net.members.delete('n1');
    const setCalls = a.fake.counters.setCalls;
    const again = dpNode('n0', 0, { fake: a.fake, rt: a.rt }, failJoin);
    await again.agent.start();
    await settle([again]);
    expect(a.fake.counters.setCalls).toBe(setCalls);
    expect(Object.keys(await peersOf(again))).toEqual([b.publicKey]);
    expect((await again.agent.status()).ready).toBe(false);
    expect(again.agent.lastDesired?.peers).toEqual([]);
    const c = dpNode('n2', 2);
    await c.agent.start();
    await settle([again, c]);
    expect(Object.keys(await peersOf(again))).toEqual([c.publicKey]);
  });
});

describe('resync', () => {
  it('re-ensures the gateway device on every resync (drift repair on the node side)', async () => {
    const a = makeNode('n0', 0, { podCidr: '10.244.0.0/24' });
    await a.agent.start();
    await settle([a]);
    expect(a.host.gateways).toEqual(['10.244.0.1/24']);
    a.agent.trigger('resync');
    await settle([a]);
    expect(a.host.gateways).toEqual(['10.244.0.1/24', '10.244.0.1/24']);
  });
});

describe('audit trail and hostile pod sets', () => {
  it('refuses a fixed --pod-cidr that overlaps a block another cloud already holds: one error line naming both CIDRs and the holder', async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    // Cloud 1 hands out /23 blocks; the joiner from cloud 2 was configured with a /24 inside one of them.
    const holder = makeNode('cloud1-a', 0, { podCidr: '10.244.0.0/23', blockSize: '23' });
    await holder.agent.start();
    await settle([holder]);
    const health = new Health({ clock: Date.now, maxLoopAgeMs: 60_000 });
    const joiner = makeNode('cloud2-a', 1, { podCidr: '10.244.1.0/24' }, undefined, { logger: capture, health });
    await joiner.agent.start();
    await settle([holder, joiner]);
    for (let i = 0; i < 3; i++) joiner.agent.trigger('resync');
    await settle([holder, joiner]);
    const errors = lines.filter((l) => l.level === 50);
    expect(errors.map((l) => l.msg)).toEqual([
      'fixed --pod-cidr refused: pod CIDR 10.244.1.0/24 overlaps 10.244.0.0/23, already held by node cloud1-a (older claim); give --pod-cidr a block no other node holds',
    ]);
    expect(errors[0]).toMatchObject({ block: '10.244.1.0/24', overlaps: '10.244.0.0/23', holder: 'cloud1-a' });
    expect(health.readyz().checks.ipam).toEqual({ ok: false, detail: errors[0]!.msg });
    expect(health.readyz().ok).toBe(false);
    // The holder's planner gives the block to itself and never routes it to the joiner.
    expect(holder.dp.last()!.peers.find((p) => p.name === 'cloud2-a')?.allowedIPs ?? []).not.toContain('10.244.1.0/24');
  });

  it('logs one audit line per peer added and removed, and never a key file content', async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const a = makeNode('n0', 0, { podCidr: '10.244.0.0/24' }, undefined, { logger: capture });
    const b = makeNode('n1', 1, { podCidr: '10.244.1.0/24' });
    await a.agent.start();
    await b.agent.start();
    await settle([a, b]);
    net.kill('n1');
    await settle([a]);
    const audit = lines.filter((l) => l.audit === true).map((l) => [l.event, l.peer, l.meshState]);
    expect(audit).toEqual([['peer-added', 'n1', undefined], ['peer-removed', 'n1', 'dead']]);
    expect(lines.every((l) => l.component !== undefined)).toBe(true);
  });

  it('a pod entry the mesh refuses is dropped and counted; the others are published', async () => {
    const mesh = net.member('n0');
    mesh.refuse = (key) => key.includes('huge');
    const a = makeNode('n0', 0, { podCidr: '10.244.0.0/24' }, undefined, { mesh });
    const b = makeNode('n1', 1, { podCidr: '10.244.1.0/24' });
    await a.agent.start();
    await b.agent.start();
    expect(() => a.agent.setLocalPods([{ name: 'huge', namespace: 'default', ips: ['10.244.0.2'] }, { name: 'web', namespace: 'default', ips: ['10.244.0.3'] }])).not.toThrow();
    await settle([a, b]);
    expect(b.dns.last!.remotes.find((r) => r.info.name === 'n0')!.pods.map((p) => p.name)).toEqual(['web']);
  });
});

describe('pods gone in Kubernetes without a CNI DEL', () => {
  it('are withdrawn from the mesh and the local DNS table while hidden, and come back when unhidden', async () => {
    const a = makeNode('n0', 0, { podCidr: '10.244.0.0/24' });
    const b = makeNode('n1', 1, { podCidr: '10.244.1.0/24' });
    await a.agent.start();
    await b.agent.start();
    a.agent.setLocalPods([{ name: 'web', namespace: 'default', ips: ['10.244.0.2'] }, { name: 'old', namespace: 'default', ips: ['10.244.0.3'] }]);
    await settle([a, b]);
    const remotePods = () => b.dns.last!.remotes.find((r) => r.info.name === 'n0')!.pods.map((p) => p.name).sort();
    expect(remotePods()).toEqual(['old', 'web']);
    a.agent.setHiddenPods(['default/old']);
    await settle([a, b]);
    expect(remotePods()).toEqual(['web']);
    expect(a.dns.last!.local.map((p) => p.name)).toEqual(['web']);
    a.agent.setHiddenPods([]);
    await settle([a, b]);
    expect(remotePods()).toEqual(['old', 'web']);
  });
});

describe('restart adoption grace', () => {
  it('a node left alone applies its plan once the grace period is over', async () => {
    const fake = new FakeWireGuardBackend();
    const rt = new FakeRtNetlink();
    const kp = generateKeyPair();
    let current = fake;
    const mk = (grace: number) => {
      current = new FakeWireGuardBackend({ sharedWith: fake });
      const wg = current;
      const dp = datapathFrom(linkFakes(wg, rt), rt, { ifname: 'weft0', resyncMs: 3_600_000 }, logger, kp.privateKey);
      return makeNode('n0', 0, { podCidr: '10.244.0.0/24' }, dp, { mesh: net.member('n0'), readDevice: () => wg.getDevice('weft0'), adoptGraceMs: grace });
    };
    const a = mk(60_000);
    await a.agent.start();
    await current.setDevice('weft0', { peers: [{ publicKey: generateKeyPair().publicKey, allowedIPs: ['10.244.9.0/24'] }] });
    await a.agent.stop();
    const b = mk(100);
    await b.agent.start();
    expect((await current.getDevice('weft0'))!.peers).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 250));
    await b.agent.idle();
    expect((await current.getDevice('weft0'))!.peers).toHaveLength(0);
    expect((await b.agent.status()).ready).toBe(true);
  });
});

describe('pod entries across a restart', () => {
  it('withdraws pods that vanished while the agent was down, and keeps the others without rewriting them', async () => {
    const a = makeNode('n0', 0, { podCidr: '10.244.0.0/24' });
    const b = makeNode('n1', 1, { podCidr: '10.244.1.0/24' });
    await a.agent.start();
    await b.agent.start();
    const web = { name: 'web', namespace: 'default', ips: ['10.244.0.2'] };
    a.agent.setLocalPods([web, { name: 'db', namespace: 'default', ips: ['10.244.0.3'] }]);
    await settle([a, b]);
    await a.agent.stop();
    const mesh = net.member('n0');
    const again = makeNode('n0', 0, { podCidr: '10.244.0.0/24' }, undefined, { mesh });
    await again.agent.start();
    await settle([again, b]);
    const writesBefore = mesh.writes;
    expect(b.dns.last!.remotes.find((r) => r.info.name === 'n0')!.pods.map((p) => p.name).sort()).toEqual(['db', 'web']);
    again.agent.setLocalPods([web]);
    await settle([again, b]);
    expect(mesh.writes - writesBefore).toBe(1);
    expect(b.dns.last!.remotes.find((r) => r.info.name === 'n0')!.pods.map((p) => p.name)).toEqual(['web']);
  });
});
