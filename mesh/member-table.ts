/**
 * The member table of one mesh member: a copy-on-write overlay over an optional shared, read-only
 * base view. Records are immutable; every change replaces the record. The base lets a simulation of
 * N members start from one shared view instead of N copies (O(N) memory, not O(N^2)).
 */
import type { MemberState } from './api.ts';
import type { SignedEntry } from './entries.ts';
import type { AliveMsg } from './messages.ts';
import type { Random } from './clock.ts';

/** What a member knows about another member (or itself). Immutable. */
export interface MemberRecord {
  readonly name: string;
  /** The latest verified alive claim: address, port, identity key, and its signature. */
  readonly alive: AliveMsg;
  readonly identityB64: string;
  readonly state: MemberState;
  readonly incarnation: number;
  /** Local time of the last state change. */
  readonly changedAt: number;
  readonly entries: ReadonlyMap<string, SignedEntry>;
}

/** A read-only view shared between simulated members (see {@link MemberTable}). */
export interface SharedMemberView {
  readonly byName: ReadonlyMap<string, MemberRecord>;
  readonly names: readonly string[];
}

/** Builds a shared view from records (for simulations and benchmarks). */
export function sharedMemberView(records: readonly MemberRecord[]): SharedMemberView {
  const byName = new Map<string, MemberRecord>();
  for (const r of records) byName.set(r.name, r);
  return { byName, names: [...byName.keys()] };
}

function isLiveState(s: MemberState): boolean {
  return s === 'alive' || s === 'suspect';
}

/** Member records by name, with O(1) random choice and a running count of live (alive/suspect) members. */
export class MemberTable {
  private readonly base: SharedMemberView;
  private readonly own = new Map<string, MemberRecord | null>();
  private ownNames: string[] = [];
  private total: number;
  private live: number;

  constructor(base?: SharedMemberView) {
    this.base = base ?? { byName: new Map(), names: [] };
    this.total = this.base.byName.size;
    let live = 0;
    for (const r of this.base.byName.values()) if (isLiveState(r.state)) live++;
    this.live = live;
  }

  get(name: string): MemberRecord | undefined {
    const o = this.own.get(name);
    if (o !== undefined) return o ?? undefined;
    return this.base.byName.get(name);
  }

  /** Number of members known (any state). */
  get size(): number {
    return this.total;
  }

  /** Number of alive or suspect members (including self). */
  get liveCount(): number {
    return this.live;
  }

  set(rec: MemberRecord): void {
    const prev = this.get(rec.name);
    if (prev === undefined) {
      this.total++;
      if (!this.own.has(rec.name) && !this.base.byName.has(rec.name)) this.ownNames.push(rec.name);
    } else if (isLiveState(prev.state)) this.live--;
    if (isLiveState(rec.state)) this.live++;
    this.own.set(rec.name, rec);
  }

  delete(name: string): void {
    const prev = this.get(name);
    if (prev === undefined) return;
    this.total--;
    if (isLiveState(prev.state)) this.live--;
    if (this.base.byName.has(name)) this.own.set(name, null);
    else this.own.delete(name);
    if (this.ownNames.length > 64 && this.ownNames.length > 2 * this.total) {
      this.ownNames = this.ownNames.filter((n) => this.own.get(n));
    }
  }

  /** A random member satisfying `ok`, or undefined after a bounded number of tries. */
  random(random: Random, ok: (r: MemberRecord) => boolean): MemberRecord | undefined {
    const nb = this.base.names.length;
    const n = nb + this.ownNames.length;
    if (n === 0) return undefined;
    for (let tries = 0; tries < 24; tries++) {
      const i = Math.floor(random() * n);
      const r = this.get(i < nb ? this.base.names[i]! : this.ownNames[i - nb]!);
      if (r && ok(r)) return r;
    }
    for (const r of this.values()) if (ok(r)) return r;
    return undefined;
  }

  /** Up to `k` distinct random members satisfying `ok`. */
  randomK(random: Random, k: number, ok: (r: MemberRecord) => boolean): MemberRecord[] {
    const out: MemberRecord[] = [];
    const seen = new Set<string>();
    for (let i = 0; i < k * 4 && out.length < k; i++) {
      const r = this.random(random, (m) => !seen.has(m.name) && ok(m));
      if (!r) break;
      seen.add(r.name);
      out.push(r);
    }
    return out;
  }

  /** Every member record. */
  *values(): IterableIterator<MemberRecord> {
    for (const [name, r] of this.base.byName) {
      const o = this.own.get(name);
      if (o === undefined) yield r;
      else if (o !== null) yield o;
    }
    for (const name of this.ownNames) {
      const o = this.own.get(name);
      if (o) yield o;
    }
  }

  /** A random locally-changed record satisfying `ok` (dead members always are): O(changed). */
  randomChanged(random: Random, ok: (r: MemberRecord) => boolean): MemberRecord | undefined {
    const picks: MemberRecord[] = [];
    for (const o of this.own.values()) if (o && ok(o)) picks.push(o);
    return picks.length === 0 ? undefined : picks[Math.floor(random() * picks.length)];
  }

  /** Records changed locally (not from the shared base): what sweeps need to look at. */
  *changed(): IterableIterator<MemberRecord> {
    for (const o of this.own.values()) if (o) yield o;
  }
}
