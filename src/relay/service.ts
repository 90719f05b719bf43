/**
 * The agent side of relaying (issue 7, see README.md). On every reconcile the agent hands it the
 * snapshot and the plan; it then
 * - publishes `relay/offer` while this node offers relaying (`--relay on`, or `auto` while it is not
 *   behind NAT) and withdraws it otherwise;
 * - publishes `relay/want`: the peers the link prober found unreachable directly, each kept until this
 *   node's or that peer's published endpoints change, or the mesh reaches the peer directly again
 *   (then direct is tried again, with a growing back-off while such retries fail), or the peer goes;
 * - when this node is the chosen relay of wanted pairs, runs their forwarder sessions and publishes
 *   `relay/sessions` once their sockets are bound.
 * All entry writes compare with what the mesh holds for this node, so a restart adopts or replaces
 * what the previous run published. Nothing here throws out to the agent.
 */
import type { Logger } from 'pino';
import type { MeshSnapshot } from '../../mesh/api.ts';
import type { NodeInfo, RemoteNode } from '../model.ts';
import { chooseEndpoint } from '../plan/datapath.ts';
import { endpointsForPeer } from '../plan/nat.ts';
import { parseEndpoint, type Family } from '../plan/cidr.ts';
import { type ForwardSession, type ForwarderStats, RelayForwarder, type SocketFactory } from './forwarder.ts';
import { MAX_RELAY_PAYLOAD, MAX_WANTS, RELAY_OFFER_KEY, RELAY_SESSIONS_KEY, RELAY_WANT_KEY, type RelayInputs, type RelaySession } from './records.ts';
import { DEFAULT_SESSION_GRACE_MS, planSessions, wantedPairs, type HeldSession } from './sessions.ts';

/** The mesh operations the service uses. */
export interface RelayMesh {
  setLocal(key: string, payload: Uint8Array): void;
  deleteLocal(key: string): void;
}

/** What the agent passes on every reconcile. */
export interface RelayUpdate {
  readonly snapshot: MeshSnapshot;
  readonly self: NodeInfo;
  /** Members see this node behind NAT (it publishes an observed endpoint). */
  readonly behindNAT: boolean;
  readonly remotes: readonly RemoteNode[];
  readonly relay: RelayInputs;
}

/** Counters and state for status and metrics. */
export interface RelayStats {
  readonly offering: boolean;
  /** Peers this node asks to reach through a relay. */
  readonly wants: number;
  readonly forwarder: ForwarderStats;
}

/** Options of {@link RelayService}. */
export interface RelayServiceOptions {
  readonly name: string;
  readonly mode: 'auto' | 'on' | 'off';
  readonly ports: readonly [number, number];
  /** The underlay address the relay binds to and offers. */
  readonly host: string;
  readonly families: readonly Family[];
  readonly mesh: RelayMesh;
  readonly clock: () => number;
  readonly logger: Logger;
  readonly graceMs?: number;
  /** Socket factory for the forwarder (tests). */
  readonly sockets?: SocketFactory;
  /** Asks the agent for another reconcile (sessions changed after an async bind). Must not block. */
  readonly retrigger?: () => void;
  /**
   * How many of this node's mesh probes `name` has answered directly (see `Mesh.directAcks`); a count
   * that changed since a peer was wanted is the evidence for trying the direct link again. Must not block.
   * Without it a relayed pair is only retried when endpoints change.
   */
  readonly directAcks?: (name: string) => number;
  /** First direct retry of a relayed peer after this long (ms), doubled per failed retry; see {@link DEFAULT_RELAY_RETRY_MS}. */
  readonly retryMs?: number;
}

/** Default of `--relay-retry`: how long a pair stays relayed before the direct link is tried again. */
export const DEFAULT_RELAY_RETRY_MS = 5 * 60_000;

/** Failed direct retries double the wait up to this many times (5 min -> 80 min by default). */
export const MAX_RETRY_DOUBLINGS = 4;

/** A peer whose want returns within this many retry intervals of a direct retry counts the retry as failed. */
const RETRY_FAILED_WITHIN = 2;

/** One relayed peer: the endpoints of both sides, when it was wanted, and its direct-ack count then. */
interface Want {
  readonly sig: string;
  readonly since: number;
  readonly acks: number;
}

/** Direct retries of one peer: how many failed in a row, and when the last one started. */
interface Retry {
  readonly failures: number;
  readonly at: number;
}

const enc = new TextEncoder();

