/**
 * A mesh member: SWIM failure detection with the Lifeguard refinements (local health awareness,
 * suspicion that shrinks with independent confirmations, buddy-system suspect delivery), gossip of
 * membership and signed entries piggybacked on every packet, and TCP push/pull anti-entropy. All I/O
 * goes through the injected transport and clock, so it runs unchanged on sockets and in the simulator.
 */
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { MeshEntry, MeshHandle, MeshSnapshot, MeshStats, MemberState, MemberView } from './api.ts';
import type { Clock, Random, Timer } from './clock.ts';
import { systemClock } from './clock.ts';
import { DecodeError } from './codec.ts';
import { Keyring, SEAL_OVERHEAD, VerifyCache, sealNonce, signWith } from './crypto.ts';
import type { Identity } from './crypto.ts';
import { compareEntries, entrySigningBytes, isLive } from './entries.ts';
import type { SignedEntry } from './entries.ts';
import { BroadcastQueue } from './broadcast-queue.ts';
import { MemberTable } from './member-table.ts';
import type { MemberRecord, SharedMemberView } from './member-table.ts';
import {
  MsgType, PACKET_HEADER_BYTES, StreamType, aliveSigningBytes, decodePacket, decodeStream, encodeMsg, encodeStream, packPacket,
} from './messages.ts';
import { DIGEST_HASH_BYTES } from './messages.ts';
import type { AliveMsg, DeadMsg, MemberDigest, MemberRecordWire, PacketMsg, StreamMsg, SuspectMsg } from './messages.ts';
import { DEFAULT_LIMITS, pushPullInterval, resolveTiming, retransmitLimit, suspicionBounds, suspicionTimeout } from './options.ts';
import type { Limits, Timing } from './options.ts';
import { parseAddress } from './transport.ts';
import type { Address, Transport } from './transport.ts';

/** A caller passed an invalid argument (bad key, oversized payload...). */
export class MeshInputError extends Error {
  override name = 'MeshInputError';
  constructor(message: string) {
    super(`mesh: ${message}`);
  }
}

/** No seed answered during {@link MeshHandle.start}; the member keeps running and retrying. */
export class MeshJoinError extends Error {
  override name = 'MeshJoinError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`mesh join: ${message}`, options);
  }
}

/** Optional synchronous hooks, called on every change (cheap: no snapshot is built). Must not block or throw. */
export interface MeshObserver {
  memberState?(name: string, state: MemberState, incarnation: number): void;
  entry?(owner: string, key: string, version: number, deleted: boolean): void;
}

/** Everything a mesh member needs. Only `name`, `identity`, `keyring` and a bind address are required. */
export interface MeshOptions {
  /** Unique member name (the node name). */
  readonly name: string;
  readonly identity: Identity;
  readonly keyring: Keyring;
  /** Address and port to listen on (UDP and TCP); port 0 picks one (net transport only). */
  readonly bindAddr: string;
  readonly bindPort: number;
  /** Address and port other members should use, if different from the bound ones (NAT, 0.0.0.0). */
  readonly advertiseAddr?: string;
  readonly advertisePort?: number;
  readonly profile?: 'lan' | 'wan' | Partial<Timing>;
  readonly limits?: Partial<Limits>;
  /** Defaults to UDP + TCP on node:dgram / node:net. */
  readonly transport?: Transport;
  readonly clock?: Clock;
  readonly random?: Random;
  readonly logger?: Logger;
  /** Signature cache; may be shared between members in one process (simulations). */
  readonly verifyCache?: VerifyCache;
  /** Pre-verified member view to start from instead of joining (simulations, benchmarks). */
  readonly bootstrap?: SharedMemberView;
  /** Incarnation to start at (a restarted member may pass its last one + 1). */
  readonly incarnation?: number;
  readonly observer?: MeshObserver;
  /**
   * NAT: when at least this many distinct live members observed this member's probes coming from one
   * address:port other than the advertised one (and more of them than saw the advertised one), the
   * member re-advertises itself there with a new signed alive claim at a higher incarnation, so members
   * probe the NAT mapping instead of an unreachable private address. Default 2; 0 disables. Never
   * applies when `advertiseAddr` or `advertisePort` is set: the operator's choice stands.
   */
  readonly readvertiseConfirmations?: number;
}

/** Counters beyond {@link MeshStats}. */
export interface MeshDetailedStats extends MeshStats {
  readonly replayed: number;
  readonly unknownMessages: number;
  readonly membersRejected: number;
  readonly entriesRejected: number;
  readonly unknownOwner: number;
  readonly broadcastsDropped: number;
  readonly refutations: number;
  /** Times this member moved its advertised address to the one members observe (NAT). */
  readonly readvertisements: number;
  readonly awareness: number;
}

interface PendingAck {
  onAck(ack: { observedAddr: string; observedPort: number }, from: Address): void;
  onNack?(): void;
  timer: Timer;
}

interface Suspicion {
  readonly incarnation: number;
  readonly first: string;
  readonly confirmations: Set<string>;
  readonly start: number;
  readonly min: number;
  readonly max: number;
  readonly expected: number;
  timer: Timer;
}

interface Bucket {
  tokens: number;
  last: number;
}

const NO_ENTRIES: ReadonlyMap<string, SignedEntry> = new Map();
const EMPTY_HASH = new Uint8Array(DIGEST_HASH_BYTES);
/** Members whose latest observation of our address is kept (oldest dropped first). */
const OBSERVATIONS_MAX = 256;
/** Members whose direct-ack count is kept (most recently acked first to stay). */
const DIRECT_ACKS_MAX = 4096;
/** Entries of not-yet-known owners kept at most this many, this long. */
const PARKED_MAX = 4096;
const PARKED_MAX_BYTES = 4 * 1024 * 1024;
const PARKED_MS = 30_000;
const NAME_RE = /^[\x21-\x7e]{1,128}$/;

/** A mesh member implementing {@link MeshHandle}. Create with {@link createMesh}. */
export class Mesh implements MeshHandle {
  readonly name: string;
  private readonly identity: Identity;
  private readonly keyring: Keyring;
  private readonly timing: Timing;
  private readonly limits: Limits;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly log: Logger | undefined;
  private readonly verifier: VerifyCache;
  private readonly transport: Transport;
  private readonly observer: MeshObserver | undefined;
  private readonly opts: MeshOptions;

  private readonly members: MemberTable;
  private readonly broadcasts: BroadcastQueue;
  private readonly pending = new Map<number, PendingAck>();
  private readonly suspicions = new Map<string, Suspicion>();
  private readonly timers = new Set<Timer>();
  private readonly buckets = new Map<string, Bucket>();
  private seenNonces = new Set<string>();
  private prevNonces = new Set<string>();
  private nonceRotatedAt = 0;
  private readonly fetching = new Set<string>();
  private readonly listeners = new Set<(s: MeshSnapshot) => void>();
  /** Entry-set hashes per (immutable) member record, computed on demand for anti-entropy. */
  private readonly entryHashes = new WeakMap<ReadonlyMap<string, SignedEntry>, Uint8Array>();
  private readonly views = new WeakMap<MemberRecord, { view: MemberView; validUntil: number }>();
  private readonly parked = new Map<string, { e: SignedEntry; gossip: boolean; at: number }[]>();
  private parkedCount = 0;
  private parkedBytes = 0;
  private readonly preStart = new Map<string, { payload: Uint8Array; expiresAt: number; deleted: boolean }>();

