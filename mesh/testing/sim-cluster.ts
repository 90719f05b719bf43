/**
 * Builds clusters of mesh members on a {@link SimNetwork} for tests and the benchmark: one shared
 * keyring and signature cache, seeded randomness per member, addresses in 198.18.0.0/15.
 */
import { Keyring, VerifyCache, identityFromSeed, signWith } from '../crypto.ts';
import type { Identity } from '../crypto.ts';
import { Mesh } from '../mesh.ts';
import type { MeshObserver } from '../mesh.ts';
import { MsgType, aliveSigningBytes } from '../messages.ts';
import { sharedMemberView } from '../member-table.ts';
import type { MemberRecord, SharedMemberView } from '../member-table.ts';
import type { Limits, Timing } from '../options.ts';
import { SimNetwork } from '../sim.ts';
import type { SimOptions } from '../sim.ts';

/** Port every simulated member listens on. */
export const SIM_PORT = 7946;

/** Deterministic identity for simulated member `i`. */
export function simIdentity(i: number): Identity {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, i + 1);
  seed[31] = 0x5a;
  return identityFromSeed(seed);
}

/** Underlay address of simulated member `i` (198.18.0.0/15). */
export function simAddr(i: number): string {
  return `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 0xff}.${i & 0xff}`;
}

/** Name of simulated member `i`. */
export function simName(i: number): string {
  return `node-${i}`;
}

/** Network options plus what every member of the cluster shares. */
export interface SimClusterOptions extends SimOptions {
  readonly profile?: 'lan' | 'wan' | Partial<Timing>;
  readonly limits?: Partial<Limits>;
  readonly meshKey?: Uint8Array;
  /** Observer factory per member index. */
  readonly observer?: (i: number) => MeshObserver | undefined;
}

/** A set of simulated members on one network. */
export class SimCluster {
  readonly net: SimNetwork;
  readonly nodes: Mesh[] = [];
  readonly identities: Identity[] = [];
  readonly verifyCache = new VerifyCache(1_000_000);
  readonly meshKey: Uint8Array;
  private readonly o: SimClusterOptions;

  constructor(o: SimClusterOptions = {}) {
    this.o = o;
    this.net = new SimNetwork(o);
    this.meshKey = o.meshKey ?? new Uint8Array(32).fill(7);
  }

  /** Creates member `i` (not started). */
  create(
    i: number,
    extra: { bootstrap?: SharedMemberView; keyring?: Keyring; identity?: Identity; incarnation?: number; advertiseAddr?: string; readvertiseConfirmations?: number } = {},
  ): Mesh {
    const identity = extra.identity ?? simIdentity(i);
    this.identities[i] = identity;
    const m = new Mesh(
      {
        name: simName(i),
        identity,
        keyring: extra.keyring ?? new Keyring(this.meshKey),
        bindAddr: simAddr(i),
        bindPort: SIM_PORT,
        profile: this.o.profile,
        limits: this.o.limits,
        clock: this.net.clock,
        random: this.net.fork(),
        verifyCache: this.verifyCache,
        bootstrap: extra.bootstrap,
        incarnation: extra.incarnation,
        observer: this.o.observer?.(i),
        advertiseAddr: extra.advertiseAddr,
        readvertiseConfirmations: extra.readvertiseConfirmations,
      },
      this.net.transport(simAddr(i), SIM_PORT),
    );
    this.nodes[i] = m;
    return m;
  }

  /** Creates and starts `n` members; each joins through member 0, one every `staggerMs` of virtual time. */
  async startJoined(n: number, staggerMs = 20): Promise<void> {
    const first = this.create(0);
    await first.start([]);
    for (let i = 1; i < n; i++) {
      const m = this.create(i);
      const p = m.start([`${simAddr(0)}:${SIM_PORT}`]);
      await this.settle(p, staggerMs);
    }
  }

  /** Runs the simulation until `p` settles (and at least `minMs`), returning its value. */
  async settle<T>(p: Promise<T>, minMs = 0): Promise<T> {
    let done = false;
    let value: T | undefined;
    let error: unknown;
    let failed = false;
    p.then((v) => { done = true; value = v; }, (e: unknown) => { done = true; failed = true; error = e; });
    const start = this.net.clock.now();
    while (!done || this.net.clock.now() - start < minMs) {
      await this.net.runFor(5);
      if (this.net.clock.now() - start > 600_000) throw new Error('sim: promise did not settle in 600 s of virtual time');
    }
    if (failed) throw error;
    return value as T;
  }

  /**
   * Creates `n` members that all start from one shared, pre-verified view of each other (no join
   * phase): O(n) memory and setup, for large simulations.
   */
  async startBootstrapped(n: number): Promise<void> {
    const records: MemberRecord[] = [];
    const now = this.net.clock.now();
    for (let i = 0; i < n; i++) {
      const id = simIdentity(i);
      this.identities[i] = id;
      const name = simName(i);
      const addr = simAddr(i);
      const signature = signWith(id, aliveSigningBytes(name, 0, addr, SIM_PORT, id.publicKey));
      records.push({
        name, alive: { type: MsgType.alive, name, incarnation: 0, addr, port: SIM_PORT, identityKey: id.publicKey, signature },
        identityB64: Buffer.from(id.publicKey).toString('base64'), state: 'alive', incarnation: 0, changedAt: now, entries: new Map(),
      });
    }
    const view = sharedMemberView(records);
    for (let i = 0; i < n; i++) {
      const m = this.create(i, { bootstrap: view, identity: this.identities[i] });
      await m.start([]);
    }
  }

  /** Stops every member. */
  async stopAll(): Promise<void> {
    await Promise.all(this.nodes.filter(Boolean).map((m) => m.stop()));
  }
}
