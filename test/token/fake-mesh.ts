/**
 * A deterministic in-memory stand-in for the mesh's replicated entries, for token tests: each member
 * writes only its own entries (versioned like the mesh), and `sync(a, b)` merges two members' views by
 * highest version, as push/pull anti-entropy does. Liveness is not modelled (everyone is alive).
 */
import type { MeshEntry, MeshSnapshot, MemberView } from '../../mesh/api.ts';
import type { TokenMesh } from '../../src/token/admit.ts';

type View = Map<string, { identityKey: string; addr: string; entries: Map<string, MeshEntry> }>;

export class FakeMember implements TokenMesh {
  readonly name: string;
  readonly identityKey: string;
  readonly view: View = new Map();
  now: () => number;
  constructor(name: string, identityKey: string, now: () => number, addr = '192.0.2.1') {
    this.name = name;
    this.identityKey = identityKey;
    this.now = now;
    this.view.set(name, { identityKey, addr, entries: new Map() });
  }

  setLocal(key: string, payload: Uint8Array, ttlMs = 0): void {
    const own = this.view.get(this.name)!;
    const prev = own.entries.get(key);
    own.entries.set(key, { key, version: Math.max((prev?.version ?? 0) + 1, this.now()), payload, expiresAt: ttlMs > 0 ? this.now() + ttlMs : 0, deleted: false });
  }

  deleteLocal(key: string): void {
    const own = this.view.get(this.name)!;
    const prev = own.entries.get(key);
    own.entries.set(key, { key, version: Math.max((prev?.version ?? 0) + 1, this.now()), payload: new Uint8Array(0), expiresAt: 0, deleted: true });
  }

  snapshot(): MeshSnapshot {
    const now = this.now();
    const members: MemberView[] = [...this.view].map(([name, m]) => ({
      name,
      identityKey: m.identityKey,
      addr: m.addr,
      port: 7946,
      state: 'alive',
      incarnation: 1,
      entries: new Map([...m.entries].filter(([, e]) => !e.deleted && (e.expiresAt === 0 || e.expiresAt > now))),
    }));
    return { self: this.name, members };
  }
}

/** Anti-entropy between two members: both end with the union, highest version per (owner, key). */
export function sync(a: FakeMember, b: FakeMember): void {
  for (const [x, y] of [
    [a, b],
    [b, a],
  ] as const) {
    for (const [owner, m] of x.view) {
      let mine = y.view.get(owner);
      if (!mine) y.view.set(owner, (mine = { identityKey: m.identityKey, addr: m.addr, entries: new Map() }));
      for (const [k, e] of m.entries) {
        const cur = mine.entries.get(k);
        if (!cur || cur.version < e.version) mine.entries.set(k, e);
      }
    }
  }
}