  private incarnation: number;
  private selfAddr: Address = { addr: '', port: 0 };
  private seq = 1;
  private awareness = 0;
  private probing = false;
  private started = false;
  private stopped = false;
  private leaving = false;
  private changeScheduled = false;
  private seeds: Address[] = [];
  private streamsInFlight = 0;
  private observed: Address | undefined;
  /** Per member probed directly: the address:port it last saw our probe come from (NAT discovery). */
  private readonly observations = new Map<string, Address>();
  /** Per member: how many of our probes it answered directly from the probed address (bounded like observations). */
  private readonly directAckCounts = new Map<string, number>();

  private s = {
    packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, decryptFailures: 0, badSignatures: 0, malformed: 0, rateLimited: 0,
    replayed: 0, unknownMessages: 0, membersRejected: 0, entriesRejected: 0, unknownOwner: 0, refutations: 0,
    readvertisements: 0,
  };

  constructor(opts: MeshOptions, transport: Transport) {
    if (!NAME_RE.test(opts.name)) throw new MeshInputError(`invalid member name ${JSON.stringify(opts.name).slice(0, 140)}`);
    this.opts = opts;
    this.name = opts.name;
    this.identity = opts.identity;
    this.keyring = opts.keyring;
    this.timing = resolveTiming(opts.profile);
    this.limits = Object.freeze({ ...DEFAULT_LIMITS, ...opts.limits });
    this.clock = opts.clock ?? systemClock();
    this.random = opts.random ?? Math.random;
    this.log = opts.logger;
    this.verifier = opts.verifyCache ?? new VerifyCache();
    this.transport = transport;
    this.observer = opts.observer;
    this.members = new MemberTable(opts.bootstrap);
    this.broadcasts = new BroadcastQueue(this.limits.maxQueuedBroadcasts);
    this.incarnation = Math.max(opts.incarnation ?? 0, this.members.get(opts.name)?.incarnation ?? 0);
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Binds the transport, announces this member and contacts the seeds (`host:port`) by push/pull.
   * Resolves once one seed answered or there are none; rejects with {@link MeshJoinError} if every
   * seed failed (the member stays up and keeps retrying seeds on its push/pull timer).
   */
  async start(seeds: readonly string[]): Promise<void> {
    if (this.started) throw new MeshInputError('already started');
    this.started = true;
    this.seeds = seeds.map(parseAddress);
    let bound: Address;
    try {
      bound = await this.transport.start({
        packet: (data, from) => this.onPacket(data, from),
        request: (data, from) => this.onRequest(data, from),
      });
    } catch (err) {
      this.started = false; // e.g. port in use: the caller may retry start()
      throw err;
    }
    this.selfAddr = { addr: this.opts.advertiseAddr ?? bound.addr, port: this.opts.advertisePort ?? bound.port };
    const prev = this.members.get(this.name);
    const self = this.signAlive();
    this.members.set({
      name: this.name, alive: self, identityB64: b64(self.identityKey), state: 'alive', incarnation: self.incarnation,
      changedAt: this.now(), entries: prev?.entries ?? NO_ENTRIES,
    });
    for (const [key, w] of this.preStart) this.publish(key, w.payload, w.expiresAt, w.deleted);
    this.preStart.clear();
    // A bootstrap view that already holds exactly this claim needs no announcement.
    const known = prev && prev.alive.incarnation === self.incarnation && prev.alive.addr === self.addr && prev.alive.port === self.port && eq(prev.alive.identityKey, self.identityKey);
    if (!known) this.queueMsg(`m:${this.name}`, self);
    this.schedule(() => this.probeTick(), this.random() * this.timing.probeIntervalMs);
    this.schedule(() => this.gossipTick(), this.random() * this.timing.gossipIntervalMs);
    if (this.timing.pushPullIntervalMs > 0) {
      this.schedule(() => this.pushPullTick(), this.random() * pushPullInterval(this.timing, this.members.size));
    }
    this.schedule(() => this.sweepTick(), 10_000 + this.random() * 1000);
    this.schedule(() => this.reconnectTick(), this.random() * this.timing.reconnectIntervalMs);
    this.changed();
    const others = this.seeds.filter((a) => !(a.addr === this.selfAddr.addr && a.port === this.selfAddr.port));
    if (others.length === 0) return;
    const results = await Promise.allSettled(others.map((a) => this.pushPull(a, true)));
    if (!results.some((r) => r.status === 'fulfilled')) {
      const first = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      throw new MeshJoinError(`no seed answered (${others.length} tried)`, { cause: first?.reason });
    }
  }

  /**
   * Adds seeds (`host:port`) learned after {@link start} (e.g. Nodes that appeared in Kubernetes)
   * and contacts each new one by a join push/pull. Addresses already known as seeds, this member's
   * own address and addresses of live members are skipped; at most 1,000 seeds are kept. Resolves
   * once one new seed answered or there was none to contact; rejects with {@link MeshJoinError} if
   * every new seed failed (they stay seeds: the push/pull timer keeps retrying them while this
   * member knows no one else), with {@link MeshInputError} before start or on a malformed address.
   */
  async join(seeds: readonly string[]): Promise<void> {
    if (!this.started || this.stopped) throw new MeshInputError('join: member not running');
    let parsed: Address[];
    try {
      parsed = seeds.slice(0, 1000).map(parseAddress);
    } catch (err) {
      throw new MeshInputError(`join: ${(err as Error).message}`);
    }
    const same = (a: Address, b: Address): boolean => a.addr === b.addr && a.port === b.port;
    const fresh: Address[] = [];
    for (const a of parsed) {
      if (same(a, this.selfAddr) || this.seeds.some((s) => same(s, a)) || fresh.some((s) => same(s, a))) continue;
      if (this.seeds.length + fresh.length >= 1000) break;
      fresh.push(a);
    }
    if (fresh.length === 0) return;
    this.seeds = [...this.seeds, ...fresh];
    const live = [...this.members.values()].filter((r) => this.isOther(r));
    const contact = fresh.filter((a) => !live.some((r) => r.alive.addr === a.addr && r.alive.port === a.port));
    if (contact.length === 0) return;
    const results = await Promise.allSettled(contact.map((a) => this.pushPull(a, true)));
    if (!results.some((r) => r.status === 'fulfilled')) {
      const first = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      throw new MeshJoinError(`no new seed answered (${contact.length} tried)`, { cause: first?.reason });
    }
  }

  /** Announces a graceful leave and waits until it has been gossiped out, or `timeoutMs`. */
  async leave(timeoutMs = 5000): Promise<void> {
    if (!this.started || this.stopped || this.leaving) return;
    this.leaving = true;
    this.incarnation++;
    const msg: DeadMsg = { type: MsgType.dead, name: this.name, incarnation: this.incarnation, from: this.name };
    const self = this.members.get(this.name)!;
    this.members.set({ ...self, state: 'left', incarnation: this.incarnation, changedAt: this.now() });
    this.changed();
    if (this.members.liveCount === 0) return;
    await new Promise<void>((resolve) => {
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        t.cancel();
        resolve();
      };
      const t = this.clock.setTimeout(finish, timeoutMs);
      this.broadcasts.queue(`m:${this.name}`, encodeMsg(msg), finish);
      this.gossipTick(false);
    });
  }

