import { afterEach, describe, expect, it } from 'vitest';
import { SimCluster, SIM_PORT, simAddr, simName } from '../testing/sim-cluster.ts';
import { Keyring, generateIdentity, signWith } from '../crypto.ts';
import { entrySigningBytes } from '../entries.ts';
import { MsgType, aliveSigningBytes, encodeMsg, packPacket } from '../messages.ts';
import type { PacketMsg } from '../messages.ts';
import { MeshInputError } from '../mesh.ts';
import type { Mesh } from '../mesh.ts';
import type { MeshSnapshot } from '../api.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

let cluster: SimCluster | undefined;
afterEach(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

function allAlive(c: SimCluster, idx: number[], n: number): boolean {
  return idx.every((i) => c.nodes[i]!.counts().live === n);
}

function hasEntry(m: Mesh, owner: string, key: string, version?: number): boolean {
  const v = m.entryVersion(owner, key);
  return v !== undefined && (version === undefined || v >= version);
}

const range = (n: number): number[] => [...Array(n).keys()];

describe('simulated mesh', () => {
  it('20 members join through one seed, agree on membership and replicate every entry', async () => {
    const c = (cluster = new SimCluster({ seed: 11 }));
    await c.startJoined(20);
    expect(await c.net.runUntilCondition(() => allAlive(c, range(20), 20), 30_000)).toBeDefined();
    for (const i of range(20)) c.nodes[i]!.setLocal('node', enc(`info of ${i}`));
    const took = await c.net.runUntilCondition(() => range(20).every((i) => range(20).every((j) => hasEntry(c.nodes[i]!, simName(j), 'node'))), 10_000);
    expect(took).toBeDefined();
    const snap = c.nodes[7]!.snapshot();
    expect(snap.self).toBe(simName(7));
    expect(snap.members).toHaveLength(20);
    const m3 = snap.members.find((m) => m.name === simName(3))!;
    expect(dec(m3.entries.get('node')!.payload)).toBe('info of 3');
    expect(m3.identityKey).toBe(Buffer.from(c.identities[3]!.publicKey).toString('base64'));
    expect(m3.addr).toBe(simAddr(3));
    for (const m of c.nodes) expect(m.stats().badSignatures).toBe(0);
  });

  it('detects a crashed member everywhere, without false positives at 0% loss', async () => {
    const deadSeen: string[] = [];
    const c = (cluster = new SimCluster({ seed: 12, observer: () => ({ memberState: (name, st) => { if (st === 'dead') deadSeen.push(name); } }) }));
    await c.startBootstrapped(30);
    await c.net.runFor(3000);
    c.net.crash(simAddr(29));
    await c.nodes[29]!.stop();
    const took = await c.net.runUntilCondition(() => range(29).every((i) => c.nodes[i]!.memberState(simName(29)) === 'dead'), 60_000, 50);
    expect(took).toBeDefined();
    expect(took!).toBeLessThan(15_000);
    expect(new Set(deadSeen)).toEqual(new Set([simName(29)]));
  });

  it('a suspected member refutes with a higher incarnation and is never declared dead', async () => {
    const states: string[] = [];
    const c = (cluster = new SimCluster({ seed: 13, observer: () => ({ memberState: (name, st) => { if (name === simName(4)) states.push(st); } }) }));
    await c.startBootstrapped(10);
    await c.net.runFor(2000);
    // Cut member 4 off long enough to be suspected, shorter than the suspicion timeout.
    c.net.partition([[simAddr(4)]]);
    await c.net.runUntilCondition(() => states.includes('suspect'), 20_000, 20);
    c.net.heal();
    const ok = await c.net.runUntilCondition(() => range(10).every((i) => c.nodes[i]!.memberState(simName(4)) === 'alive'), 20_000);
    expect(ok).toBeDefined();
    expect(states).not.toContain('dead');
    expect(c.nodes[4]!.stats().refutations).toBeGreaterThan(0);
    const inc = c.nodes[0]!.snapshot().members.find((m) => m.name === simName(4))!.incarnation;
    expect(inc).toBeGreaterThan(0);
  });

  it('heals a partition: both sides declare each other dead, then reconcile state after healing', async () => {
    const c = (cluster = new SimCluster({ seed: 14 }));
    await c.startBootstrapped(10);
    await c.net.runFor(2000);
    const left = range(5).map(simAddr);
    c.net.partition([left]);
    await c.net.runUntilCondition(() => c.nodes[0]!.memberState(simName(9)) === 'dead' && c.nodes[9]!.memberState(simName(0)) === 'dead', 120_000, 100);
    expect(c.nodes[0]!.memberState(simName(9))).toBe('dead');
    c.nodes[1]!.setLocal('k', enc('from the left'));
    c.nodes[8]!.setLocal('k', enc('from the right'));
    await c.net.runFor(5000);
    expect(hasEntry(c.nodes[9]!, simName(1), 'k')).toBe(false);
    c.net.heal();
    const took = await c.net.runUntilCondition(
      () => allAlive(c, range(10), 10) && range(10).every((i) => hasEntry(c.nodes[i]!, simName(1), 'k') && hasEntry(c.nodes[i]!, simName(8), 'k')),
      120_000,
      100,
    );
    expect(took).toBeDefined();
  });

  it('converges entries at 20% packet loss', async () => {
    const c = (cluster = new SimCluster({ seed: 15, loss: 0.2 }));
    await c.startBootstrapped(20);
    await c.net.runFor(2000);
    for (const i of [0, 5, 10]) c.nodes[i]!.setLocal('node', enc(`n${i}`));
    const took = await c.net.runUntilCondition(() => range(20).every((j) => [0, 5, 10].every((i) => hasEntry(c.nodes[j]!, simName(i), 'node'))), 20_000);
    expect(took).toBeDefined();
    expect(range(20).every((j) => c.nodes[j]!.counts().live >= 19)).toBe(true);
  });

  it('a restarted member rejoins with a higher incarnation and its stale entries are superseded', async () => {
    const c = (cluster = new SimCluster({ seed: 16 }));
    await c.startJoined(8);
    await c.net.runUntilCondition(() => allAlive(c, range(8), 8), 30_000);
    c.nodes[7]!.setLocal('pod/a', enc('old pod'));
    await c.net.runUntilCondition(() => range(7).every((i) => hasEntry(c.nodes[i]!, simName(7), 'pod/a')), 10_000);
    c.net.crash(simAddr(7));
    await c.nodes[7]!.stop();
    await c.net.runUntilCondition(() => range(7).every((i) => c.nodes[i]!.memberState(simName(7)) === 'dead'), 120_000, 100);
    const deadInc = c.nodes[0]!.snapshot().members.find((m) => m.name === simName(7))!.incarnation;
    c.net.revive(simAddr(7));
    const again = c.create(7, { identity: c.identities[7] });
    await c.settle(again.start([`${simAddr(0)}:${SIM_PORT}`]));
    again.setLocal('node', enc('new life'));
    const took = await c.net.runUntilCondition(
      () => range(7).every((i) => c.nodes[i]!.memberState(simName(7)) === 'alive' && hasEntry(c.nodes[i]!, simName(7), 'node')),
      30_000,
    );
    expect(took).toBeDefined();
    const view = c.nodes[3]!.snapshot().members.find((m) => m.name === simName(7))!;
    expect(view.incarnation).toBeGreaterThan(deadInc);
    // The pod the old life published and the new one did not is tombstoned, not resurrected.
    await c.net.runUntilCondition(() => range(7).every((i) => !c.nodes[i]!.snapshot().members.find((m) => m.name === simName(7))!.entries.has('pod/a')), 30_000);
    expect(c.nodes[2]!.snapshot().members.find((m) => m.name === simName(7))!.entries.has('pod/a')).toBe(false);
  });

  it('a graceful leave spreads as left, without waiting for suspicion', async () => {
    const c = (cluster = new SimCluster({ seed: 17 }));
    await c.startBootstrapped(12);
    await c.net.runFor(2000);
    const start = c.net.clock.now();
    await c.settle(c.nodes[11]!.leave(3000));
    await c.nodes[11]!.stop();
    const took = await c.net.runUntilCondition(() => range(11).every((i) => c.nodes[i]!.memberState(simName(11)) === 'left'), 10_000);
    expect(took).toBeDefined();
    expect(c.net.clock.now() - start).toBeLessThan(4000);
  });

  it('replicates an entry larger than a datagram (digest + TCP fetch) and 250 pod entries of one node', async () => {
    const c = (cluster = new SimCluster({ seed: 18 }));
    await c.startBootstrapped(15);
    await c.net.runFor(1000);
    const big = new Uint8Array(20_000).map((_, i) => i & 0xff);
    c.nodes[2]!.setLocal('big', big);
    for (let p = 0; p < 250; p++) c.nodes[3]!.setLocal(`pod/default/web-${p}`, enc(JSON.stringify({ name: `web-${p}`, namespace: 'default', ips: [`10.32.3.${p}`] })));
    const took = await c.net.runUntilCondition(
      () => range(15).every((i) => hasEntry(c.nodes[i]!, simName(2), 'big') && c.nodes[i]!.snapshot().members.find((m) => m.name === simName(3))!.entries.size === 250),
      30_000,
      50,
    );
    expect(took).toBeDefined();
    const got = c.nodes[9]!.snapshot().members.find((m) => m.name === simName(2))!.entries.get('big')!;
    expect(Buffer.from(got.payload).equals(Buffer.from(big))).toBe(true);
  });

  it('deletes replicate as tombstones, and a replayed stale copy does not resurrect the entry', async () => {
    const c = (cluster = new SimCluster({ seed: 19 }));
    await c.startBootstrapped(6);
    await c.net.runFor(1000);
    c.nodes[1]!.setLocal('pod/x', enc('x'));
    await c.net.runUntilCondition(() => range(6).every((i) => hasEntry(c.nodes[i]!, simName(1), 'pod/x')), 10_000);
    const stale = c.nodes[1]!.entryVersion(simName(1), 'pod/x')!;
    // Capture the live copy as a forwarder would have it.
    const id = c.identities[1]!;
    const body = { key: 'pod/x', version: stale, payload: enc('x'), expiresAt: 0, deleted: false };
    const staleMsg: PacketMsg = { type: MsgType.entry, entry: { ...body, owner: simName(1), signature: signWith(id, entrySigningBytes(simName(1), body)) } };
    await c.net.runFor(10);
    c.nodes[1]!.deleteLocal('pod/x');
    await c.net.runUntilCondition(() => range(6).every((i) => c.nodes[i]!.entryVersion(simName(1), 'pod/x')! > stale), 10_000);
    const rogue = c.net.transport('198.18.200.1', SIM_PORT);
    await rogue.start({ packet: () => {}, request: async () => new Uint8Array(0) });
    const ring = new Keyring(c.meshKey);
    for (const i of range(6)) rogue.sendPacket(ring.seal(packPacket(c.net.clock.now(), [encodeMsg(staleMsg)])), { addr: simAddr(i), port: SIM_PORT });
    await c.net.runFor(2000);
    for (const i of range(6)) expect(c.nodes[i]!.snapshot().members.find((m) => m.name === simName(1))!.entries.has('pod/x')).toBe(false);
    await rogue.stop();
  });

  it('a member with the mesh key but another signing key cannot overwrite or impersonate another member', async () => {
    const c = (cluster = new SimCluster({ seed: 20 }));
    await c.startBootstrapped(5);
    await c.net.runFor(1000);
    c.nodes[1]!.setLocal('node', enc('genuine subnets 10.32.1.0/24'));
    await c.net.runUntilCondition(() => range(5).every((i) => hasEntry(c.nodes[i]!, simName(1), 'node')), 10_000);
    const before = c.nodes[1]!.entryVersion(simName(1), 'node')!;
    const rogueId = generateIdentity();
    const rogue = c.net.transport('198.18.200.2', SIM_PORT);
    await rogue.start({ packet: () => {}, request: async () => new Uint8Array(0) });
    const ring = new Keyring(c.meshKey);
    const body = { key: 'node', version: before + 1000, payload: enc('stolen subnets 10.32.0.0/16'), expiresAt: 0, deleted: false };
    const forgedEntry: PacketMsg = { type: MsgType.entry, entry: { ...body, owner: simName(1), signature: signWith(rogueId, entrySigningBytes(simName(1), body)) } };
    // And an alive claim for member 1 under the rogue's key, at a higher incarnation.
    const forgedAlive: PacketMsg = {
      type: MsgType.alive, name: simName(1), incarnation: 99, addr: '198.18.200.2', port: SIM_PORT, identityKey: rogueId.publicKey,
      signature: signWith(rogueId, aliveSigningBytes(simName(1), 99, '198.18.200.2', SIM_PORT, rogueId.publicKey)),
    };
    for (const i of range(5)) {
      rogue.sendPacket(ring.seal(packPacket(c.net.clock.now(), [encodeMsg(forgedAlive), encodeMsg(forgedEntry)])), { addr: simAddr(i), port: SIM_PORT });
    }
    await c.net.runFor(3000);
    for (const i of [0, 2, 3, 4]) {
      const n = c.nodes[i]!;
      expect(n.entryVersion(simName(1), 'node')).toBe(before);
      const view = n.snapshot().members.find((m) => m.name === simName(1))!;
      expect(dec(view.entries.get('node')!.payload)).toBe('genuine subnets 10.32.1.0/24');
      expect(view.addr).toBe(simAddr(1));
      expect(n.stats().badSignatures).toBeGreaterThanOrEqual(2);
    }
    await rogue.stop();
  });

  it('drops garbage, wrong-key, oversized, replayed and flooding packets, and keeps working', async () => {
    const c = (cluster = new SimCluster({ seed: 21, limits: { rateLimitPerSec: 200, rateLimitBurst: 400 } }));
    await c.startBootstrapped(4);
    await c.net.runFor(1000);
    const evil = c.net.transport('198.18.200.3', SIM_PORT);
    await evil.start({ packet: () => {}, request: async () => new Uint8Array(0) });
    const to = { addr: simAddr(0), port: SIM_PORT };
    const ring = new Keyring(c.meshKey);
    const wrong = new Keyring(new Uint8Array(32).fill(99));
    evil.sendPacket(new Uint8Array([1, 2, 3]), to);
    evil.sendPacket(wrong.seal(packPacket(c.net.clock.now(), [encodeMsg({ type: MsgType.nack, seq: 1 })])), to);
    evil.sendPacket(ring.seal(new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9])), to);
    evil.sendPacket(new Uint8Array(5000), to);
    evil.sendPacket(ring.seal(packPacket(c.net.clock.now(), [new Uint8Array([250, 0, 1, 0])])), to);
    const once = ring.seal(packPacket(c.net.clock.now(), [encodeMsg({ type: MsgType.nack, seq: 1 })]));
    evil.sendPacket(once, to);
    evil.sendPacket(once, to);
    evil.sendPacket(ring.seal(packPacket(c.net.clock.now() - 3_600_000, [encodeMsg({ type: MsgType.nack, seq: 1 })])), to);
    await c.net.runFor(100);
    for (let i = 0; i < 2000; i++) evil.sendPacket(new Uint8Array(64), to);
    await c.net.runFor(100);
    const s = c.nodes[0]!.stats();
    expect(s.decryptFailures).toBeGreaterThanOrEqual(2);
    expect(s.malformed).toBeGreaterThanOrEqual(2);
    expect(s.replayed).toBe(2);
    expect(s.unknownMessages).toBe(1);
    expect(s.rateLimited).toBeGreaterThan(1000);
    c.nodes[0]!.setLocal('still', enc('working'));
    expect(await c.net.runUntilCondition(() => range(4).every((i) => hasEntry(c.nodes[i]!, simName(0), 'still')), 5000)).toBeDefined();
    await evil.stop();
  });

  it('rotates the mesh key across a live cluster without a partition', async () => {
    const k1 = new Uint8Array(32).fill(1);
    const k2 = new Uint8Array(32).fill(2);
    const c = (cluster = new SimCluster({ seed: 22, meshKey: k1 }));
    const rings = range(6).map(() => new Keyring(k1));
    for (const i of range(6)) c.create(i, { keyring: rings[i]! });
    await c.nodes[0]!.start([]);
    for (const i of range(6).slice(1)) await c.settle(c.nodes[i]!.start([`${simAddr(0)}:${SIM_PORT}`]));
    await c.net.runUntilCondition(() => allAlive(c, range(6), 6), 20_000);
    for (const r of rings) r.install(k2);
    for (const [i, r] of rings.entries()) {
      r.use(k2);
      await c.net.runFor(500);
      c.nodes[i]!.setLocal('step', enc(String(i)));
    }
    for (const r of rings) r.remove(k1);
    c.nodes[5]!.setLocal('after', enc('rotation'));
    const took = await c.net.runUntilCondition(() => range(6).every((i) => hasEntry(c.nodes[i]!, simName(5), 'after') && c.nodes[i]!.counts().live === 6), 10_000);
    expect(took).toBeDefined();
    expect(range(6).every((i) => range(6).every((j) => hasEntry(c.nodes[i]!, simName(j), 'step')))).toBe(true);
    // A member still on the old key alone cannot talk to the mesh.
    const stale = c.create(6, { keyring: new Keyring(k1) });
    await expect(c.settle(stale.start([`${simAddr(0)}:${SIM_PORT}`]))).rejects.toThrow(/no seed answered/);
    expect(c.nodes[0]!.stats().decryptFailures).toBeGreaterThan(0);
  });

  it('emits full snapshots on change, coalesced, and drops expired entries from them', async () => {
    const c = (cluster = new SimCluster({ seed: 23 }));
    await c.startBootstrapped(3);
    await c.net.runFor(500);
    const seen: MeshSnapshot[] = [];
    const listener = (s: MeshSnapshot): void => { seen.push(s); };
    c.nodes[0]!.on('change', listener);
    c.nodes[1]!.setLocal('a', enc('1'), 5000);
    c.nodes[1]!.setLocal('b', enc('2'));
    await c.net.runUntilCondition(() => seen.some((s) => s.members.find((m) => m.name === simName(1))!.entries.size === 2), 5000);
    const last = seen.at(-1)!;
    expect(last.members.map((m) => m.name)).toEqual([simName(0), simName(1), simName(2)]);
    expect(seen.length).toBeLessThanOrEqual(3);
    await c.net.runFor(6000);
    expect(c.nodes[0]!.snapshot().members.find((m) => m.name === simName(1))!.entries.has('a')).toBe(false);
    c.nodes[0]!.off('change', listener);
    const n = seen.length;
    c.nodes[2]!.setLocal('c', enc('3'));
    await c.net.runFor(2000);
    expect(seen.length).toBe(n);
  });

  it('enforces caller and member limits', async () => {
    const c = (cluster = new SimCluster({ seed: 24, limits: { maxMembers: 5, maxEntriesPerMember: 3, maxEntryPayloadBytes: 100 } }));
    await c.startJoined(8);
    await c.net.runFor(5000);
    for (const i of range(8)) expect(c.nodes[i]!.counts().members).toBeLessThanOrEqual(5);
    expect(range(8).some((i) => c.nodes[i]!.stats().membersRejected > 0)).toBe(true);
    const m = c.nodes[0]!;
    expect(() => m.setLocal('x', new Uint8Array(101))).toThrow(MeshInputError);
    expect(() => m.setLocal('', enc('a'))).toThrow(MeshInputError);
    expect(() => m.setLocal('a\u0000b', enc('a'))).toThrow(MeshInputError);
    expect(() => m.setLocal('k'.repeat(300), enc('a'))).toThrow(MeshInputError);
    m.setLocal('1', enc('a'));
    m.setLocal('2', enc('a'));
    m.setLocal('3', enc('a'));
    expect(() => m.setLocal('4', enc('a'))).toThrow(/more than 3 entries/);
  });

  it('reports the address other members observe for it', async () => {
    const c = (cluster = new SimCluster({ seed: 25 }));
    await c.startBootstrapped(3);
    await c.net.runFor(3000);
    expect(c.nodes[1]!.observedSelf()).toEqual({ addr: simAddr(1), port: SIM_PORT });
  });
});

