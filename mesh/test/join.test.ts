import { afterEach, describe, expect, it } from 'vitest';
import { SimCluster, SIM_PORT, simAddr, simName } from '../testing/sim-cluster.ts';
import { MeshInputError, MeshJoinError } from '../mesh.ts';

let cluster: SimCluster | undefined;
afterEach(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

const names = (c: SimCluster, i: number): string[] => c.nodes[i]!.snapshot().members.filter((m) => m.state === 'alive').map((m) => m.name).sort();

describe('Mesh.join (seeds learned after start)', () => {
  it('merges two islands that started without knowing each other', async () => {
    const c = (cluster = new SimCluster({ seed: 41 }));
    const a = c.create(0);
    const b = c.create(1);
    const d = c.create(2);
    await a.start([]);
    await b.start([]);
    await c.settle(d.start([`${simAddr(1)}:${SIM_PORT}`]), 50);
    await c.net.runFor(2000);
    expect(names(c, 0)).toEqual([simName(0)]);
    expect(names(c, 1)).toEqual([simName(1), simName(2)]);
    await c.settle(a.join([`${simAddr(1)}:${SIM_PORT}`]));
    const all = [simName(0), simName(1), simName(2)];
    expect(await c.net.runUntilCondition(() => [0, 1, 2].every((i) => names(c, i).join() === all.join()), 30_000)).toBeDefined();
  });

  it('does not contact itself, known seeds or live members again', async () => {
    const c = (cluster = new SimCluster({ seed: 42 }));
    await c.startJoined(2);
    const before = c.nodes[1]!.stats().packetsOut + c.nodes[0]!.stats().packetsIn;
    // Own address and the seed it started with: resolves at once, without a push/pull.
    await c.nodes[1]!.join([`${simAddr(1)}:${SIM_PORT}`, `${simAddr(0)}:${SIM_PORT}`]);
    // Member 0 has no seeds but knows member 1 alive: a new seed at member 1's address is kept, not contacted.
    await c.nodes[0]!.join([`${simAddr(1)}:${SIM_PORT}`]);
    expect(c.nodes[1]!.stats().packetsOut + c.nodes[0]!.stats().packetsIn).toBe(before);
  });

  it('rejects with MeshJoinError when no new seed answers, and with MeshInputError on bad input or before start', async () => {
    const c = (cluster = new SimCluster({ seed: 43 }));
    const a = c.create(0);
    await expect(a.join([`${simAddr(1)}:${SIM_PORT}`])).rejects.toBeInstanceOf(MeshInputError);
    await a.start([]);
    await expect(a.join(['not an address'])).rejects.toBeInstanceOf(MeshInputError);
    await expect(c.settle(a.join([`${simAddr(7)}:${SIM_PORT}`]))).rejects.toBeInstanceOf(MeshJoinError);
    // A failed seed is kept and not contacted twice by join.
    await a.join([`${simAddr(7)}:${SIM_PORT}`]);
  });
});
