/**
 * An in-memory network with a virtual clock, seeded randomness, latency, packet loss, partitions
 * and crashes. Each member gets a {@link Transport} bound to its own address, so the protocol runs
 * exactly as on sockets. Events live in a binary heap: the cost of a step is O(log events), never
 * O(members), so 10,000 members simulate in seconds.
 */
import type { Clock, Random, Timer } from './clock.ts';
import { seededRandom } from './clock.ts';
import { TransportError } from './transport.ts';
import type { Address, Transport, TransportHandlers } from './transport.ts';

interface SimEvent {
  at: number;
  seq: number;
  fn: (() => void) | undefined;
}

/** A virtual clock driven by {@link SimNetwork.run}. Time only moves when the simulation runs. */
export class SimClock implements Clock {
  private heap: SimEvent[] = [];
  private seq = 0;
  private time: number;

  constructor(start = 1_700_000_000_000) {
    this.time = start;
  }

  /** Whole milliseconds (events may be scheduled at fractions, e.g. jittered latency). */
  now(): number {
    return Math.floor(this.time);
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const ev: SimEvent = { at: this.time + Math.max(0, ms), seq: this.seq++, fn };
    this.push(ev);
    return { cancel: () => { ev.fn = undefined; } };
  }

  /** Number of scheduled (possibly cancelled) events. */
  get pending(): number {
    return this.heap.length;
  }

  /** Time of the next event, or undefined if none. */
  peekTime(): number | undefined {
    return this.heap[0]?.at;
  }

  /** Pops and runs the next event if it is due at or before `until`; returns false otherwise. */
  step(until: number): boolean {
    const top = this.heap[0];
    if (top === undefined || top.at > until) return false;
    this.pop();
    this.time = Math.max(this.time, top.at);
    const fn = top.fn;
    if (fn) fn();
    return true;
  }

  /** Moves time forward to `t` (no events run). */
  advanceTo(t: number): void {
    if (t > this.time) this.time = t;
  }

  private less(a: SimEvent, b: SimEvent): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(ev: SimEvent): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}

/** Options of a simulated network. */
export interface SimOptions {
  readonly seed?: number;
  /** One-way latency in ms (default 1) plus uniform jitter in [0, jitterMs) (default 1). */
  readonly latencyMs?: number;
  readonly jitterMs?: number;
  /** Probability that a datagram is lost (default 0). Streams are reliable unless partitioned. */
  readonly loss?: number;
  readonly startTime?: number;
}

/** One NAT mapping: a private endpoint's public port, and the remotes it sent to (which may answer). */
interface NatMapping {
  readonly inside: Address;
  readonly port: number;
  readonly peers: Set<string>;
}

/** A NAT router: its public address, the mappings by public port and by private endpoint. */
interface SimNat {
  readonly publicAddr: string;
  readonly byPort: Map<number, NatMapping>;
  readonly byInside: Map<string, NatMapping>;
  nextPort: number;
}

/** Traffic counters of one simulated address. */
export interface SimCounters {
  packetsSent: number;
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
}