/** See the file comment. `update` and `setFailing` never block and never throw. */
export class RelayService {
  readonly #o: RelayServiceOptions;
  readonly #forwarder: RelayForwarder;
  /** Wanted peer -> see {@link Want}. */
  readonly #wants = new Map<string, Want>();
  /** Peers whose direct link was retried recently (back-off memory); pruned once a retry held. */
  readonly #retries = new Map<string, Retry>();
  #held: HeldSession[] = [];
  /** Sessions whose sockets are bound (published). */
  #bound: readonly RelaySession[] = [];
  readonly #unusable = new Set<number>();
  #last: RelayUpdate | undefined;
  #offering = false;
  #stopped = false;
  /** What this run last wrote per key (undefined = deleted), so a stale snapshot does not cause a rewrite. */
  readonly #written = new Map<string, string | undefined>();

  constructor(opts: RelayServiceOptions) {
    this.#o = opts;
    this.#forwarder = new RelayForwarder({ host: opts.host, logger: opts.logger, ...(opts.sockets ? { sockets: opts.sockets } : {}) });
  }

  /** Counters for metrics and status. */
  stats(): RelayStats {
    return { offering: this.#offering, wants: this.#wants.size, forwarder: this.#forwarder.stats() };
  }

  /** The peers this node currently asks to reach through a relay (sorted). */
  wants(): readonly string[] {
    return [...this.#wants.keys()].sort();
  }

  /**
   * Direct links the prober found failed (sorted names): each becomes wanted until endpoints change
   * or a direct retry is due. A want that returns soon after a direct retry counts that retry as failed.
   */
  setFailing(names: readonly string[]): void {
    const last = this.#last;
    if (!last || this.#stopped) return;
    const now = this.#o.clock();
    let added = false;
    for (const name of names) {
      if (this.#wants.has(name) || this.#wants.size >= MAX_WANTS) continue;
      const peer = last.remotes.find((r) => r.info.name === name);
      if (!peer) continue;
      const retry = this.#retries.get(name);
      if (retry) this.#retries.set(name, { failures: retry.failures + 1, at: retry.at });
      this.#wants.set(name, { sig: signature(last.self, peer.info), since: now, acks: this.#acks(name) });
      this.#o.logger.info({ peer: name, ...(retry ? { failedRetries: retry.failures + 1 } : {}) }, retry ? 'direct link still fails after a retry; asking for a relay again' : 'direct link failed; asking for a relay');
      added = true;
    }
    if (added) this.#publishWants(last.snapshot);
  }

  /** How long a want of `name` lasts before a direct retry, given its failed retries. */
  #retryAfter(name: string): number {
    const failures = this.#retries.get(name)?.failures ?? 0;
    return (this.#o.retryMs ?? DEFAULT_RELAY_RETRY_MS) * 2 ** Math.min(failures, MAX_RETRY_DOUBLINGS);
  }

  #acks(name: string): number {
    try {
      return this.#o.directAcks?.(name) ?? 0;
    } catch {
      return 0;
    }
  }

  /** One pass: offer, wants, sessions (see the file comment). Never throws. */
  update(u: RelayUpdate): void {
    if (this.#stopped) return;
    this.#last = u;
    try {
      this.#publishOffer(u);
      this.#expireWants(u);
      this.#publishWants(u.snapshot);
      this.#planSessions(u);
    } catch (err) {
      this.#o.logger.error({ err }, 'relay update failed');
    }
  }

  #publishOffer(u: RelayUpdate): void {
    const offer = this.#o.mode === 'on' || (this.#o.mode === 'auto' && !u.behindNAT);
    if (offer !== this.#offering) this.#o.logger.info({ offer, mode: this.#o.mode, behindNAT: u.behindNAT }, offer ? 'offering to relay' : 'not offering to relay');
    this.#offering = offer;
    this.#put(u.snapshot, RELAY_OFFER_KEY, offer ? JSON.stringify({ host: this.#o.host, ports: this.#o.ports }) : undefined);
  }

  #expireWants(u: RelayUpdate): void {
    const byName = new Map(u.remotes.map((r) => [r.info.name, r]));
    const now = this.#o.clock();
    for (const [name, want] of this.#wants) {
      const peer = byName.get(name);
      const gone = !peer || (peer.state !== 'alive' && peer.state !== 'suspect');
      const moved = !gone && signature(u.self, peer.info) !== want.sig;
      // A direct retry keeps its back-off memory; the other reasons start afresh.
      const retry = !gone && !moved && this.#o.directAcks !== undefined && now - want.since >= this.#retryAfter(name) && this.#acks(name) !== want.acks;
      if (!gone && !moved && !retry) continue;
      this.#wants.delete(name);
      if (retry) this.#retries.set(name, { failures: this.#retries.get(name)?.failures ?? 0, at: now });
      else this.#retries.delete(name);
      const why = gone ? 'peer gone' : moved ? 'endpoints changed' : 'the mesh reaches the peer directly again';
      this.#o.logger.info({ peer: name, why }, 'relay no longer asked for; trying the direct link again');
    }
    // A retry whose peer has not been wanted again for a while held: forget its back-off.
    const base = this.#o.retryMs ?? DEFAULT_RELAY_RETRY_MS;
    for (const [name, r] of this.#retries) {
      if (!this.#wants.has(name) && (now - r.at >= RETRY_FAILED_WITHIN * base || !byName.has(name))) this.#retries.delete(name);
    }
  }

  #publishWants(snapshot: MeshSnapshot): void {
    const list = fitting(this.wants());
    this.#put(snapshot, RELAY_WANT_KEY, list.length > 0 ? JSON.stringify(list) : undefined);
  }

  #planSessions(u: RelayUpdate): void {
    const wanted = this.#offering ? wantedPairs(this.#o.name, u.relay) : [];
    this.#held = planSessions({ wanted, held: this.#held, ports: this.#o.ports, now: this.#o.clock(), graceMs: this.#o.graceMs ?? DEFAULT_SESSION_GRACE_MS, unusable: this.#unusable });
    const byName = new Map(u.remotes.map((r) => [r.info.name, r]));
    const addrs = new Map(u.snapshot.members.map((m) => [m.name, m.addr]));
    const specs: ForwardSession[] = [];
    const planned: RelaySession[] = [];
    for (const s of this.#held) {
      const a = byName.get(s.a);
      const b = byName.get(s.b);
      if (!a || !b) continue;
      specs.push({ a: this.#side(u.self, a, s.portA, addrs.get(s.a)), b: this.#side(u.self, b, s.portB, addrs.get(s.b)) });
      planned.push({ a: s.a, b: s.b, portA: s.portA, portB: s.portB });
    }
    void this.#forwarder.sync(specs).then(({ failedPorts }) => {
      if (this.#stopped) return;
      for (const p of failedPorts) this.#unusable.add(p);
      const failed = new Set(failedPorts);
      // Only what fits in one entry is published (and so used by the pair); very long names are the only way to hit it.
      this.#bound = fitting(planned.filter((s) => !failed.has(s.portA) && !failed.has(s.portB)));
      const last = this.#last;
      if (last) this.#put(last.snapshot, RELAY_SESSIONS_KEY, this.#bound.length > 0 || this.#offering ? JSON.stringify(this.#bound) : undefined);
      if (failed.size > 0) this.#o.retrigger?.();
    });
  }

  /** One side of a session: its relay port, the IPs it may send from, and its published endpoint. */
  #side(self: NodeInfo, r: RemoteNode, port: number, meshAddr: string | undefined): ForwardSession['a'] {
    const allow = new Set<string>();
    for (const e of r.info.endpoints) {
      const p = parseEndpoint(e);
      if (p) allow.add(p.ip);
    }
    if (meshAddr) allow.add(meshAddr);
    const ep = chooseEndpoint(endpointsForPeer(r.info.endpoints, self.endpoints), this.#o.families);
    const parsed = ep ? parseEndpoint(ep) : null;
    return { name: r.info.name, port, allow: [...allow], ...(parsed ? { fallback: { host: parsed.ip, port: parsed.port } } : {}) };
  }

  /** Sets (or with undefined, deletes) an own entry when the mesh holds something else. */
  #put(snapshot: MeshSnapshot, key: string, payload: string | undefined): void {
    if (this.#written.has(key)) {
      if (this.#written.get(key) === payload) return;
    } else {
      const own = snapshot.members.find((m) => m.name === snapshot.self)?.entries.get(key);
      const current = own && !own.deleted ? new TextDecoder().decode(own.payload) : undefined;
      if (current === payload) return;
    }
    try {
      if (payload === undefined) this.#o.mesh.deleteLocal(key);
      else this.#o.mesh.setLocal(key, enc.encode(payload));
      this.#written.set(key, payload);
    } catch (err) {
      this.#o.logger.warn({ err, key }, 'relay: cannot publish an entry; retrying at the next reconcile');
    }
  }

  /** Closes every relay socket. The published entries stay (they expire with the member). Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.#forwarder.close();
  }
}

/** The longest prefix of `list` whose JSON fits in a relay entry (members refuse larger ones). */
export function fitting<T>(list: readonly T[]): readonly T[] {
  let n = list.length;
  while (n > 0 && Buffer.byteLength(JSON.stringify(list.slice(0, n))) > MAX_RELAY_PAYLOAD) n = Math.floor(n * 0.9);
  return n === list.length ? list : list.slice(0, n);
}

/** Both sides' published endpoints: a want holds while this stays the same. */
function signature(self: NodeInfo, peer: NodeInfo): string {
  return `${self.endpoints.join(',')}|${peer.endpoints.join(',')}`;
}