  /** Stops timers and closes the transport; idempotent. Does not announce a leave. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) t.cancel();
    this.timers.clear();
    for (const p of this.pending.values()) p.timer.cancel();
    this.pending.clear();
    for (const s of this.suspicions.values()) s.timer.cancel();
    this.suspicions.clear();
    await this.transport.stop();
  }

  // ---------------------------------------------------------------- public state API

  /**
   * Publishes (or replaces) an entry this member owns. Never blocks: signs it and queues it for
   * gossip. May be called before `start`; such writes are published when it starts. Throws
   * {@link MeshInputError} on an invalid key, an oversized payload or too many entries.
   */
  setLocal(key: string, payload: Uint8Array, ttlMs = 0): void {
    this.checkKey(key);
    if (!(payload instanceof Uint8Array)) throw new MeshInputError('payload must be a Uint8Array');
    if (payload.length > this.limits.maxEntryPayloadBytes) {
      throw new MeshInputError(`payload of ${payload.length} bytes exceeds ${this.limits.maxEntryPayloadBytes}`);
    }
    if (!(Number.isFinite(ttlMs) && ttlMs >= 0)) throw new MeshInputError('ttlMs must be a non-negative number');
    this.publish(key, new Uint8Array(payload), ttlMs > 0 ? this.now() + Math.ceil(ttlMs) : 0, false);
  }

  /** Deletes an entry this member owns by publishing a tombstone. Never blocks; a no-op if already absent. */
  deleteLocal(key: string): void {
    this.checkKey(key);
    if (!this.started && this.preStart.delete(key)) return;
    const cur = this.members.get(this.name)?.entries.get(key);
    if (!cur || cur.deleted) return;
    this.publish(key, new Uint8Array(0), this.now() + this.timing.tombstoneRetentionMs, true);
  }

  /** An immutable view of every known member and its live entries. O(members + entries). */
  snapshot(): MeshSnapshot {
    const now = this.now();
    const members: MemberView[] = [];
    for (const r of this.members.values()) members.push(this.viewOf(r, now));
    members.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const snap: MeshSnapshot = { self: this.name, members, observedSelf: this.observed };
    return Object.freeze(snap);
  }

  /**
   * The frozen view of a member record, reused across snapshots while the record is unchanged and
   * none of its entries has expired since, so a snapshot costs O(members), not O(entries).
   * Payloads are shared, not copied: listeners must not mutate them.
   */
  private viewOf(r: MemberRecord, now: number): MemberView {
    const cached = this.views.get(r);
    if (cached && now < cached.validUntil) return cached.view;
    const entries = new Map<string, MeshEntry>();
    let validUntil = Infinity;
    for (const [k, e] of r.entries) {
      if (!isLive(e, now)) continue;
      entries.set(k, Object.freeze({ key: e.key, version: e.version, payload: e.payload, expiresAt: e.expiresAt, deleted: false }));
      if (e.expiresAt !== 0 && e.expiresAt < validUntil) validUntil = e.expiresAt;
    }
    const view: MemberView = Object.freeze({
      name: r.name, identityKey: r.identityB64, addr: r.alive.addr, port: r.alive.port, state: r.state, incarnation: r.incarnation, entries,
    });
    this.views.set(r, { view, validUntil });
    return view;
  }

  /** Drop and traffic counters. */
  stats(): MeshDetailedStats {
    return { ...this.s, broadcastsDropped: this.broadcasts.dropped, awareness: this.awareness };
  }

  /** The address and port another member last observed this member's probes coming from (NAT discovery). */
  observedSelf(): Address | undefined {
    return this.observed;
  }

  /**
   * How many of this member's probes `name` answered directly, from the address probed, since start:
   * a count that changes shows the underlay path to it works now (the relay uses it to retry a direct
   * link). 0 for unknown members; a member evicted from the bounded table starts again from 0. Cheap.
   */
  directAcks(name: string): number {
    return this.directAckCounts.get(name) ?? 0;
  }

  /** State of one member, or undefined if unknown. Cheap (no snapshot). */
  memberState(name: string): MemberState | undefined {
    return this.members.get(name)?.state;
  }

  /** Version of one entry as held here (including tombstones), or undefined. Cheap (no snapshot). */
  entryVersion(owner: string, key: string): number | undefined {
    return this.members.get(owner)?.entries.get(key)?.version;
  }

  /** Number of known members and of alive/suspect ones. */
  counts(): { members: number; live: number } {
    return { members: this.members.size, live: this.members.liveCount };
  }

  on(event: 'change', listener: (snapshot: MeshSnapshot) => void): this {
    if (event === 'change') this.listeners.add(listener);
    return this;
  }

  off(event: 'change', listener: (snapshot: MeshSnapshot) => void): this {
    if (event === 'change') this.listeners.delete(listener);
    return this;
  }

  // ---------------------------------------------------------------- helpers

  private now(): number {
    return Math.floor(this.clock.now());
  }

  private checkKey(key: string): void {
    if (typeof key !== 'string' || key.length === 0 || key.includes('\u0000') || Buffer.byteLength(key) > this.limits.maxKeyBytes) {
      throw new MeshInputError(`invalid entry key (1..${this.limits.maxKeyBytes} bytes, no NUL)`);
    }
  }

  private schedule(fn: () => void, ms: number): void {
    if (this.stopped) return;
    const t = this.clock.setTimeout(() => {
      this.timers.delete(t);
      if (this.stopped) return;
      try {
        fn();
      } catch (err) {
        this.log?.error({ err }, 'mesh timer failed');
      }
    }, ms);
    this.timers.add(t);
  }

  private changed(): void {
    if (this.changeScheduled || this.listeners.size === 0 || this.stopped) return;
    this.changeScheduled = true;
    this.schedule(() => {
      this.changeScheduled = false;
      if (this.listeners.size === 0) return;
      const snap = this.snapshot();
      for (const l of [...this.listeners]) {
        try {
          l(snap);
        } catch (err) {
          this.log?.error({ err }, 'mesh change listener threw');
        }
      }
    }, 0);
  }

  private signAlive(): AliveMsg {
    const { addr, port } = this.selfAddr;
    const pk = this.identity.publicKey;
    const signature = signWith(this.identity, aliveSigningBytes(this.name, this.incarnation, addr, port, pk));
    return { type: MsgType.alive, name: this.name, incarnation: this.incarnation, addr, port, identityKey: pk, signature };
  }

  private publish(key: string, payload: Uint8Array, expiresAt: number, deleted: boolean): void {
    const self = this.members.get(this.name);
    if (!self || !this.started || this.selfAddr.port === 0) {
      // Before start: remember the latest write per key; start() publishes them.
      if (!this.preStart.has(key) && this.preStart.size >= this.limits.maxEntriesPerMember) {
        throw new MeshInputError(`more than ${this.limits.maxEntriesPerMember} entries`);
      }
      this.preStart.set(key, { payload, expiresAt, deleted });
      return;
    }
    const prev = self.entries.get(key);
    if (!prev && self.entries.size >= this.limits.maxEntriesPerMember) {
      throw new MeshInputError(`more than ${this.limits.maxEntriesPerMember} entries`);
    }
    const version = Math.max((prev?.version ?? 0) + 1, this.now());
    const body: MeshEntry = { key, version, payload, expiresAt, deleted };
    const entry: SignedEntry = { ...body, owner: this.name, signature: signWith(this.identity, entrySigningBytes(this.name, body)) };
    this.storeEntry(self, entry, true);
  }