describe('direct reachability (relay retry evidence)', () => {
  it('counts only direct acks: a cut pair stays alive through helpers without counting, and counts again once healed', async () => {
    const c = (cluster = new SimCluster({ seed: 26 }));
    await c.startBootstrapped(5);
    await c.net.runFor(10_000);
    const a = c.nodes[0]!;
    expect(a.directAcks(simName(1))).toBeGreaterThan(0);
    expect(a.directAcks('no-such-member')).toBe(0);
    c.net.blockPair(simAddr(0), simAddr(1));
    await c.net.runFor(2000); // a probe in flight when the cut came may still finish
    const cut = a.directAcks(simName(1));
    const others = a.directAcks(simName(2));
    await c.net.runFor(60_000);
    // Member 1 stays alive (indirect probes through helpers answer) but is no longer counted.
    expect(a.memberState(simName(1))).toBe('alive');
    expect(a.directAcks(simName(1))).toBe(cut);
    expect(a.directAcks(simName(2))).toBeGreaterThan(others);
    c.net.unblockPair(simAddr(0), simAddr(1));
    expect(await c.net.runUntilCondition(() => a.directAcks(simName(1)) > cut, 60_000, 100)).toBeDefined();
  });
});

describe('local writes before start', () => {
  it('are published when the member starts', async () => {
    const c = (cluster = new SimCluster({ seed: 26 }));
    const a = c.create(0);
    await a.start([]);
    const b = c.create(1);
    b.setLocal('early', enc('before start'));
    b.setLocal('gone', enc('x'));
    b.deleteLocal('gone');
    await c.settle(b.start([`${simAddr(0)}:${SIM_PORT}`]));
    expect(await c.net.runUntilCondition(() => hasEntry(a, simName(1), 'early'), 5000)).toBeDefined();
    expect(a.entryVersion(simName(1), 'gone')).toBeUndefined();
  });
});

