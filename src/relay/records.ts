/**
 * Relay entries in the mesh (issue 7, see README.md), parsed and validated. Each node may publish:
 * - `relay/offer`    `{ "host": "<ip>", "ports": [lo, hi] }`: it relays on that address and UDP range;
 * - `relay/want`     `["peer", ...]`: the peers it cannot reach directly (sorted, at most {@link MAX_WANTS});
 * - `relay/sessions` `[{ "a", "b", "portA", "portB" }, ...]`: the pairs it relays now (a < b by name).
 * Every byte came from the network (signed by its owner, who may be buggy or hostile): entries that
 * fail a check are dropped whole and reported in `rejected`. Pure; a small cache keyed by payload
 * identity keeps re-parsing cheap on every mesh change.
 */
import type { MemberState, MeshSnapshot } from '../../mesh/api.ts';
import { parseEndpoint, tryParseIP } from '../plan/cidr.ts';

/** Entry key of a relay offer. */
export const RELAY_OFFER_KEY = 'relay/offer';
/** Entry key of the peers a node wants relayed. */
export const RELAY_WANT_KEY = 'relay/want';
/** Entry key of the sessions a relay serves. */
export const RELAY_SESSIONS_KEY = 'relay/sessions';

/** Most peers one node may list in `relay/want`. */
export const MAX_WANTS = 256;
/** Most sessions one relay may publish. */
export const MAX_SESSIONS = 256;
/** Largest relay payload accepted, in bytes. */
export const MAX_RELAY_PAYLOAD = 32 * 1024;

const NAME_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/** A validated relay offer. */
export interface RelayOffer {
  /** Canonical IP literal. */
  readonly host: string;
  readonly family: 4 | 6;
  readonly ports: readonly [number, number];
}

/** One relayed pair as its relay publishes it. */
export interface RelaySession {
  /** The lower node name of the pair. */
  readonly a: string;
  readonly b: string;
  /** Port on the relay that `a` sends to (and receives `b`'s traffic from). */
  readonly portA: number;
  /** Port on the relay that `b` sends to. */
  readonly portB: number;
}

/** One relay entry refused, with the reason. */
export interface RejectedRelayEntry {
  readonly node: string;
  readonly key: string;
  readonly reason: string;
}

/** The relay view of a mesh snapshot: validated entries of every member, by member name. */
export interface RelayInputs {
  readonly offers: ReadonlyMap<string, RelayOffer>;
  readonly wants: ReadonlyMap<string, readonly string[]>;
  readonly sessions: ReadonlyMap<string, readonly RelaySession[]>;
  /** Mesh liveness of every member named above (and every other member). */
  readonly states: ReadonlyMap<string, MemberState>;
  readonly rejected: readonly RejectedRelayEntry[];
}

type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

/** Parses a `relay/offer` payload. */
export function parseOffer(payload: Uint8Array): Parsed<RelayOffer> {
  const v = json(payload);
  if (!v.ok) return v;
  const o = v.value as { host?: unknown; ports?: unknown };
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return bad('offer is not an object');
  const ip = tryParseIP(o.host);
  if (!ip || typeof o.host !== 'string') return bad('offer host is not an IP address');
  // Reuse the endpoint rules (no unspecified or multicast host).
  const ep = parseEndpoint(ip.family === 6 ? `[${o.host}]:1` : `${o.host}:1`);
  if (!ep) return bad('offer host is not a usable unicast address');
  if (!Array.isArray(o.ports) || o.ports.length !== 2 || !o.ports.every((p) => Number.isInteger(p) && p >= 1 && p <= 65535)) return bad('offer ports are not [lo, hi] in 1..65535');
  const [lo, hi] = o.ports as [number, number];
  if (lo > hi) return bad('offer ports have lo > hi');
  return { ok: true, value: { host: ep.ip, family: ep.family, ports: [lo, hi] } };
}

/** Parses a `relay/want` payload (owned by `owner`, who may not want itself). */
export function parseWant(payload: Uint8Array, owner: string): Parsed<readonly string[]> {
  const v = json(payload);
  if (!v.ok) return v;
  const list = v.value;
  if (!Array.isArray(list)) return bad('want is not an array');
  if (list.length > MAX_WANTS) return bad(`want lists more than ${MAX_WANTS} peers`);
  for (let i = 0; i < list.length; i++) {
    const n = list[i];
    if (typeof n !== 'string' || !NAME_RE.test(n)) return bad('want holds a bad node name');
    if (n === owner) return bad('want names its owner');
    if (i > 0 && !(list[i - 1] < n)) return bad('want is not sorted and unique');
  }
  return { ok: true, value: list as string[] };
}

