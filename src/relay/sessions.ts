/**
 * What a relay serves, pure: from the relay view of the mesh and the sessions it holds now, the
 * sessions it should hold. A pair {A, B} is served by this node when an alive member of the pair
 * wants it (lists the other in `relay/want`), the other is alive or suspect, and this node is the
 * pair's chosen relay ({@link chooseRelay} over the alive offers). New pairs get the two lowest free
 * ports of the range; a pair nobody wants any more is kept for a grace period (a want that blinks
 * during a record update must not tear the relay down), then dropped. No I/O, no clock.
 */
import type { MemberState } from '../../mesh/api.ts';
import { chooseRelay, pairKey, pairOf } from './choose.ts';
import { MAX_SESSIONS, relayCandidates, type RelayInputs, type RelaySession } from './records.ts';

/** A session this relay holds, with the time (ms) since nobody wants it, if so. */
export interface HeldSession extends RelaySession {
  readonly unwantedSince?: number;
}

/** Default grace before an unwanted session is closed. */
export const DEFAULT_SESSION_GRACE_MS = 60_000;

const usable = (s: MemberState | undefined): boolean => s === 'alive' || s === 'suspect';

/** The pairs (a < b) this node should relay now, sorted. */
export function wantedPairs(self: string, inputs: Pick<RelayInputs, 'offers' | 'states' | 'wants'>): readonly (readonly [string, string])[] {
  const candidates = relayCandidates(inputs);
  if (!candidates.includes(self)) return [];
  const seen = new Map<string, readonly [string, string]>();
  for (const [owner, peers] of inputs.wants) {
    if (owner === self || inputs.states.get(owner) !== 'alive') continue;
    for (const peer of peers) {
      if (peer === self || peer === owner || !usable(inputs.states.get(peer))) continue;
      const key = pairKey(owner, peer);
      if (seen.has(key)) continue;
      if (chooseRelay(owner, peer, candidates) !== self) continue;
      seen.set(key, pairOf(owner, peer));
    }
  }
  return [...seen.values()].sort((x, y) => (pairKey(...x) < pairKey(...y) ? -1 : 1));
}

/**
 * The next session set: wanted pairs keep their ports (and lose any `unwantedSince`), new wanted
 * pairs get the two lowest free ports in `ports` (skipping `unusable` ones, e.g. that failed to bind),
 * unwanted ones are marked at `now` and dropped after `graceMs`. At most {@link MAX_SESSIONS} and
 * what the range holds; pairs beyond are not served (the caller logs it). Sorted by pair.
 */
export function planSessions(opts: {
  readonly wanted: readonly (readonly [string, string])[];
  readonly held: readonly HeldSession[];
  readonly ports: readonly [number, number];
  readonly now: number;
  readonly graceMs: number;
  readonly unusable?: ReadonlySet<number>;
}): HeldSession[] {
  const wanted = new Set(opts.wanted.map((p) => pairKey(...p)));
  const out: HeldSession[] = [];
  const used = new Set<number>();
  const [lo, hi] = opts.ports;
  const inRange = (p: number) => p >= lo && p <= hi && !opts.unusable?.has(p);
  for (const s of opts.held) {
    if (!inRange(s.portA) || !inRange(s.portB)) continue;
    const key = pairKey(s.a, s.b);
    if (wanted.has(key)) {
      out.push({ a: s.a, b: s.b, portA: s.portA, portB: s.portB });
      wanted.delete(key);
    } else {
      const since = s.unwantedSince ?? opts.now;
      if (opts.now - since >= opts.graceMs) continue;
      out.push({ ...s, unwantedSince: since });
    }
    used.add(s.portA);
    used.add(s.portB);
  }
  let next = lo;
  const free = (): number | undefined => {
    while (next <= hi && (used.has(next) || opts.unusable?.has(next))) next++;
    return next <= hi ? next++ : undefined;
  };
  for (const p of opts.wanted) {
    if (!wanted.has(pairKey(...p))) continue;
    if (out.length >= MAX_SESSIONS) break;
    const portA = free();
    const portB = free();
    if (portA === undefined || portB === undefined) break;
    used.add(portA);
    used.add(portB);
    out.push({ a: p[0], b: p[1], portA, portB });
  }
  return out.sort((x, y) => (pairKey(x.a, x.b) < pairKey(y.a, y.b) ? -1 : 1));
}