describe('receive path fuzzing', () => {
  it('sealed, well-framed but hostile messages never crash or stall a member', async () => {
    const fc = (await import('fast-check')).default;
    const c = (cluster = new SimCluster({ seed: 27 }));
    await c.startBootstrapped(3);
    await c.net.runFor(500);
    const evil = c.net.transport('198.18.200.9', SIM_PORT);
    await evil.start({ packet: () => {}, request: async () => new Uint8Array(0) });
    const ring = new Keyring(c.meshKey);
    const valid = [
      encodeMsg({ type: MsgType.alive, name: simName(1), incarnation: 5, addr: simAddr(1), port: SIM_PORT, identityKey: c.identities[1]!.publicKey, signature: new Uint8Array(64) }),
      encodeMsg({ type: MsgType.suspect, name: simName(0), incarnation: 0, from: 'x' }),
      encodeMsg({ type: MsgType.dead, name: simName(2), incarnation: 0, from: 'x' }),
      encodeMsg({ type: MsgType.indirectPing, seq: 1, target: simName(1), addr: '198.18.250.1', port: 1, nack: true }),
      encodeMsg({ type: MsgType.entryDigest, owner: simName(1), key: 'k', version: 9 }),
      encodeMsg({ type: MsgType.ack, seq: 12345, observedAddr: 'x', observedPort: 1 }),
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 0, max: valid.length - 1 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 })), { minLength: 1, maxLength: 5 }),
        async (parts) => {
          const msgs = parts.map(([i, flips]) => {
            const m = new Uint8Array(valid[i]!);
            for (const [p, v] of flips) if (p % m.length >= 3) m[p % m.length] = v;
            return m;
          });
          evil.sendPacket(ring.seal(packPacket(c.net.clock.now(), msgs)), { addr: simAddr(0), port: SIM_PORT });
          await c.net.runFor(20);
        },
      ),
      { numRuns: 300 },
    );
    c.nodes[0]!.setLocal('after-fuzz', enc('ok'));
    expect(await c.net.runUntilCondition(() => [1, 2].every((i) => hasEntry(c.nodes[i]!, simName(0), 'after-fuzz')), 10_000)).toBeDefined();
    expect(c.nodes[0]!.stats().packetsIn).toBeGreaterThan(300);
    await evil.stop();
  });
});