/** Parses a `relay/sessions` payload; ports must lie in the owner's offered range when `offer` is given. */
export function parseSessions(payload: Uint8Array, owner: string, offer: RelayOffer | undefined): Parsed<readonly RelaySession[]> {
  const v = json(payload);
  if (!v.ok) return v;
  const list = v.value;
  if (!Array.isArray(list)) return bad('sessions is not an array');
  if (list.length > MAX_SESSIONS) return bad(`sessions lists more than ${MAX_SESSIONS} pairs`);
  const ports = new Set<number>();
  const pairs = new Set<string>();
  const out: RelaySession[] = [];
  for (const s of list as { a?: unknown; b?: unknown; portA?: unknown; portB?: unknown }[]) {
    if (typeof s !== 'object' || s === null) return bad('session is not an object');
    const { a, b, portA, portB } = s;
    if (typeof a !== 'string' || typeof b !== 'string' || !NAME_RE.test(a) || !NAME_RE.test(b)) return bad('session has a bad node name');
    if (!(a < b)) return bad('session pair is not ordered a < b');
    if (a === owner || b === owner) return bad('session relays its own owner');
    for (const p of [portA, portB]) {
      if (!Number.isInteger(p) || (p as number) < 1 || (p as number) > 65535) return bad('session port is not in 1..65535');
      if (offer && ((p as number) < offer.ports[0] || (p as number) > offer.ports[1])) return bad('session port is outside the offered range');
      if (ports.has(p as number)) return bad('session port used twice');
      ports.add(p as number);
    }
    const key = `${a}\n${b}`;
    if (pairs.has(key)) return bad('session pair listed twice');
    pairs.add(key);
    out.push({ a, b, portA: portA as number, portB: portB as number });
  }
  return { ok: true, value: out };
}

function bad(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

const decoder = new TextDecoder('utf-8', { fatal: true });

function json(payload: Uint8Array): Parsed<unknown> {
  if (payload.length > MAX_RELAY_PAYLOAD) return bad(`payload over ${MAX_RELAY_PAYLOAD} bytes`);
  try {
    return { ok: true, value: JSON.parse(decoder.decode(payload)) as unknown };
  } catch {
    return bad('payload is not JSON');
  }
}

/**
 * Memo for {@link relayInputsFromSnapshot}: parsed entries by payload object, and the last result,
 * handed back unchanged (same object) when no relay entry and no member state changed.
 */
export class RelayRecordsCache {
  readonly parsed = new WeakMap<Uint8Array, { key: string; owner: string; offer?: RelayOffer; result: Parsed<unknown> }>();
  last: { sig: unknown[]; out: RelayInputs } | undefined;
}

/**
 * The relay view of a snapshot (every member, this one included). Only the three relay keys are
 * read; members without them cost one map lookup each. Deterministic for the same snapshot.
 */
export function relayInputsFromSnapshot(snapshot: MeshSnapshot, cache?: RelayRecordsCache): RelayInputs {
  const sig: unknown[] = [];
  for (const m of snapshot.members) {
    const o = m.entries.get(RELAY_OFFER_KEY)?.payload;
    const w = m.entries.get(RELAY_WANT_KEY)?.payload;
    const s = m.entries.get(RELAY_SESSIONS_KEY)?.payload;
    sig.push(m.name, m.state, o, w, s);
  }
  const last = cache?.last;
  if (last && last.sig.length === sig.length && last.sig.every((x, i) => x === sig[i])) return last.out;

  const offers = new Map<string, RelayOffer>();
  const wants = new Map<string, readonly string[]>();
  const sessions = new Map<string, readonly RelaySession[]>();
  const states = new Map<string, MemberState>();
  const rejected: RejectedRelayEntry[] = [];
  const memo = <T>(payload: Uint8Array, key: string, owner: string, offer: RelayOffer | undefined, parse: () => Parsed<T>): Parsed<T> => {
    const hit = cache?.parsed.get(payload);
    if (hit && hit.key === key && hit.owner === owner && hit.offer === offer) return hit.result as Parsed<T>;
    const result = parse();
    cache?.parsed.set(payload, { key, owner, ...(offer ? { offer } : {}), result });
    return result;
  };
  for (const m of snapshot.members) {
    states.set(m.name, m.state);
    const o = m.entries.get(RELAY_OFFER_KEY);
    let offer: RelayOffer | undefined;
    if (o && !o.deleted) {
      const r = memo(o.payload, RELAY_OFFER_KEY, m.name, undefined, () => parseOffer(o.payload));
      if (r.ok) offers.set(m.name, (offer = r.value));
      else rejected.push({ node: m.name, key: RELAY_OFFER_KEY, reason: `relay: ${r.reason}` });
    }
    const w = m.entries.get(RELAY_WANT_KEY);
    if (w && !w.deleted) {
      const r = memo(w.payload, RELAY_WANT_KEY, m.name, undefined, () => parseWant(w.payload, m.name));
      if (r.ok) wants.set(m.name, r.value);
      else rejected.push({ node: m.name, key: RELAY_WANT_KEY, reason: `relay: ${r.reason}` });
    }
    const s = m.entries.get(RELAY_SESSIONS_KEY);
    if (s && !s.deleted) {
      // Sessions only count from a node that offers relaying (its ports must be in its range).
      if (!offer) rejected.push({ node: m.name, key: RELAY_SESSIONS_KEY, reason: 'relay: sessions without an offer' });
      else {
        const r = memo(s.payload, RELAY_SESSIONS_KEY, m.name, offer, () => parseSessions(s.payload, m.name, offer));
        if (r.ok) sessions.set(m.name, r.value);
        else rejected.push({ node: m.name, key: RELAY_SESSIONS_KEY, reason: `relay: ${r.reason}` });
      }
    }
  }
  const out: RelayInputs = { offers, wants, sessions, states, rejected };
  if (cache) cache.last = { sig, out };
  return out;
}

/** Names of the members that may relay now: they offer, and the mesh sees them alive. */
export function relayCandidates(inputs: Pick<RelayInputs, 'offers' | 'states'>): string[] {
  return [...inputs.offers.keys()].filter((n) => inputs.states.get(n) === 'alive').sort();
}
