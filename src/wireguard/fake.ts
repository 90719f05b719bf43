/**
 * An in-memory {@link WireGuardBackend} that behaves like the kernel module, for reconciler and
 * agent tests without root. It validates exactly like the real backends, keeps an allowed IP on one
 * peer only (adding it to another peer moves it, as WireGuard's routing table does), reports
 * canonical CIDRs and endpoints, and counts every write per peer so that a test can assert that a
 * no-op reconcile wrote nothing. Tests can also change a device behind the reconciler's back
 * (drift) and make the next calls fail, including part-way through a multi-peer set.
 */
import type { MutableWgPeer, WgBackendKind, WgDevice, WgDeviceUpdate, WgPeer, WireGuardBackend } from './backend.ts';
import { checkIfname, normalizeUpdate } from './addr.ts';
import { WireGuardError } from './errors.ts';
import { publicKeyFromPrivate } from './keys.ts';

interface FakeDev {
  privateKey?: string;
  listenPort: number;
  fwmark: number;
  peers: Map<string, MutableWgPeer>;
}

/** Write counters of one fake backend (reset with {@link FakeWireGuardBackend.resetCounters}). */
export interface FakeCounters {
  /** Calls to setDevice (including failed ones). */
  setCalls: number;
  /** Device-level field writes (private key, listen port, fwmark). */
  deviceWrites: number;
  /** Peer writes per public key: one per peer entry in an applied setDevice (create, change or remove). */
  peerWrites: Map<string, number>;
  /** Calls to ensureDevice that created a device. */
  creates: number;
  /** Calls to deleteDevice that removed a device. */
  deletes: number;
  /** Calls to getDevice. */
  reads: number;
}

/** Which operation an injected failure applies to. */
export type FakeOp = 'ensure' | 'get' | 'set' | 'delete';

/** An injected failure: the next call of `op` rejects; for 'set', after applying `afterPeers` peers. */
export interface FakeFailure {
  readonly op: FakeOp;
  /** For 'set': how many peer entries are applied before the failure (simulates a non-atomic set). Default 0. */
  readonly afterPeers?: number;
  /** Error message; default "injected failure". */
  readonly message?: string;
}

/** Options of {@link FakeWireGuardBackend}. */
export interface FakeWireGuardOptions {
  /** Port a device gets when created (the kernel picks a random one when 0 is set). Default 0. */
  readonly defaultListenPort?: number;
  /**
   * Share the devices, counters and injected failures of another fake, as a second backend
   * instance on the same kernel would (an agent restart adopting existing devices).
   */
  readonly sharedWith?: FakeWireGuardBackend;
}

/** The in-memory backend; `kind` is 'fake'. Not safe to share between unrelated tests (it holds state). */
export class FakeWireGuardBackend implements WireGuardBackend {
  readonly kind: WgBackendKind = 'fake';
  readonly counters: FakeCounters;
  private readonly devices: Map<string, FakeDev>;
  private readonly failures: FakeFailure[];
  private readonly defaultListenPort: number;
  private closed = false;

  constructor(opts: FakeWireGuardOptions = {}) {
    this.defaultListenPort = opts.defaultListenPort ?? opts.sharedWith?.defaultListenPort ?? 0;
    this.counters = opts.sharedWith?.counters ?? newCounters();
    this.devices = opts.sharedWith?.devices ?? new Map();
    this.failures = opts.sharedWith?.failures ?? [];
  }

  async ensureDevice(name: string): Promise<void> {
    this.check('ensure', name);
    if (this.devices.has(name)) return;
    this.devices.set(name, { listenPort: this.defaultListenPort, fwmark: 0, peers: new Map() });
    this.counters.creates++;
  }

  async getDevice(name: string): Promise<WgDevice | null> {
    this.check('get', name);
    this.counters.reads++;
    const d = this.devices.get(name);
    return d ? snapshot(name, d) : null;
  }

  async setDevice(name: string, update: WgDeviceUpdate): Promise<void> {
    this.counters.setCalls++;
    checkIfname(name);
    this.assertOpen();
    const u = normalizeUpdate(name, update);
    const d = this.devices.get(name);
    const fail = this.takeFailure('set');
    if (!d) throw new WireGuardError(`wireguard: set ${name}: no such device`);
    if (fail && (fail.afterPeers ?? 0) <= 0) throw injected('set', name, fail);
    if (u.privateKey !== undefined || u.listenPort !== undefined || u.fwmark !== undefined) {
      if (u.privateKey !== undefined) d.privateKey = u.privateKey;
      if (u.listenPort !== undefined) d.listenPort = u.listenPort;
      if (u.fwmark !== undefined) d.fwmark = u.fwmark;
      this.counters.deviceWrites++;
    }
    if (u.replacePeers) {
      const keep = new Set((u.peers ?? []).filter((p) => !p.remove).map((p) => p.publicKey));
      for (const k of [...d.peers.keys()]) {
        if (keep.has(k)) continue;
        d.peers.delete(k);
        this.counters.peerWrites.set(k, (this.counters.peerWrites.get(k) ?? 0) + 1);
      }
    }
    let applied = 0;
    for (const p of u.peers ?? []) {
      if (fail && applied >= (fail.afterPeers ?? 0)) throw injected('set', name, fail);
      applied++;
      this.counters.peerWrites.set(p.publicKey, (this.counters.peerWrites.get(p.publicKey) ?? 0) + 1);
      if (p.remove) {
        d.peers.delete(p.publicKey);
        continue;
      }
      let peer = d.peers.get(p.publicKey);
      if (!peer && p.updateOnly) continue;
      if (!peer) {
        peer = { publicKey: p.publicKey, allowedIPs: [], persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0 };
        d.peers.set(p.publicKey, peer);
      }
      if (p.endpoint !== undefined) peer.endpoint = p.endpoint;
      if (p.persistentKeepalive !== undefined) peer.persistentKeepalive = p.persistentKeepalive;
      if (p.replaceAllowedIPs) peer.allowedIPs = [];
      for (const cidr of p.allowedIPs ?? []) {
        // WireGuard's allowed IPs are a routing table: a CIDR belongs to one peer, the last one set.
        for (const other of d.peers.values()) {
          if (other !== peer) other.allowedIPs = other.allowedIPs.filter((c) => c !== cidr);
        }
        if (!peer.allowedIPs.includes(cidr)) peer.allowedIPs.push(cidr);
      }
    }
    if (fail) throw injected('set', name, fail);
  }