  private storeEntry(m: MemberRecord, e: SignedEntry, rebroadcast: boolean): void {
    const entries = new Map(m.entries);
    entries.set(e.key, e);
    this.members.set({ ...m, entries });
    if (rebroadcast) this.queueEntry(e);
    this.observer?.entry?.(e.owner, e.key, e.version, e.deleted);
    this.changed();
  }

  private packetBudget(): number {
    return this.limits.maxPacketBytes - SEAL_OVERHEAD - PACKET_HEADER_BYTES;
  }

  private queueEntry(e: SignedEntry): void {
    const msg = encodeMsg({ type: MsgType.entry, entry: e });
    const id = `e:${e.owner}\u0000${e.key}`;
    if (msg.length <= this.packetBudget()) this.broadcasts.queue(id, msg);
    else this.broadcasts.queue(id, encodeMsg({ type: MsgType.entryDigest, owner: e.owner, key: e.key, version: e.version }));
  }

  private queueMsg(id: string, m: PacketMsg): void {
    this.broadcasts.queue(id, encodeMsg(m));
  }

  private sendMsgs(to: Address, msgs: Uint8Array[], piggyback = true): void {
    if (this.stopped) return;
    let budget = this.packetBudget();
    const out: Uint8Array[] = [];
    for (const m of msgs) {
      if (m.length > budget) break;
      out.push(m);
      budget -= m.length;
    }
    if (piggyback) for (const m of this.broadcasts.take(budget, retransmitLimit(this.timing, this.members.liveCount))) out.push(m);
    if (out.length === 0) return;
    const sealed = this.keyring.seal(packPacket(this.now(), out));
    this.s.packetsOut++;
    this.s.bytesOut += sealed.length;
    this.transport.sendPacket(sealed, to);
  }

  private isOther = (r: MemberRecord): boolean => r.name !== this.name && (r.state === 'alive' || r.state === 'suspect');

  private scaled(ms: number): number {
    return ms * (this.awareness + 1);
  }

  private adjustAwareness(delta: number): void {
    this.awareness = Math.min(this.timing.awarenessMaxMultiplier - 1, Math.max(0, this.awareness + delta));
  }

