/**
 * Agents on the real mesh protocol over its in-memory simulated network (virtual time), with the
 * real planner and datapath reconciler over fake WireGuard and fake rtnetlink: blocks are claimed
 * through the mesh, peers appear, and a crashed node's peer goes within failure detection.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring, Mesh, SimNetwork, type Timer } from '../../mesh/index.ts';
import { SIM_PORT, simAddr, simIdentity } from '../../mesh/testing/sim-cluster.ts';
import { Agent, type Timers } from '../../src/agent/agent.ts';
import { datapathFrom } from '../../src/agent/components.ts';
import { makePlanFn } from '../../src/agent/plan.ts';
import { MemoryBlockStore } from '../../src/agent/block-store.ts';
import { parseConfig } from '../../src/config.ts';
import { FakeRtNetlink, linkFakes } from '../../src/datapath/rtnetlink-fake.ts';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { noopHostNet } from './fake-ports.ts';

const logger = pino({ level: 'silent' });

/** The agent's timer interface on the simulator's virtual clock. */
function simTimers(net: SimNetwork): Timers {
  const intervals = new Map<number, Timer>();
  let next = 1;
  return {
    setTimeout: (fn, ms) => net.clock.setTimeout(fn, ms),
    clearTimeout: (h) => (h as Timer).cancel(),
    setInterval(fn, ms) {
      const id = next++;
      const arm = (): void => {
        intervals.set(id, net.clock.setTimeout(() => {
          fn();
          if (intervals.has(id)) arm();
        }, ms));
      };
      arm();
      return id;
    },
    clearInterval(h) {
      intervals.get(h as number)?.cancel();
      intervals.delete(h as number);
    },
  };
}

interface SimNode {
  agent: Agent;
  mesh: Mesh;
  fake: FakeWireGuardBackend;
  publicKey: string;
}

let agents: Agent[] = [];
afterEach(async () => {
  await Promise.all(agents.map((a) => a.stop()));
  agents = [];
});

function simNode(net: SimNetwork, i: number, meshKey: Uint8Array): SimNode {
  const name = `node-${i}`;
  const config = parseConfig({ name, listenAddr: simAddr(i), seeds: i === 0 ? '' : `${simAddr(0)}:${SIM_PORT}`, stateDir: '/nonexistent/state', runDir: '/nonexistent/run' }, {});
  const mesh = new Mesh(
    { name, identity: simIdentity(i), keyring: new Keyring(meshKey), bindAddr: simAddr(i), bindPort: SIM_PORT, clock: net.clock, random: net.fork() },
    net.transport(simAddr(i), SIM_PORT),
  );
  const kp = generateKeyPair();
  const fake = new FakeWireGuardBackend();
  const rt = new FakeRtNetlink();
  const agent = new Agent({
    config,
    logger,
    clock: () => net.clock.now(),
    random: net.fork(),
    timers: simTimers(net),
    mesh,
    wgPublicKey: kp.publicKey,
    backendKind: 'fake',
    endpoints: [`${simAddr(i)}:51820`],
    plan: makePlanFn(config, { mtu: 1500, families: [4] }),
    datapath: datapathFrom(linkFakes(fake, rt), rt, { ifname: 'weft0', resyncMs: 0 }, logger, kp.privateKey),
    blockStore: new MemoryBlockStore(),
    hostNet: noopHostNet,
    initialSyncMs: 500,
  });
  agents.push(agent);
  return { agent, mesh, fake, publicKey: kp.publicKey };
}

async function settle<T>(net: SimNetwork, p: Promise<T>): Promise<T> {
  let done = false;
  let value: T | undefined;
  let error: unknown;
  p.then((v) => ((done = true), (value = v)), (e: unknown) => ((done = true), (error = e)));
  for (let i = 0; !done && i < 20_000; i++) await net.runFor(5);
  if (!done) throw new Error('did not settle in virtual time');
  if (error) throw error;
  return value as T;
}

describe('agents on the simulated mesh', () => {
  it('claim distinct blocks, peer with each other, and drop a crashed node within failure detection', async () => {
    const net = new SimNetwork({ seed: 7 });
    const meshKey = new Uint8Array(32).fill(9);
    const nodes: SimNode[] = [];
    for (let i = 0; i < 3; i++) {
      const n = simNode(net, i, meshKey);
      nodes.push(n);
      await settle(net, n.agent.start());
    }
    const converged = (): boolean => nodes.every((n) => n.agent.lastDesired?.peers.length === 2);
    expect(await net.runUntilCondition(converged, 10_000)).toBeDefined();
    await net.runFor(100);
    await Promise.all(nodes.map((n) => settle(net, n.agent.idle())));

    const blocks = nodes.map((n) => n.agent.claim!.podCIDRs[0]);
    expect(new Set(blocks).size).toBe(3);
    for (const n of nodes) {
      const dev = (await n.fake.getDevice('weft0'))!;
      const others = nodes.filter((o) => o !== n);
      expect(dev.peers.map((p) => p.publicKey).sort()).toEqual(others.map((o) => o.publicKey).sort());
      for (const o of others) {
        const peer = dev.peers.find((p) => p.publicKey === o.publicKey)!;
        expect([...peer.allowedIPs].sort()).toEqual([o.agent.claim!.podCIDRs[0], `${o.agent.self!.meshIP}/32`].sort());
      }
    }

    // Crash node 2: no leave, just silence. The others drop it once SWIM declares it dead.
    const crashedAt = net.clock.now();
    net.crash(simAddr(2));
    const gone = (): boolean => nodes.slice(0, 2).every((n) => n.agent.lastDesired?.peers.length === 1);
    const took = await net.runUntilCondition(gone, 60_000);
    expect(took).toBeDefined();
    await net.runFor(50);
    for (const n of nodes.slice(0, 2)) {
      await settle(net, n.agent.idle());
      const dev = (await n.fake.getDevice('weft0'))!;
      expect(dev.peers.map((p) => p.publicKey)).not.toContain(nodes[2]!.publicKey);
    }
    // LAN profile: suspicion timeout is a few seconds at this size; allow generous headroom.
    expect(net.clock.now() - crashedAt).toBeLessThan(30_000);
  });
});
