/**
 * NAT (issue 7): a member behind a masquerading router (SimNetwork.nat) learns the address members
 * observe it at and re-advertises itself there, so members stop probing its unreachable private
 * address and it stops flapping suspect/dead/alive.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SimCluster, SIM_PORT, simAddr, simName } from '../testing/sim-cluster.ts';
import { generateIdentity, signWith } from '../crypto.ts';
import { MsgType, aliveSigningBytes, encodeMsg, packPacket } from '../messages.ts';
import { Keyring } from '../crypto.ts';

const PUBLIC = '192.0.2.1';
const range = (n: number): number[] => [...Array(n).keys()];

let cluster: SimCluster | undefined;
afterEach(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

/** A cluster whose members `natted` sit behind one router at {@link PUBLIC}; counts suspicions of each member, everywhere. */
function natCluster(seed: number, profile?: 'lan' | 'wan') {
  const suspected = new Map<string, number>();
  const dead = new Map<string, number>();
  const c = new SimCluster({
    seed,
    profile,
    observer: () => ({
      memberState: (name, st) => {
        if (st === 'suspect') suspected.set(name, (suspected.get(name) ?? 0) + 1);
        if (st === 'dead') dead.set(name, (dead.get(name) ?? 0) + 1);
      },
    }),
  });
  return { c, suspected, dead };
}

/** Starts `outside` members joined through member 0, then the members `natted` (indices after them) behind the NAT. */
async function start(c: SimCluster, outside: number, natted: number, extra: { readvertiseConfirmations?: number } = {}): Promise<void> {
  await c.startJoined(outside);
  for (let i = outside; i < outside + natted; i++) {
    c.net.nat(simAddr(i), PUBLIC);
    const m = c.create(i, extra);
    await c.settle(m.start([`${simAddr(0)}:${SIM_PORT}`]), 20);
  }
}

function seenAt(c: SimCluster, viewer: number, member: number): { addr: string; port: number; state: string } | undefined {
  const v = c.nodes[viewer]!.snapshot().members.find((m) => m.name === simName(member));
  return v && { addr: v.addr, port: v.port, state: v.state };
}