  async deleteDevice(name: string): Promise<void> {
    this.check('delete', name);
    if (this.devices.delete(name)) this.counters.deletes++;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  // ---- test controls (none of these count as writes) ----

  /** Makes the next call of `failure.op` reject (queued; each failure is used once). */
  injectFailure(failure: FakeFailure): void {
    this.failures.push(failure);
  }

  /** Resets every counter to zero. */
  resetCounters(): void {
    Object.assign(this.counters, newCounters());
  }

  /** Total peer writes since the last reset. */
  totalPeerWrites(): number {
    let n = 0;
    for (const v of this.counters.peerWrites.values()) n += v;
    return n;
  }

  /** Drift: removes a peer as `wg set wg0 peer X remove` by hand would. */
  driftRemovePeer(name: string, publicKey: string): void {
    this.dev(name).peers.delete(publicKey);
  }

  /** Drift: overwrites fields of an existing peer (or adds a stray peer) behind the reconciler's back. */
  driftSetPeer(name: string, peer: Partial<WgPeer> & { publicKey: string }): void {
    const d = this.dev(name);
    const cur = d.peers.get(peer.publicKey) ?? {
      publicKey: peer.publicKey,
      allowedIPs: [],
      persistentKeepalive: 0,
      lastHandshake: 0,
      rxBytes: 0,
      txBytes: 0,
    };
    const next: MutableWgPeer = { ...cur, ...peer, allowedIPs: [...(peer.allowedIPs ?? cur.allowedIPs)] };
    d.peers.set(peer.publicKey, next);
  }

  /** Drift: changes device fields behind the reconciler's back. */
  driftSetDevice(name: string, fields: { listenPort?: number; fwmark?: number; privateKey?: string }): void {
    Object.assign(this.dev(name), fields);
  }

  /** Drift: the interface disappears (e.g. `ip link del` by hand). */
  driftDeleteDevice(name: string): void {
    this.devices.delete(name);
  }

  /** Simulates traffic: sets handshake time and adds to the byte counters of a peer. */
  simulateTraffic(name: string, publicKey: string, t: { lastHandshake?: number; rx?: number; tx?: number }): void {
    const p = this.dev(name).peers.get(publicKey);
    if (!p) throw new WireGuardError(`wireguard: fake ${name}: no peer ${publicKey}`);
    if (t.lastHandshake !== undefined) p.lastHandshake = t.lastHandshake;
    p.rxBytes += t.rx ?? 0;
    p.txBytes += t.tx ?? 0;
  }

  /** Names of the devices that exist. */
  deviceNames(): string[] {
    return [...this.devices.keys()];
  }

  private dev(name: string): FakeDev {
    const d = this.devices.get(name);
    if (!d) throw new WireGuardError(`wireguard: fake: no device ${name}`);
    return d;
  }

  private check(op: FakeOp, name: string): void {
    checkIfname(name);
    this.assertOpen();
    const f = this.takeFailure(op);
    if (f) throw injected(op, name, f);
  }

  private assertOpen(): void {
    if (this.closed) throw new WireGuardError('wireguard: fake backend is closed');
  }

  private takeFailure(op: FakeOp): FakeFailure | undefined {
    const i = this.failures.findIndex((f) => f.op === op);
    return i < 0 ? undefined : this.failures.splice(i, 1)[0];
  }
}

function injected(op: FakeOp, name: string, f: FakeFailure): WireGuardError {
  return new WireGuardError(`wireguard: ${op} ${name}: ${f.message ?? 'injected failure'}`);
}

function newCounters(): FakeCounters {
  return { setCalls: 0, deviceWrites: 0, peerWrites: new Map(), creates: 0, deletes: 0, reads: 0 };
}

function snapshot(name: string, d: FakeDev): WgDevice {
  const peers: WgPeer[] = [...d.peers.values()].map((p) => ({
    publicKey: p.publicKey,
    ...(p.presharedKey !== undefined ? { presharedKey: p.presharedKey } : {}),
    ...(p.endpoint !== undefined ? { endpoint: p.endpoint } : {}),
    allowedIPs: [...p.allowedIPs],
    persistentKeepalive: p.persistentKeepalive,
    lastHandshake: p.lastHandshake,
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
  }));
  return {
    name,
    ...(d.privateKey !== undefined ? { privateKey: d.privateKey, publicKey: publicKeyFromPrivate(d.privateKey) } : {}),
    listenPort: d.listenPort,
    fwmark: d.fwmark,
    peers,
  };
}