describe('ordering', () => {
  it('an entry that arrives before its owner is known is applied once the owner appears', async () => {
    const c = (cluster = new SimCluster({ seed: 28 }));
    await c.startBootstrapped(2);
    await c.net.runFor(200);
    const id = c.identities[1]!;
    // A member nobody knows yet: its entry and then its alive claim, in separate packets.
    const newcomer = simName(9);
    const rogue = c.net.transport(simAddr(9), SIM_PORT);
    await rogue.start({ packet: () => {}, request: async () => new Uint8Array(0) });
    const ring = new Keyring(c.meshKey);
    const body = { key: 'node', version: 5, payload: enc('hi'), expiresAt: 0, deleted: false };
    const entry: PacketMsg = { type: MsgType.entry, entry: { ...body, owner: newcomer, signature: signWith(id, entrySigningBytes(newcomer, body)) } };
    const alive: PacketMsg = {
      type: MsgType.alive, name: newcomer, incarnation: 1, addr: simAddr(9), port: SIM_PORT, identityKey: id.publicKey,
      signature: signWith(id, aliveSigningBytes(newcomer, 1, simAddr(9), SIM_PORT, id.publicKey)),
    };
    rogue.sendPacket(ring.seal(packPacket(c.net.clock.now(), [encodeMsg(entry)])), { addr: simAddr(0), port: SIM_PORT });
    await c.net.runFor(50);
    expect(c.nodes[0]!.entryVersion(newcomer, 'node')).toBeUndefined();
    rogue.sendPacket(ring.seal(packPacket(c.net.clock.now(), [encodeMsg(alive)])), { addr: simAddr(0), port: SIM_PORT });
    await c.net.runFor(50);
    expect(c.nodes[0]!.entryVersion(newcomer, 'node')).toBe(5);
    await rogue.stop();
  });
});