describe('NAT: re-advertise at the observed address', () => {
  it('the simulator NAT reproduces the flapping when re-advertising is off', async () => {
    const { c, suspected } = natCluster(71);
    cluster = c;
    await start(c, 5, 1, { readvertiseConfirmations: 0 });
    await c.net.runFor(60_000);
    // Outside members probe the private address, which they cannot reach: suspected again and again.
    expect(suspected.get(simName(5)) ?? 0).toBeGreaterThan(0);
    expect(c.nodes[5]!.stats().refutations).toBeGreaterThan(0);
    expect(c.nodes[5]!.stats().readvertisements).toBe(0);
    expect(seenAt(c, 0, 5)!.addr).toBe(simAddr(5));
  });

  it('a NATed member re-advertises at its NAT mapping once, then stays alive 60 s with no suspicion', async () => {
    const { c, suspected, dead } = natCluster(72);
    cluster = c;
    await start(c, 5, 1);
    const took = await c.net.runUntilCondition(
      () => range(5).every((i) => {
        const s = seenAt(c, i, 5);
        return s !== undefined && s.addr === PUBLIC && s.port === SIM_PORT && s.state === 'alive';
      }),
      30_000,
      50,
    );
    expect(took).toBeDefined();
    expect(c.nodes[5]!.stats().readvertisements).toBe(1);
    // Let in-flight suspicions from before the move settle, then count from zero.
    await c.net.runFor(10_000);
    suspected.clear();
    dead.clear();
    const inc = c.nodes[5]!.snapshot().members.find((m) => m.name === simName(5))!.incarnation;
    const refutations = c.nodes[5]!.stats().refutations;
    await c.net.runFor(60_000);
    expect(suspected.get(simName(5)) ?? 0).toBe(0);
    expect(dead.get(simName(5)) ?? 0).toBe(0);
    for (const i of range(6)) expect(c.nodes[i]!.counts().live).toBe(6);
    for (const i of range(5)) expect(seenAt(c, i, 5)).toEqual({ addr: PUBLIC, port: SIM_PORT, state: 'alive' });
    expect(c.nodes[5]!.stats().refutations).toBe(refutations);
    expect(c.nodes[5]!.snapshot().members.find((m) => m.name === simName(5))!.incarnation).toBe(inc);
    expect(c.nodes[5]!.stats().readvertisements).toBe(1);
    expect(c.nodes[5]!.observedSelf()).toEqual({ addr: PUBLIC, port: SIM_PORT });
    for (const m of c.nodes) expect(m.stats().badSignatures).toBe(0);
  });

  it('two members behind one NAT (colliding ports) both settle on their mappings, WAN profile too', async () => {
    for (const profile of ['lan', 'wan'] as const) {
      const { c, suspected } = natCluster(73, profile);
      cluster = c;
      await start(c, 4, 2);
      // The second member's port collides on the router: it gets the next free mapping port.
      const expected = new Map([[4, SIM_PORT], [5, 40_000]]);
      const took = await c.net.runUntilCondition(
        () => range(4).every((i) => [4, 5].every((j) => {
          const s = seenAt(c, i, j);
          return s !== undefined && s.addr === PUBLIC && s.port === expected.get(j) && s.state === 'alive';
        })),
        profile === 'wan' ? 120_000 : 30_000,
        50,
      );
      expect(took).toBeDefined();
      await c.net.runFor(profile === 'wan' ? 60_000 : 10_000);
      suspected.clear();
      await c.net.runFor(60_000);
      // They cannot reach each other at the router (no hairpinning) but indirect probes through the
      // outside members do: nobody is suspected.
      expect(suspected.get(simName(4)) ?? 0).toBe(0);
      expect(suspected.get(simName(5)) ?? 0).toBe(0);
      for (const i of range(6)) expect(c.nodes[i]!.counts().live).toBe(6);
      expect(c.nodes[4]!.stats().readvertisements).toBe(1);
      expect(c.nodes[5]!.stats().readvertisements).toBe(1);
      await c.stopAll();
      cluster = undefined;
    }
  });

  it('a NATed member that restarts (same identity) re-advertises again and then stays alive', async () => {
    const { c, suspected } = natCluster(77);
    cluster = c;
    await start(c, 5, 1);
    const atNat = (): boolean => range(5).every((i) => seenAt(c, i, 5)?.addr === PUBLIC && seenAt(c, i, 5)?.state === 'alive');
    expect(await c.net.runUntilCondition(atNat, 30_000, 50)).toBeDefined();
    const incBefore = c.nodes[0]!.snapshot().members.find((m) => m.name === simName(5))!.incarnation;
    await c.nodes[5]!.stop();
    const m = c.create(5, { identity: c.identities[5] });
    await c.settle(m.start([`${simAddr(0)}:${SIM_PORT}`]), 20);
    // It learns its old claim (at the NAT) in the join, refutes it from its private address, then moves again.
    expect(await c.net.runUntilCondition(() => atNat() && m.stats().readvertisements === 1, 30_000, 50)).toBeDefined();
    expect(c.nodes[0]!.snapshot().members.find((x) => x.name === simName(5))!.incarnation).toBeGreaterThan(incBefore);
    await c.net.runFor(10_000);
    suspected.clear();
    await c.net.runFor(60_000);
    expect(suspected.get(simName(5)) ?? 0).toBe(0);
    for (const i of range(6)) expect(c.nodes[i]!.counts().live).toBe(6);
  });

  it('a mesh without NAT never re-advertises and is never suspected', async () => {
    const { c, suspected } = natCluster(74);
    cluster = c;
    await c.startBootstrapped(12);
    await c.net.runFor(60_000);
    expect(suspected.size).toBe(0);
    for (const i of range(12)) {
      expect(c.nodes[i]!.stats().readvertisements).toBe(0);
      expect(c.nodes[i]!.stats().refutations).toBe(0);
      for (const j of range(12)) expect(seenAt(c, i, j)).toEqual({ addr: simAddr(j), port: SIM_PORT, state: 'alive' });
    }
  });

  it('an operator-set advertise address is kept even behind a NAT', async () => {
    const { c } = natCluster(75);
    cluster = c;
    await c.startJoined(4);
    c.net.nat(simAddr(4), PUBLIC);
    const m = c.create(4, { advertiseAddr: simAddr(4) });
    await c.settle(m.start([`${simAddr(0)}:${SIM_PORT}`]), 20);
    await c.net.runFor(20_000);
    expect(m.observedSelf()).toEqual({ addr: PUBLIC, port: SIM_PORT });
    expect(m.stats().readvertisements).toBe(0);
    expect(seenAt(c, 0, 4)?.addr).toBe(simAddr(4));
  });

  it('nobody but the member can move its address: a forged alive at a higher incarnation is refused', async () => {
    const { c } = natCluster(76);
    cluster = c;
    await start(c, 4, 1);
    await c.net.runUntilCondition(() => seenAt(c, 0, 4)?.addr === PUBLIC, 30_000, 50);
    expect(seenAt(c, 0, 4)?.addr).toBe(PUBLIC);
    // A holder of the mesh key with its own signing key claims node-4 moved to its address.
    const thief = generateIdentity();
    const name = simName(4);
    const inc = 1_000;
    const forged = { type: MsgType.alive, name, incarnation: inc, addr: '198.51.100.9', port: SIM_PORT, identityKey: thief.publicKey, signature: signWith(thief, aliveSigningBytes(name, inc, '198.51.100.9', SIM_PORT, thief.publicKey)) } as const;
    // ... and one with node-4's real key but a signature that does not cover the new address.
    const real = c.identities[4]!;
    const stolen = { ...forged, identityKey: real.publicKey, signature: signWith(thief, aliveSigningBytes(name, inc, '198.51.100.9', SIM_PORT, real.publicKey)) };
    const attacker = c.net.transport('198.51.100.9', SIM_PORT);
    await attacker.start({ packet: () => {}, request: async () => new Uint8Array(0) });
    const ring = new Keyring(c.meshKey);
    const before = c.nodes[0]!.stats().badSignatures;
    for (const msg of [forged, stolen]) {
      attacker.sendPacket(ring.seal(packPacket(c.net.clock.now(), [encodeMsg(msg)])), { addr: simAddr(0), port: SIM_PORT });
    }
    await c.net.runFor(5_000);
    expect(c.nodes[0]!.stats().badSignatures).toBe(before + 2);
    expect(seenAt(c, 0, 4)).toEqual({ addr: PUBLIC, port: SIM_PORT, state: 'alive' });
    await attacker.stop();
  });
});
