/**
 * A test double of the mesh contract (`mesh/api.ts`) for agent tests: one shared "network" where
 * every member sees every other member's entries at once, and the test decides liveness (`kill`,
 * `revive`). It does not model gossip; the mesh's own tests do that.
 */
import type { MemberState, MeshEntry, MeshHandle, MeshSnapshot, MeshStats } from '../../mesh/api.ts';

/** The shared world the fake members live in. */
export class FakeMeshNet {
  readonly members = new Map<string, FakeMesh>();
  /** Persisted across a member's restart, like the real mesh re-learning its own entries from peers. */
  readonly remembered = new Map<string, Map<string, MeshEntry>>();

  /** Creates a member (not yet started). */
  member(name: string): FakeMesh {
    return new FakeMesh(this, name);
  }

  /** Marks a member dead (as failure detection would) and tells everyone. */
  kill(name: string): void {
    const m = this.members.get(name);
    if (m) {
      m.state = 'dead';
      this.notifyAll();
    }
  }

  notifyAll(): void {
    for (const m of this.members.values()) m.notifySoon();
  }

  snapshot(self: string): MeshSnapshot {
    return {
      self,
      members: [...this.members.values()].map((m) => ({
        name: m.name,
        identityKey: Buffer.alloc(32, m.name.length).toString('base64'),
        addr: '192.0.2.1',
        port: 7946,
        state: m.state,
        incarnation: 0,
        entries: new Map([...m.entries].filter(([, e]) => !e.deleted)),
      })),
    };
  }
}

/** One fake member. */
export class FakeMesh implements MeshHandle {
  readonly net: FakeMeshNet;
  readonly name: string;
  state: MemberState = 'alive';
  entries: Map<string, MeshEntry>;
  writes = 0;
  #listeners = new Set<(s: MeshSnapshot) => void>();
  #scheduled = false;
  #stopped = false;
  #version = 0;

  constructor(net: FakeMeshNet, name: string) {
    this.net = net;
    this.name = name;
    this.entries = new Map(net.remembered.get(name) ?? []);
    for (const e of this.entries.values()) this.#version = Math.max(this.#version, e.version);
  }

  /** When set, `start` rejects like the real mesh does when no seed answers (the member still runs). */
  failJoin = false;

  async start(_seeds: readonly string[]): Promise<void> {
    this.state = 'alive';
    this.net.members.set(this.name, this);
    this.net.notifyAll();
    if (this.failJoin) throw Object.assign(new Error('no seed answered (1 tried)'), { name: 'MeshJoinError' });
  }

  /** Every `join` call's seeds, in order (the agent hands new Kubernetes seeds over this way). */
  readonly joined: string[][] = [];

  async join(seeds: readonly string[]): Promise<void> {
    this.joined.push([...seeds]);
  }

  /** Keys `setLocal` refuses, like the real mesh does for entries over its limits. */
  refuse: (key: string) => boolean = () => false;

  setLocal(key: string, payload: Uint8Array, ttlMs?: number): void {
    if (this.refuse(key)) throw Object.assign(new Error(`entry ${key} refused`), { name: 'MeshInputError' });
    this.writes++;
    this.entries.set(key, { key, version: ++this.#version, payload, expiresAt: ttlMs ? Date.now() + ttlMs : 0, deleted: false });
    this.net.remembered.set(this.name, this.entries);
    this.net.notifyAll();
  }

  deleteLocal(key: string): void {
    this.writes++;
    this.entries.set(key, { key, version: ++this.#version, payload: new Uint8Array(), expiresAt: 0, deleted: true });
    this.net.remembered.set(this.name, this.entries);
    this.net.notifyAll();
  }

  snapshot(): MeshSnapshot {
    return this.net.snapshot(this.name);
  }

  stats(): MeshStats {
    return { packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, decryptFailures: 0, badSignatures: 0, malformed: 0, rateLimited: 0 };
  }

  on(_event: 'change', listener: (snapshot: MeshSnapshot) => void): this {
    this.#listeners.add(listener);
    return this;
  }

  off(_event: 'change', listener: (snapshot: MeshSnapshot) => void): this {
    this.#listeners.delete(listener);
    return this;
  }

  async leave(): Promise<void> {
    this.state = 'left';
    this.net.notifyAll();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#listeners.clear();
  }

  notifySoon(): void {
    if (this.#scheduled || this.#stopped) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const snap = this.snapshot();
      for (const l of this.#listeners) l(snap);
    });
  }
}