/** Order-independent key of an address pair. */
function pairKey(a: string, b: string): string {
  return a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`;
}

/** The simulated network: make transports with {@link transport}, then drive time with {@link run}. */
export class SimNetwork {
  readonly clock: SimClock;
  /** Seeded randomness of the network (loss, jitter); members should get their own via {@link fork}. */
  readonly random: Random;
  loss: number;
  latencyMs: number;
  jitterMs: number;
  private readonly endpoints = new Map<string, SimTransport>();
  private readonly down = new Set<string>();
  private groups: Map<string, number> | undefined;
  /** Pairs cut by {@link blockPair}, as {@link pairKey}s. */
  private readonly blockedPairs = new Set<string>();
  /** NAT routers by public address, and the router each private address sits behind. */
  private readonly nats = new Map<string, SimNat>();
  private readonly behind = new Map<string, SimNat>();
  private readonly seed: number;
  private forks = 0;
  /** Set when a promise was settled, so {@link run} yields to let continuations run in order. */
  needsFlush = false;
  readonly counters = new Map<string, SimCounters>();
  totalBytes = 0;
  totalPackets = 0;

  constructor(opts: SimOptions = {}) {
    this.seed = opts.seed ?? 1;
    this.clock = new SimClock(opts.startTime);
    this.random = seededRandom(this.seed);
    this.loss = opts.loss ?? 0;
    this.latencyMs = opts.latencyMs ?? 1;
    this.jitterMs = opts.jitterMs ?? 1;
  }

  /** A new independent seeded random source derived from the network's seed. */
  fork(): Random {
    return seededRandom(this.seed * 7919 + ++this.forks);
  }

  /** A transport bound to `addr:port`. */
  transport(addr: string, port: number): SimTransport {
    return new SimTransport(this, { addr, port });
  }

  /** @internal */
  register(t: SimTransport): void {
    const k = key(t.local);
    if (this.endpoints.has(k)) throw new TransportError(`sim: address in use ${k}`);
    this.endpoints.set(k, t);
  }

  /** @internal */
  unregister(t: SimTransport): void {
    if (this.endpoints.get(key(t.local)) === t) this.endpoints.delete(key(t.local));
  }

  /** Cuts the network into groups of addresses; traffic only flows within a group. Unlisted addresses form one more group. */
  partition(groups: readonly (readonly string[])[]): void {
    this.groups = new Map();
    groups.forEach((g, i) => g.forEach((a) => this.groups!.set(a, i + 1)));
  }

  /** Removes every partition. */
  heal(): void {
    this.groups = undefined;
  }

  /** Makes an address unreachable (a crashed host): everything to or from it is dropped. */
  crash(addr: string): void {
    this.down.add(addr);
  }

  /** Brings a crashed address back. */
  revive(addr: string): void {
    this.down.delete(addr);
  }

  /**
   * Puts `privateAddr` behind a NAT router with public address `publicAddr` (several private addresses
   * may share one router: they form a LAN and reach each other's private addresses directly). Like
   * Linux masquerade with one socket per member: outbound datagrams leave from `publicAddr` on a
   * mapping per private endpoint (its own port when free on the router, else the next one from 40000);
   * inbound datagrams reach the private endpoint only through its mapping and only from a remote it
   * sent to (address- and port-dependent filtering). No hairpinning: a member behind the router cannot
   * reach the router's public address. Streams (TCP) cross outbound only. Mappings never expire.
   */
  nat(privateAddr: string, publicAddr: string): void {
    if (this.behind.has(privateAddr) || this.behind.has(publicAddr) || this.nats.has(privateAddr)) {
      throw new TransportError(`sim: ${privateAddr} or ${publicAddr} is already part of a NAT`);
    }
    let nat = this.nats.get(publicAddr);
    if (!nat) {
      nat = { publicAddr, byPort: new Map(), byInside: new Map(), nextPort: 40_000 };
      this.nats.set(publicAddr, nat);
    }
    this.behind.set(privateAddr, nat);
  }

  /**
   * Where a datagram or stream from `from` to `to` goes through the NATs, and the source the receiver
   * sees; undefined if a NAT drops it. Outbound traffic creates the mapping and permits the remote.
   */
  private route(from: Address, to: Address, stream: boolean): { src: Address; dst: Address } | undefined {
    const mine = this.behind.get(from.addr);
    const theirs = this.behind.get(to.addr);
    if (theirs) return mine === theirs ? { src: from, dst: to } : undefined; // a private address: same LAN only
    const router = this.nats.get(to.addr);
    if (router && mine === router) return undefined; // no hairpinning
    const src = mine ? this.mapOut(mine, from, to) : from;
    if (!router) return { src, dst: to };
    if (stream) return undefined; // no inbound connections through a NAT
    const m = router.byPort.get(to.port);
    if (!m || !m.peers.has(key(src))) return undefined;
    return { src, dst: m.inside };
  }

  private mapOut(nat: SimNat, inside: Address, to: Address): Address {
    let m = nat.byInside.get(key(inside));
    if (!m) {
      let port = inside.port;
      while (nat.byPort.has(port)) port = nat.nextPort++;
      m = { inside, port, peers: new Set() };
      nat.byInside.set(key(inside), m);
      nat.byPort.set(port, m);
    }
    m.peers.add(key(to));
    return { addr: nat.publicAddr, port: m.port };
  }

  /** Drops all traffic between `a` and `b` (both ways) while both still reach everyone else: a non-transitive cut, as a firewall between two hosts makes. */
  blockPair(a: string, b: string): void {
    this.blockedPairs.add(pairKey(a, b));
  }

  /** Undoes {@link blockPair}. */
  unblockPair(a: string, b: string): void {
    this.blockedPairs.delete(pairKey(a, b));
  }

  /** True if traffic can flow from `a` to `b`. */
  reachable(a: string, b: string): boolean {
    if (this.down.has(a) || this.down.has(b)) return false;
    if (this.blockedPairs.size > 0 && this.blockedPairs.has(pairKey(a, b))) return false;
    if (!this.groups) return true;
    return (this.groups.get(a) ?? 0) === (this.groups.get(b) ?? 0);
  }

  private counter(addr: string): SimCounters {
    let c = this.counters.get(addr);
    if (!c) {
      c = { packetsSent: 0, bytesSent: 0, packetsReceived: 0, bytesReceived: 0 };
      this.counters.set(addr, c);
    }
    return c;
  }

  private delay(): number {
    return this.latencyMs + (this.jitterMs > 0 ? this.random() * this.jitterMs : 0);
  }

  /** @internal */
  sendPacket(from: Address, to: Address, data: Uint8Array): void {
    const c = this.counter(from.addr);
    c.packetsSent++;
    c.bytesSent += data.length;
    this.totalBytes += data.length;
    this.totalPackets++;
    const routed = this.nats.size === 0 ? { src: from, dst: to } : this.route(from, to, false);
    if (!routed) return;
    const { src, dst: inner } = routed;
    if (!this.reachable(from.addr, inner.addr)) return;
    if (this.loss > 0 && this.random() < this.loss) return;
    // No copy: transports hand over freshly sealed buffers and never reuse them.
    const copy = data;
    this.clock.setTimeout(() => {
      if (!this.reachable(from.addr, inner.addr)) return;
      const dst = this.endpoints.get(key(inner));
      if (!dst) return;
      const rc = this.counter(inner.addr);
      rc.packetsReceived++;
      rc.bytesReceived += copy.length;
      dst.deliverPacket(copy, src);
    }, this.delay());
  }

  /** @internal */
  request(from: Address, to: Address, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const c = this.counter(from.addr);
    c.bytesSent += data.length;
    this.totalBytes += data.length;
    return new Promise<Uint8Array>((resolve, reject) => {
      let done = false;
      const settle = (err: Error | undefined, v?: Uint8Array): void => {
        if (done) return;
        done = true;
        timer.cancel();
        this.needsFlush = true;
        if (err) reject(err);
        else resolve(v!);
      };
      const timer = this.clock.setTimeout(() => settle(new TransportError(`sim: request to ${key(to)} timed out`)), timeoutMs);
      const copy = new Uint8Array(data);
      const routed = this.nats.size === 0 ? { src: from, dst: to } : this.route(from, to, true);
      this.clock.setTimeout(() => {
        const dst = routed && this.endpoints.get(key(routed.dst));
        if (!routed || !dst || !this.reachable(from.addr, to.addr)) {
          settle(new TransportError(`sim: connect to ${key(to)} refused`));
          return;
        }
        this.counter(to.addr).bytesReceived += copy.length;
        this.needsFlush = true;
        dst.deliverRequest(copy, routed.src).then(
          (reply) => {
            this.needsFlush = true;
            this.counter(to.addr).bytesSent += reply.length;
            this.totalBytes += reply.length;
            this.clock.setTimeout(() => {
              if (!this.reachable(from.addr, to.addr)) settle(new TransportError('sim: connection reset'));
              else settle(undefined, reply);
            }, this.delay());
          },
          (err: unknown) => settle(new TransportError('sim: remote closed the stream', { cause: err })),
        );
      }, this.delay());
    });
  }

  /**
   * Runs events until virtual time `until` (inclusive), yielding to the microtask queue whenever a
   * stream promise settled so async continuations run before later events. Returns events run.
   */
  async runUntil(until: number): Promise<number> {
    let n = 0;
    for (;;) {
      if (this.needsFlush) {
        this.needsFlush = false;
        await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      if (!this.clock.step(until)) break;
      n++;
    }
    this.clock.advanceTo(until);
    if (this.needsFlush) {
      this.needsFlush = false;
      await new Promise<void>((r) => setImmediate(r));
    }
    return n;
  }

  /** Runs for `ms` of virtual time. */
  runFor(ms: number): Promise<number> {
    return this.runUntil(this.clock.now() + ms);
  }

  /** Runs in steps of `stepMs` until `cond()` holds or `maxMs` elapsed; returns the virtual ms taken, or undefined on timeout. */
  async runUntilCondition(cond: () => boolean, maxMs: number, stepMs = 10): Promise<number | undefined> {
    const start = this.clock.now();
    while (!cond()) {
      if (this.clock.now() - start >= maxMs) return undefined;
      await this.runFor(stepMs);
    }
    return this.clock.now() - start;
  }
}

function key(a: Address): string {
  return `${a.addr}:${a.port}`;
}

/** A member's endpoint on a {@link SimNetwork}. */
export class SimTransport implements Transport {
  readonly local: Address;
  private readonly net: SimNetwork;
  private handlers: TransportHandlers | undefined;

  constructor(net: SimNetwork, local: Address) {
    this.net = net;
    this.local = local;
  }

  async start(handlers: TransportHandlers): Promise<Address> {
    this.net.register(this);
    this.handlers = handlers;
    return this.local;
  }

  sendPacket(data: Uint8Array, to: Address): void {
    if (!this.handlers) return;
    this.net.sendPacket(this.local, to, data);
  }

  request(to: Address, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (!this.handlers) return Promise.reject(new TransportError('sim: transport not started'));
    return this.net.request(this.local, to, data, timeoutMs);
  }

  async stop(): Promise<void> {
    this.net.unregister(this);
    this.handlers = undefined;
  }

  /** @internal */
  deliverPacket(data: Uint8Array, from: Address): void {
    this.handlers?.packet(data, from);
  }

  /** @internal */
  deliverRequest(data: Uint8Array, from: Address): Promise<Uint8Array> {
    if (!this.handlers) return Promise.reject(new TransportError('sim: stopped'));
    return this.handlers.request(data, from);
  }
}