  private allow(addr: string): boolean {
    const now = this.now();
    let b = this.buckets.get(addr);
    if (!b) {
      if (this.buckets.size >= 4096) this.buckets.delete(this.buckets.keys().next().value!);
      b = { tokens: this.limits.rateLimitBurst, last: now };
      this.buckets.set(addr, b);
    }
    b.tokens = Math.min(this.limits.rateLimitBurst, b.tokens + ((now - b.last) * this.limits.rateLimitPerSec) / 1000);
    b.last = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drops replays: packets sent too long ago (or in the future) and nonces already seen. */
  private fresh(sealed: Uint8Array, sentAt: number): boolean {
    const now = this.now();
    if (Math.abs(now - sentAt) > this.limits.maxClockSkewMs) return false;
    if (now - this.nonceRotatedAt > this.limits.replayWindowMs) {
      this.prevNonces = this.seenNonces;
      this.seenNonces = new Set();
      this.nonceRotatedAt = now;
    }
    const n = Buffer.from(sealNonce(sealed)!.subarray(0, 16)).toString('latin1');
    if (this.seenNonces.has(n) || this.prevNonces.has(n)) return false;
    if (this.seenNonces.size < 65_536) this.seenNonces.add(n);
    return true;
  }

  // ---------------------------------------------------------------- receive path

  private onPacket(data: Uint8Array, from: Address): void {
    if (this.stopped) return;
    this.s.packetsIn++;
    this.s.bytesIn += data.length;
    if (data.length > this.limits.maxPacketBytes) {
      this.s.malformed++;
      return;
    }
    if (!this.allow(from.addr)) {
      this.s.rateLimited++;
      return;
    }
    const plain = this.keyring.open(data);
    if (!plain) {
      this.s.decryptFailures++;
      return;
    }
    let pkt;
    try {
      pkt = decodePacket(plain, this.limits);
    } catch (err) {
      this.s.malformed++;
      if (!(err instanceof DecodeError)) this.log?.warn({ err }, 'unexpected decode failure');
      return;
    }
    if (!this.fresh(data, pkt.sentAt)) {
      this.s.replayed++;
      return;
    }
    this.s.unknownMessages += pkt.unknown;
    for (const m of pkt.msgs) {
      try {
        this.handle(m, from);
      } catch (err) {
        this.s.malformed++;
        this.log?.warn({ err, type: m.type }, 'mesh message handling failed');
      }
    }
  }

  private handle(m: PacketMsg, from: Address): void {
    switch (m.type) {
      case MsgType.ping:
        if (m.target !== this.name) return;
        this.sendMsgs(from, [encodeMsg({ type: MsgType.ack, seq: m.seq, observedAddr: from.addr, observedPort: from.port })]);
        return;
      case MsgType.indirectPing:
        this.handleIndirectPing(m.seq, m.target, { addr: m.addr, port: m.port }, m.nack, from);
        return;
      case MsgType.ack: {
        const p = this.pending.get(m.seq);
        if (p) p.onAck(m, from);
        return;
      }
      case MsgType.nack:
        this.pending.get(m.seq)?.onNack?.();
        return;
      case MsgType.alive: this.handleAlive(m, true); return;
      case MsgType.suspect: this.handleSuspect(m, true); return;
      case MsgType.dead: this.handleDead(m, true); return;
      case MsgType.entry: this.handleEntry(m.entry, true); return;
      case MsgType.entryDigest: this.handleDigest(m.owner, m.key, m.version, from); return;
    }
  }

  private handleIndirectPing(origSeq: number, target: string, _claimed: Address, wantNack: boolean, requester: Address): void {
    // Probe only members we know, at the address we know: no reflecting packets to arbitrary hosts.
    const m = this.members.get(target);
    if (!m || m.name === this.name) return;
    const addr = { addr: m.alive.addr, port: m.alive.port };
    const seq = this.seq++;
    let acked = false;
    const timer = this.clock.setTimeout(() => this.pending.delete(seq), this.timing.probeIntervalMs);
    this.pending.set(seq, {
      timer,
      onAck: () => {
        acked = true;
        this.pending.delete(seq);
        timer.cancel();
        this.sendMsgs(requester, [encodeMsg({ type: MsgType.ack, seq: origSeq, observedAddr: '', observedPort: 0 })]);
      },
    });
    this.sendMsgs(addr, [encodeMsg({ type: MsgType.ping, seq, target, source: this.name })]);
    if (wantNack) {
      this.schedule(() => {
        if (!acked) this.sendMsgs(requester, [encodeMsg({ type: MsgType.nack, seq: origSeq })], false);
      }, Math.floor(this.timing.probeTimeoutMs * 0.8));
    }
  }

  /** Handles an alive claim. `gossip` = learned from gossip (rebroadcast) rather than push/pull. */
  private handleAlive(a: AliveMsg, gossip: boolean): void {
    if (!NAME_RE.test(a.name)) {
      this.s.malformed++;
      return;
    }
    const cur = this.members.get(a.name);
    if (a.name === this.name) {
      if (this.leaving || a.incarnation < this.incarnation) return;
      const mine = cur?.alive;
      if (mine && a.incarnation === mine.incarnation && a.addr === mine.addr && a.port === mine.port && eq(a.identityKey, mine.identityKey)) return;
      this.refute(a.incarnation);
      return;
    }
    if (cur && a.incarnation <= cur.incarnation) return;
    if (cur && !eq(cur.alive.identityKey, a.identityKey)) {
      this.s.badSignatures++;
      return;
    }
    if (!cur && this.members.size >= this.limits.maxMembers) {
      this.s.membersRejected++;
      return;
    }
    if (!this.verifier.verify(a.identityKey, aliveSigningBytes(a.name, a.incarnation, a.addr, a.port, a.identityKey), a.signature)) {
      this.s.badSignatures++;
      return;
    }
    this.cancelSuspicion(a.name);
    this.members.set({
      name: a.name, alive: a, identityB64: cur?.identityB64 ?? b64(a.identityKey), state: 'alive', incarnation: a.incarnation,
      changedAt: this.now(), entries: cur?.entries ?? NO_ENTRIES,
    });
    if (gossip) this.queueMsg(`m:${a.name}`, a);
    if (cur?.state !== 'alive') this.observer?.memberState?.(a.name, 'alive', a.incarnation);
    if (!cur && this.parkedCount > 0) this.unpark(a.name);
    this.changed();
  }

  /** Counts a direct ack of `member`; the map keeps the {@link DIRECT_ACKS_MAX} most recently acked members. */
  private countDirectAck(member: string): void {
    const n = (this.directAckCounts.get(member) ?? 0) + 1;
    this.directAckCounts.delete(member);
    this.directAckCounts.set(member, n);
    if (this.directAckCounts.size > DIRECT_ACKS_MAX) this.directAckCounts.delete(this.directAckCounts.keys().next().value!);
  }

  /**
   * Records where `member` saw our probe come from and re-advertises this member at that address when
   * enough distinct live members agree on it (see {@link MeshOptions.readvertiseConfirmations}). The
   * new address travels in an alive claim signed by our identity key at a higher incarnation: members
   * accept it under the same rules as any alive claim (pinned key, valid signature, higher incarnation).
   */
  private observe(member: string, seen: Address): void {
    const min = this.opts.readvertiseConfirmations ?? 2;
    if (min <= 0 || this.opts.advertiseAddr !== undefined || this.opts.advertisePort !== undefined) return;
    if (parseObserved(seen) === undefined) return;
    this.observations.delete(member);
    this.observations.set(member, { addr: seen.addr, port: seen.port });
    if (this.observations.size > OBSERVATIONS_MAX) this.observations.delete(this.observations.keys().next().value!);
    if (this.leaving || this.stopped) return;
    const counts = new Map<string, number>();
    for (const [name, a] of this.observations) {
      const r = this.members.get(name);
      if (!r || !this.isOther(r)) {
        this.observations.delete(name);
        continue;
      }
      const k = `${a.addr}\u0000${a.port}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    const k = `${seen.addr}\u0000${seen.port}`;
    const n = counts.get(k) ?? 0;
    const current = counts.get(`${this.selfAddr.addr}\u0000${this.selfAddr.port}`) ?? 0;
    if (seen.addr === this.selfAddr.addr && seen.port === this.selfAddr.port) return;
    // More members must see the new address than the advertised one, so members on our own LAN (who
    // see the private address) and members outside (who see the NAT) cannot make it flip back and forth.
    if (n < min || n <= current) return;
    this.log?.info({ from: this.selfAddr, to: seen, confirmations: n }, 'members observe this member at another address (NAT); re-advertising there');
    this.selfAddr = { addr: seen.addr, port: seen.port };
    this.s.readvertisements++;
    this.announceSelf(this.incarnation + 1);
    this.changed();
  }

  /** Signs and spreads an alive claim for this member at `incarnation` and the current address. */
  private announceSelf(incarnation: number): void {
    this.incarnation = incarnation;
    const a = this.signAlive();
    const self = this.members.get(this.name);
    this.members.set({
      name: this.name, alive: a, identityB64: b64(a.identityKey), state: 'alive', incarnation: a.incarnation,
      changedAt: this.now(), entries: self?.entries ?? NO_ENTRIES,
    });
    this.queueMsg(`m:${this.name}`, a);
  }

  private refute(incarnation: number): void {
    this.s.refutations++;
    this.adjustAwareness(1);
    this.announceSelf(Math.max(this.incarnation, incarnation) + 1);
  }

  private handleSuspect(s: SuspectMsg, gossip: boolean): void {
    const cur = this.members.get(s.name);
    if (!cur || s.incarnation < cur.incarnation || cur.state === 'dead' || cur.state === 'left') return;
    if (s.name === this.name) {
      if (!this.leaving) this.refute(s.incarnation);
      return;
    }
    if (cur.state === 'suspect') {
      const susp = this.suspicions.get(s.name);
      // Like memberlist's suspicion.Confirm: confirmations past the expected count change nothing
      // and are not re-gossiped, which keeps a large mesh quiet while a failure is confirmed.
      if (susp && s.from !== susp.first && !susp.confirmations.has(s.from) && susp.confirmations.size < susp.expected) {
        susp.confirmations.add(s.from);
        this.rescheduleSuspicion(s.name, susp);
        if (gossip) this.queueMsg(`m:${s.name}`, s);
      }
      return;
    }
    this.members.set({ ...cur, state: 'suspect', incarnation: s.incarnation, changedAt: this.now() });
    const n = this.members.liveCount;
    const [min, max] = suspicionBounds(this.timing, n);
    let expected = this.timing.suspicionMult - 2;
    if (n - 2 < expected) expected = 0;
    const susp: Suspicion = {
      incarnation: s.incarnation, first: s.from, confirmations: new Set(), start: this.now(), min, max, expected,
      timer: { cancel() {} },
    };
    this.suspicions.set(s.name, susp);
    this.rescheduleSuspicion(s.name, susp);
    this.queueMsg(`m:${s.name}`, s);
    this.observer?.memberState?.(s.name, 'suspect', s.incarnation);
    this.changed();
  }

  private rescheduleSuspicion(name: string, susp: Suspicion): void {
    susp.timer.cancel();
    const timeout = suspicionTimeout(susp.min, susp.max, susp.confirmations.size, susp.expected);
    const remaining = Math.max(0, susp.start + timeout - this.now());
    const t = this.clock.setTimeout(() => {
      this.timers.delete(t);
      if (this.stopped || this.suspicions.get(name) !== susp) return;
      this.suspicions.delete(name);
      const cur = this.members.get(name);
      if (cur && cur.state === 'suspect' && cur.incarnation === susp.incarnation) {
        this.handleDead({ type: MsgType.dead, name, incarnation: susp.incarnation, from: this.name }, true);
      }
    }, remaining);
    this.timers.add(t);
    susp.timer = t;
  }

  private cancelSuspicion(name: string): void {
    const s = this.suspicions.get(name);
    if (s) {
      s.timer.cancel();
      this.timers.delete(s.timer);
      this.suspicions.delete(name);
    }
  }

  private handleDead(d: DeadMsg, gossip: boolean): void {
    const cur = this.members.get(d.name);
    if (!cur || d.incarnation < cur.incarnation || cur.state === 'dead' || cur.state === 'left') return;
    if (d.name === this.name) {
      if (!this.leaving) this.refute(d.incarnation);
      return;
    }
    const state: MemberState = d.from === d.name ? 'left' : 'dead';
    this.cancelSuspicion(d.name);
    this.members.set({ ...cur, state, incarnation: d.incarnation, changedAt: this.now() });
    if (gossip) this.queueMsg(`m:${d.name}`, d);
    this.observer?.memberState?.(d.name, state, d.incarnation);
    this.changed();
  }

  /**
   * Verifies and merges an entry. An entry whose owner we do not know yet (its alive claim is still
   * on its way) is parked, bounded and briefly, and applied when the owner appears.
   */
  private handleEntry(e: SignedEntry, gossip: boolean): void {
    const m = this.members.get(e.owner);
    if (!m) {
      this.s.unknownOwner++;
      this.park(e, gossip);
      return;
    }
    if (Buffer.byteLength(e.key) > this.limits.maxKeyBytes || e.payload.length > this.limits.maxEntryPayloadBytes) {
      this.s.entriesRejected++;
      return;
    }
    const cur = m.entries.get(e.key);
    if (cur && compareEntries(e, cur) <= 0) return;
    if (!cur && m.entries.size >= this.limits.maxEntriesPerMember) {
      this.s.entriesRejected++;
      return;
    }
    if (!this.verifier.verify(m.alive.identityKey, entrySigningBytes(e.owner, e), e.signature)) {
      this.s.badSignatures++;
      return;
    }
    if (e.owner === this.name) {
      // A copy from a previous life of this member that is newer than what we hold: supersede it,
      // with our current content if we have it, or a tombstone if we do not.
      if (this.leaving) return;
      if (cur && !cur.deleted) this.publish(e.key, cur.payload, cur.expiresAt, false);
      else this.publish(e.key, new Uint8Array(0), this.now() + this.timing.tombstoneRetentionMs, true);
      const mine = this.members.get(this.name)!.entries.get(e.key)!;
      if (mine.version <= e.version) {
        // Clock behind the old copy: force a higher version.
        const body: MeshEntry = { key: e.key, version: e.version + 1, payload: mine.payload, expiresAt: mine.expiresAt, deleted: mine.deleted };
        this.storeEntry(this.members.get(this.name)!, { ...body, owner: this.name, signature: signWith(this.identity, entrySigningBytes(this.name, body)) }, true);
      }
      return;
    }
    this.storeEntry(m, e, gossip);
  }

  private park(e: SignedEntry, gossip: boolean): void {
    const now = this.now();
    while (this.parkedCount >= PARKED_MAX || this.parkedBytes + e.payload.length > PARKED_MAX_BYTES) {
      // Drop the oldest owner's parked entries.
      const first = this.parked.entries().next();
      if (first.done) return;
      const [oldest, list] = first.value;
      this.parked.delete(oldest);
      this.parkedCount -= list.length;
      for (const p of list) this.parkedBytes -= p.e.payload.length;
    }
    let list = this.parked.get(e.owner);
    if (!list) {
      list = [];
      this.parked.set(e.owner, list);
    }
    if (list.length >= this.limits.maxEntriesPerMember) return;
    list.push({ e, gossip, at: now });
    this.parkedCount++;
    this.parkedBytes += e.payload.length;
  }

  private unpark(owner: string): void {
    const list = this.parked.get(owner);
    if (!list) return;
    this.parked.delete(owner);
    this.parkedCount -= list.length;
    for (const p of list) this.parkedBytes -= p.e.payload.length;
    const now = this.now();
    for (const p of list) if (now - p.at <= PARKED_MS) this.handleEntry(p.e, p.gossip);
  }

  private handleDigest(owner: string, key: string, version: number, from: Address): void {
    const m = this.members.get(owner);
    if (!m) {
      this.s.unknownOwner++;
      return;
    }
    const cur = m.entries.get(key);
    if (cur && cur.version >= version) return;
    const id = `${owner}\u0000${key}`;
    if (this.fetching.has(id) || this.fetching.size >= 64) return;
    this.fetching.add(id);
    this.streamRequest(from, { type: StreamType.fetch, owner, key, version })
      .then((reply) => {
        if (reply.type === StreamType.fetchReply && reply.entry && reply.entry.owner === owner && reply.entry.key === key) {
          this.handleEntry(reply.entry, true);
        }
      })
      .catch((err: unknown) => this.log?.debug({ err, owner, key }, 'entry fetch failed'))
      .finally(() => this.fetching.delete(id));
  }

  // ---------------------------------------------------------------- streams (push/pull, fetch)

  private async streamRequest(to: Address, msg: StreamMsg): Promise<StreamMsg> {
    const sealed = this.keyring.seal(encodeStream(this.now(), msg));
    if (sealed.length > this.limits.maxStreamBytes) throw new MeshInputError('stream frame exceeds maxStreamBytes');
    this.s.bytesOut += sealed.length;
    const reply = await this.transport.request(to, sealed, this.timing.tcpTimeoutMs);
    this.s.bytesIn += reply.length;
    if (reply.length > this.limits.maxStreamBytes) {
      this.s.malformed++;
      throw new DecodeError('reply exceeds maxStreamBytes');
    }
    const plain = this.keyring.open(reply);
    if (!plain) {
      this.s.decryptFailures++;
      throw new DecodeError('reply failed to open with any mesh key');
    }
    try {
      return decodeStream(plain, this.limits).msg;
    } catch (err) {
      this.s.malformed++;
      throw err;
    }
  }

  private async onRequest(data: Uint8Array, from: Address): Promise<Uint8Array> {
    if (this.stopped) throw new MeshInputError('stopped');
    this.s.bytesIn += data.length;
    if (!this.allow(from.addr)) {
      this.s.rateLimited++;
      throw new MeshInputError('rate limited');
    }
    if (this.streamsInFlight >= this.limits.maxConcurrentStreams) {
      this.s.rateLimited++;
      throw new MeshInputError('too many concurrent streams');
    }
    const plain = data.length <= this.limits.maxStreamBytes ? this.keyring.open(data) : undefined;
    if (!plain) {
      this.s.decryptFailures++;
      throw new DecodeError('request failed to open');
    }
    let req;
    try {
      req = decodeStream(plain, this.limits);
    } catch (err) {
      this.s.malformed++;
      throw err;
    }
    if (Math.abs(this.now() - req.sentAt) > this.limits.maxClockSkewMs) {
      this.s.replayed++;
      throw new DecodeError('stale request');
    }
    this.streamsInFlight++;
    try {
      let reply: StreamMsg;
      const msg = req.msg;
      if (msg.type === StreamType.pushPull) {
        reply = { type: StreamType.pushPullReply, join: false, ...this.localState() };
        // A joiner lists itself first; spread its alive claim like memberlist does, so members
        // that joined earlier learn about it without waiting for anti-entropy.
        if (msg.join && msg.members[0] && msg.members[0].state === 'alive') this.handleAlive(msg.members[0].alive, true);
        this.mergeRemoteState(msg.members, msg.entries);
      } else if (msg.type === StreamType.digest) {
        reply = this.answerDigests(msg.digests);
      } else if (msg.type === StreamType.records) {
        if (msg.join && msg.members[0] && msg.members[0].state === 'alive') this.handleAlive(msg.members[0].alive, true);
        this.mergeRemoteState(msg.members, msg.entries);
        reply = { type: StreamType.recordsAck };
      } else if (msg.type === StreamType.ping) {
        reply = msg.target === this.name ? { type: StreamType.pingAck } : { type: StreamType.error, message: 'not me' };
      } else if (msg.type === StreamType.fetch) {
        const e = this.members.get(msg.owner)?.entries.get(msg.key);
        reply = { type: StreamType.fetchReply, entry: e && e.version >= msg.version ? e : undefined };
      } else {
        reply = { type: StreamType.error, message: `unexpected request type ${msg.type}` };
      }
      const sealed = this.keyring.seal(encodeStream(this.now(), reply));
      this.s.bytesOut += sealed.length;
      return sealed;
    } finally {
      this.streamsInFlight--;
    }
  }

  private localState(): { members: MemberRecordWire[]; entries: SignedEntry[] } {
    const now = this.now();
    const members: MemberRecordWire[] = [];
    const entries: SignedEntry[] = [];
    const self = this.members.get(this.name);
    if (self) members.push({ alive: self.alive, state: self.state, incarnation: self.incarnation });
    for (const r of this.members.values()) {
      if (r.name !== this.name) members.push({ alive: r.alive, state: r.state, incarnation: r.incarnation });
      for (const e of r.entries.values()) if (e.expiresAt === 0 || e.expiresAt > now) entries.push(e);
    }
    return { members, entries };
  }

  private mergeRemoteState(members: readonly MemberRecordWire[], entries: readonly SignedEntry[]): void {
    for (const rec of members) {
      // Unknown members reported dead or left are not learned (memberlist does the same).
      if (rec.state === 'alive' || rec.state === 'suspect') this.handleAlive(rec.alive, false);
    }
    for (const rec of members) {
      const name = rec.alive.name;
      const inc = Math.max(rec.incarnation, rec.alive.incarnation);
      // Like memberlist: a remote "dead" only makes us suspect; a "left" is believed.
      if (rec.state === 'suspect' || rec.state === 'dead') this.handleSuspect({ type: MsgType.suspect, name, incarnation: inc, from: '(push-pull)' }, false);
      else if (rec.state === 'left') this.handleDead({ type: MsgType.dead, name, incarnation: inc, from: name }, false);
    }
    for (const e of entries) this.handleEntry(e, false);
  }

  /**
   * Anti-entropy with one member, in two round trips: send a digest of every member we know; the
   * other side replies with the full records where it knows better or differently, and names the
   * members it wants ours for; we send those. Members with equal digests cost ~30 bytes each.
   */
  private async pushPull(to: Address, join: boolean): Promise<void> {
    // More than one round only when the other side's records did not fit in one frame.
    for (let round = 0; round < 16; round++) {
      const digests = this.localDigests();
      const reply = await this.streamRequest(to, { type: StreamType.digest, join, digests });
      if (reply.type !== StreamType.digestReply) throw new DecodeError(`unexpected reply type ${reply.type}`);
      if (this.stopped) return;
      this.mergeRemoteState(reply.members, reply.entries);
      if (reply.want.length > 0 || (join && round === 0)) {
        // A joiner sends its own record first: the other side spreads it (see onRequest).
        const wanted = [...new Set(join ? [this.name, ...reply.want] : reply.want)].filter((n) => this.members.get(n) !== undefined);
        let first = true;
        for (let i = 0; i < wanted.length; ) {
          const recs = this.recordsFor(wanted.slice(i), this.limits.maxStreamBytes / 2);
          if (recs.members.length === 0) break; // reaped while we were sending
          i += recs.members.length;
          const msg: StreamMsg = { type: StreamType.records, join: join && first && round === 0, members: recs.members, entries: recs.entries };
          first = false;
          const ack = await this.streamRequest(to, msg);
          if (ack.type !== StreamType.recordsAck) throw new DecodeError(`unexpected reply type ${ack.type}`);
        }
      }
      if (!reply.more) return;
    }
  }

  private entriesHash(entries: ReadonlyMap<string, SignedEntry>): Uint8Array {
    if (entries.size === 0) return EMPTY_HASH;
    let h = this.entryHashes.get(entries);
    if (!h) {
      const hasher = createHash('sha256');
      for (const k of [...entries.keys()].sort()) {
        const e = entries.get(k)!;
        hasher.update(`${k}\u0000${e.version}\u0000${e.deleted ? 1 : 0}\u0000`);
        hasher.update(e.signature);
      }
      h = new Uint8Array(hasher.digest().subarray(0, DIGEST_HASH_BYTES));
      this.entryHashes.set(entries, h);
    }
    return h;
  }

  private localDigests(): MemberDigest[] {
    const out: MemberDigest[] = [];
    const self = this.members.get(this.name);
    if (self) out.push({ name: self.name, incarnation: self.incarnation, state: self.state, hash: this.entriesHash(self.entries) });
    for (const r of this.members.values()) {
      if (r.name !== this.name) out.push({ name: r.name, incarnation: r.incarnation, state: r.state, hash: this.entriesHash(r.entries) });
    }
    return out;
  }

  /**
   * Records of the named members with their entries, up to about `budget` encoded bytes (always at
   * least one member). `complete` is false if some were left out for the next round.
   */
  private recordsFor(names: Iterable<string>, budget = Infinity): { members: MemberRecordWire[]; entries: SignedEntry[]; complete: boolean } {
    const now = this.now();
    const members: MemberRecordWire[] = [];
    const entries: SignedEntry[] = [];
    let size = 0;
    for (const name of names) {
      const r = this.members.get(name);
      if (!r) continue;
      let cost = 160 + name.length + r.alive.addr.length;
      const live: SignedEntry[] = [];
      for (const e of r.entries.values()) {
        if (e.expiresAt !== 0 && e.expiresAt <= now) continue;
        live.push(e);
        cost += 100 + e.owner.length + e.key.length + e.payload.length;
      }
      if (members.length > 0 && size + cost > budget) return { members, entries, complete: false };
      size += cost;
      members.push({ alive: r.alive, state: r.state, incarnation: r.incarnation });
      for (const e of live) entries.push(e);
    }
    return { members, entries, complete: true };
  }

  /** Phase 1 on the answering side: our records where digests differ or the asker lacks them, and the names we want. */
  private answerDigests(digests: readonly MemberDigest[]): StreamMsg {
    const seen = new Set<string>();
    const send: string[] = [];
    const want: string[] = [];
    for (const d of digests) {
      if (seen.has(d.name)) continue;
      seen.add(d.name);
      const r = this.members.get(d.name);
      if (!r) {
        if (d.state === 'alive' || d.state === 'suspect' || d.name === this.name) want.push(d.name);
        continue;
      }
      if (r.incarnation === d.incarnation && r.state === d.state && eq(this.entriesHash(r.entries), d.hash)) continue;
      send.push(d.name);
      want.push(d.name);
    }
    for (const r of this.members.values()) if (!seen.has(r.name)) send.push(r.name);
    // Random order, so that when several rounds are needed, records the asker keeps rejecting
    // cannot crowd out the rest round after round.
    for (let i = send.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      [send[i], send[j]] = [send[j]!, send[i]!];
    }
    // Half the frame limit: sealing, framing and estimate slack stay well inside it.
    const { members, entries, complete } = this.recordsFor(send, this.limits.maxStreamBytes / 2);
    return { type: StreamType.digestReply, members, entries, want, more: !complete };
  }

  // ---------------------------------------------------------------- periodic work

  private probeTick(): void {
    this.schedule(() => this.probeTick(), this.timing.probeIntervalMs);
    if (this.probing || this.leaving) return;
    const target = this.members.random(this.random, this.isOther);
    if (target) this.probe(target);
  }

  private probe(target: MemberRecord): void {
    this.probing = true;
    const seq = this.seq++;
    const to = { addr: target.alive.addr, port: target.alive.port };
    const start = this.now();
    let nacks = 0;
    let expectedNacks = 0;
    let finished = false;
    const finish = (delta: number, failed: boolean): void => {
      if (finished) return;
      finished = true;
      this.probing = false;
      const p = this.pending.get(seq);
      p?.timer.cancel();
      this.pending.delete(seq);
      this.adjustAwareness(delta);
      if (failed && !this.stopped) {
        const cur = this.members.get(target.name);
        if (cur && (cur.state === 'alive' || cur.state === 'suspect')) {
          this.handleSuspect({ type: MsgType.suspect, name: cur.name, incarnation: cur.incarnation, from: this.name }, true);
        }
      }
    };
    const msgs = [encodeMsg({ type: MsgType.ping, seq, target: target.name, source: this.name })];
    if (target.state === 'suspect') msgs.push(encodeMsg({ type: MsgType.suspect, name: target.name, incarnation: target.incarnation, from: this.name }));
    let indirect = false;
    const timer = this.clock.setTimeout(() => {
      if (finished || this.stopped) return;
      indirect = true;
      const helpers = this.members.randomK(this.random, this.timing.indirectChecks, (r) => this.isOther(r) && r.name !== target.name);
      expectedNacks = helpers.length;
      for (const h of helpers) {
        this.sendMsgs({ addr: h.alive.addr, port: h.alive.port }, [
          encodeMsg({ type: MsgType.indirectPing, seq, target: target.name, addr: to.addr, port: to.port, nack: true }),
        ]);
      }
      const deadline = start + this.scaled(this.timing.probeIntervalMs);
      // memberlist's TCP fallback: a member reachable over TCP but not UDP is not suspected.
      if (!this.timing.disableTcpPings) this.tcpPing(to, target.name, Math.max(1, deadline - this.now())).then(
        (ok) => {
          if (ok && !finished && !this.stopped) finish(0, false);
        },
        () => {},
      );
      const rest = Math.max(0, deadline - this.now());
      const t2 = this.clock.setTimeout(() => {
        if (finished || this.stopped) return;
        let delta = 0;
        if (expectedNacks > 0) {
          if (nacks < expectedNacks) delta += expectedNacks - nacks;
        } else delta += 1;
        finish(delta, true);
      }, rest);
      const p = this.pending.get(seq);
      if (p) p.timer = t2;
    }, this.scaled(this.timing.probeTimeoutMs));
    this.pending.set(seq, {
      timer,
      onAck: (ack, from) => {
        // Only a direct ack from the address probed counts towards re-advertising: one from
        // elsewhere (spoofed, or a multihomed target answering from another address) does not.
        if (!indirect && ack.observedAddr !== '') {
          this.observed = { addr: ack.observedAddr, port: ack.observedPort };
          if (from.addr === to.addr && from.port === to.port) this.observe(target.name, this.observed);
        }
        if (!indirect && from.addr === to.addr && from.port === to.port) this.countDirectAck(target.name);
        finish(indirect ? 0 : -1, false);
      },
      onNack: () => {
        nacks++;
      },
    });
    this.sendMsgs(to, msgs);
  }

  private async tcpPing(to: Address, target: string, timeoutMs: number): Promise<boolean> {
    const sealed = this.keyring.seal(encodeStream(this.now(), { type: StreamType.ping, target }));
    this.s.bytesOut += sealed.length;
    try {
      const reply = await this.transport.request(to, sealed, timeoutMs);
      this.s.bytesIn += reply.length;
      const plain = this.keyring.open(reply);
      return plain !== undefined && decodeStream(plain, this.limits).msg.type === StreamType.pingAck;
    } catch {
      return false;
    }
  }

  /** Sends queued broadcasts to a few random members; with `reschedule`, runs again after the interval. */
  private gossipTick(reschedule = true): void {
    if (reschedule) this.schedule(() => this.gossipTick(), this.timing.gossipIntervalMs);
    if (this.broadcasts.size === 0) return;
    const now = this.now();
    const targets = this.members.randomK(
      this.random,
      this.timing.gossipNodes,
      (r) => this.isOther(r) || (r.state === 'dead' && now - r.changedAt < this.timing.gossipToTheDeadMs),
    );
    const limit = retransmitLimit(this.timing, this.members.liveCount);
    for (const t of targets) {
      const msgs = this.broadcasts.take(this.packetBudget(), limit);
      if (msgs.length === 0) break;
      this.sendMsgs({ addr: t.alive.addr, port: t.alive.port }, msgs, false);
    }
  }

  private pushPullTick(): void {
    this.schedule(() => this.pushPullTick(), pushPullInterval(this.timing, this.members.size));
    let to: Address | undefined;
    const peer = this.members.random(this.random, this.isOther);
    if (peer) to = { addr: peer.alive.addr, port: peer.alive.port };
    else if (this.seeds.length > 0) to = this.seeds[Math.floor(this.random() * this.seeds.length)];
    if (!to) return;
    this.pushPull(to, !peer).catch((err: unknown) => this.log?.debug({ err, to }, 'push/pull failed'));
  }

  /** Tries a push/pull with one random dead member, so both sides of a healed partition reconcile. */
  private reconnectTick(): void {
    this.schedule(() => this.reconnectTick(), this.timing.reconnectIntervalMs);
    if (this.leaving) return;
    const dead = this.members.randomChanged(this.random, (r) => r.state === 'dead' && r.name !== this.name);
    if (!dead) return;
    this.pushPull({ addr: dead.alive.addr, port: dead.alive.port }, false).catch((err: unknown) =>
      this.log?.debug({ err, member: dead.name }, 'reconnect failed'),
    );
  }

  /** Forgets dead/left members after deadReapMs and purges expired entries and tombstones. */
  private sweepTick(): void {
    this.schedule(() => this.sweepTick(), 10_000);
    const now = this.now();
    const reap: string[] = [];
    const purge: MemberRecord[] = [];
    for (const r of this.members.changed()) {
      if (r.name !== this.name && (r.state === 'dead' || r.state === 'left') && now - r.changedAt > this.timing.deadReapMs) reap.push(r.name);
      else for (const e of r.entries.values()) if (e.expiresAt !== 0 && e.expiresAt < now) { purge.push(r); break; }
    }
    for (const name of reap) this.members.delete(name);
    for (const r of purge) {
      const entries = new Map([...r.entries].filter(([, e]) => e.expiresAt === 0 || e.expiresAt >= now));
      this.members.set({ ...r, entries });
    }
    if (reap.length > 0 || purge.length > 0) this.changed();
  }
}

function eq(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** An observed address worth advertising: a bounded, printable host and a non-zero port. */
function parseObserved(a: Address): Address | undefined {
  if (a.port <= 0 || a.port > 0xffff || a.addr.length === 0 || Buffer.byteLength(a.addr) > 64 || !/^[\x21-\x7e]+$/.test(a.addr)) return undefined;
  return a;
}

function b64(b: Uint8Array): string {
  return Buffer.from(b).toString('base64');
}