describe('WAN profile', () => {
  it('runs the same protocol with WAN timing: slower probes, longer suspicion', async () => {
    const c = (cluster = new SimCluster({ seed: 29, profile: 'wan', latencyMs: 40, jitterMs: 20 }));
    await c.startJoined(8, 100);
    expect(await c.net.runUntilCondition(() => allAlive(c, range(8), 8), 60_000, 100)).toBeDefined();
    c.net.crash(simAddr(7));
    await c.nodes[7]!.stop();
    const took = await c.net.runUntilCondition(() => range(7).every((i) => c.nodes[i]!.memberState(simName(7)) === 'dead'), 240_000, 500);
    expect(took).toBeDefined();
    // The suspicion floor alone is 6 * 1 * 5 s = 30 s with WAN timing.
    expect(took!).toBeGreaterThanOrEqual(30_000);
    expect(range(7).every((i) => c.nodes[i]!.counts().live === 7)).toBe(true);
  });
});

describe('snapshots', () => {
  it('reuse the views of unchanged members and rebuild changed or expiring ones', async () => {
    const c = (cluster = new SimCluster({ seed: 30 }));
    await c.startBootstrapped(3);
    await c.net.runFor(500);
    c.nodes[1]!.setLocal('short', enc('x'), 1000);
    await c.net.runUntilCondition(() => hasEntry(c.nodes[0]!, simName(1), 'short'), 5000);
    const a = c.nodes[0]!.snapshot();
    const b = c.nodes[0]!.snapshot();
    expect(b.members[2]).toBe(a.members[2]);
    expect(b.members[1]!.entries.has('short')).toBe(true);
    c.nodes[2]!.setLocal('k', enc('y'));
    await c.net.runUntilCondition(() => hasEntry(c.nodes[0]!, simName(2), 'k'), 5000);
    await c.net.runFor(1500);
    const d = c.nodes[0]!.snapshot();
    expect(d.members[2]).not.toBe(a.members[2]);
    expect(d.members[2]!.entries.has('k')).toBe(true);
    expect(d.members[1]!.entries.has('short')).toBe(false);
  });
});

describe('anti-entropy in several rounds', () => {
  it('a joiner receives a state larger than one stream frame', async () => {
    const limits = { maxStreamBytes: 48 * 1024, maxEntryPayloadBytes: 1024 };
    const c = (cluster = new SimCluster({ seed: 31, limits }));
    await c.startJoined(6);
    for (const i of range(6)) for (let k = 0; k < 20; k++) c.nodes[i]!.setLocal(`pod/${k}`, new Uint8Array(1000).fill(k));
    // 120 KB of entries in all: more than two 48 KiB frames.
    await c.net.runUntilCondition(() => range(6).every((i) => range(6).every((j) => c.nodes[i]!.snapshot().members.find((m) => m.name === simName(j))?.entries.size === 20)), 30_000, 50);
    const joiner = c.create(6);
    await c.settle(joiner.start([`${simAddr(0)}:${SIM_PORT}`]));
    const snap = joiner.snapshot();
    expect(snap.members).toHaveLength(7);
    for (const j of range(6)) expect(snap.members.find((m) => m.name === simName(j))!.entries.size).toBe(20);
    expect(joiner.stats().malformed).toBe(0);
  });
});
