/**
 * The agent's keepalive policy and link prober wiring (issues 7 and 9), over the fake mesh: a node
 * asks for keepalive only once members see it behind NAT; the prober probes planned peers without a
 * handshake through the injected sender.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.ts';
import { MemoryBlockStore } from '../../src/agent/block-store.ts';
import { makePlanFn } from '../../src/agent/plan.ts';
import { parseConfig } from '../../src/config.ts';
import type { NodeInfo } from '../../src/model.ts';
import type { ProbeSender } from '../../src/relay/prober.ts';
import type { WgDevice } from '../../src/wireguard/backend.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { FakeMesh, FakeMeshNet } from '../agent/fake-mesh.ts';
import { LastDatapath, NattedMesh, noopHostNet } from '../agent/fake-ports.ts';

const logger = pino({ level: 'silent' });

let dir: string;
let net: FakeMeshNet;
let agents: Agent[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wrl-agent-'));
  net = new FakeMeshNet();
});
afterEach(async () => {
  await Promise.all(agents.map((a) => a.stop()));
  agents = [];
  await rm(dir, { recursive: true, force: true });
});

function node(name: string, i: number, mesh: FakeMesh, extra: { sender?: ProbeSender; device?: () => Promise<WgDevice | null> } = {}) {
  const config = parseConfig({ name, listenAddr: `192.0.2.${10 + i}`, podCidr: `10.244.${i}.0/24`, stateDir: join(dir, name), runDir: join(dir, `${name}-run`) }, {});
  const dp = new LastDatapath();
  const agent = new Agent({
    config, logger, clock: Date.now, random: Math.random, mesh, wgPublicKey: generateKeyPair().publicKey, backendKind: 'fake',
    endpoints: [`192.0.2.${10 + i}:51820`], plan: makePlanFn(config, { mtu: 1500, families: [4] }), datapath: dp,
    blockStore: new MemoryBlockStore(), hostNet: noopHostNet, initialSyncMs: 5,
    ...(extra.device ? { readDevice: extra.device } : {}),
    ...(extra.sender ? { prober: { sender: extra.sender, intervalMs: 60_000 } } : {}),
  });
  agents.push(agent);
  return { agent, dp };
}

const published = (mesh: FakeMesh): NodeInfo => JSON.parse(new TextDecoder().decode(mesh.entries.get('node')!.payload)) as NodeInfo;
const settle = async (as: Agent[]) => {
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setImmediate(r));
    await Promise.all(as.map((a) => a.idle()));
  }
};

describe('keepalive only where needed', () => {
  it('a public node asks for no keepalive; once members see it behind NAT it asks for 25 s, and its peers use it', async () => {
    const m1 = net.member('pub') as FakeMesh;
    const m2 = new NattedMesh(net, 'nat');
    const a = node('pub', 1, m1);
    const b = node('nat', 2, m2);
    await a.agent.start();
    await b.agent.start();
    await settle([a.agent, b.agent]);
    expect(published(m1).keepalive).toBe(0);
    expect(published(m2).keepalive).toBe(0);
    expect(a.dp.last!.peers.map((p) => p.persistentKeepalive)).toEqual([0]);

    m2.observed = { addr: '198.18.0.254', port: 7946 };
    b.agent.trigger('test');
    await settle([a.agent, b.agent]);
    expect(published(m2)).toMatchObject({ keepalive: 25, endpoints: ['198.18.0.254:51820', '192.0.2.12:51820'] });
    expect(b.agent.behindNAT).toBe(true);
    expect(a.dp.last!.peers).toMatchObject([{ name: 'nat', endpoint: '198.18.0.254:51820', persistentKeepalive: 25 }]);
    // The NATed side keeps the mapping alive from its end too.
    expect(b.dp.last!.peers).toMatchObject([{ name: 'pub', persistentKeepalive: 25 }]);
  });
});

describe('the agent runs the link prober', () => {
  it('probes a planned peer that never handshook: at once when it is added, then at every pass', async () => {
    const sent: string[] = [];
    const sender: ProbeSender = { send: async (ip) => void sent.push(ip), close: async () => {} };
    const a = node('a', 1, net.member('a'), { sender, device: async () => ({ name: 'weft0', listenPort: 51820, fwmark: 0, peers: [] }) });
    const b = node('b', 2, net.member('b'));
    await a.agent.start();
    await b.agent.start();
    await settle([a.agent, b.agent]);
    expect(a.agent.prober).toBeDefined();
    // The peer was just added: the agent kicked the prober, so it is probed without waiting for a tick.
    for (let i = 0; i < 100 && sent.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(sent).toEqual(['10.244.2.1']);
    expect(a.agent.prober!.stats().ticks).toBeGreaterThanOrEqual(1);
    // Still no handshake: the next periodic pass probes it again.
    await a.agent.prober!.tick();
    expect(sent).toEqual(['10.244.2.1', '10.244.2.1']);
  });
});
