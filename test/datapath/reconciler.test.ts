import { describe, expect, it } from 'vitest';
import pino from 'pino';
import type { DesiredPeer, DesiredState } from '../../src/model.ts';
import { DatapathReconciler, type ResyncTimers } from '../../src/datapath/reconciler.ts';
import { FakeRtNetlink, linkFakes } from '../../src/datapath/rtnetlink-fake.ts';
import { RT_TABLE_MAIN, WEFT_FALLBACK_METRIC, WEFT_RT_PROTO } from '../../src/datapath/rtnetlink.ts';
import type { WireGuardBackend } from '../../src/wireguard/backend.ts';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';
import { keyPair } from '../plan/helpers.ts';

const self = keyPair(1);
const logger = pino({ level: 'silent' });

function peers(n: number, over: (i: number) => Partial<DesiredPeer> = () => ({})): DesiredPeer[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `node-${i + 1}`,
    publicKey: keyPair(10 + i).publicKey,
    endpoint: `192.0.2.${i + 2}:51820`,
    allowedIPs: [`10.244.${i + 1}.0/24`, `10.244.${i + 1}.1/32`],
    persistentKeepalive: 0,
    ...over(i),
  }));
}

function state(p: DesiredPeer[], over: Partial<DesiredState> = {}): DesiredState {
  return {
    ifname: 'weft0',
    listenPort: 51820,
    mtu: 1440,
    addresses: ['10.244.0.1/32'],
    peers: p,
    routes: [{ dst: '10.244.0.0/16', dev: 'weft0' }, { dst: 'fd00:10::/56', dev: 'weft0' }],
    ...over,
  };
}

function setup(opts: { fake?: FakeWireGuardBackend; rt?: FakeRtNetlink; wg?: (w: WireGuardBackend) => WireGuardBackend; timers?: ResyncTimers } = {}) {
  const fake = opts.fake ?? new FakeWireGuardBackend();
  const rt = opts.rt ?? new FakeRtNetlink();
  const linked = linkFakes(fake, rt);
  const wg = opts.wg ? opts.wg(linked) : linked;
  const rec = new DatapathReconciler({ wg, rt, logger, privateKey: self.privateKey, resyncMs: 30_000, ...(opts.timers ? { timers: opts.timers } : {}) });
  return { fake, rt, rec };
}

/** weft's interface routes ("dst dev"); each must come with its blackhole fallback, checked here too. */
const weftRoutes = (rt: FakeRtNetlink) => {
  const mine = rt.allRoutes().filter((r) => r.protocol === WEFT_RT_PROTO);
  const uni = mine.filter((r) => r.type === 'unicast');
  const bh = mine.filter((r) => r.type === 'blackhole');
  expect(bh.map((r) => `${r.dst} ${r.metric}`).sort()).toEqual(uni.map((r) => `${r.dst} ${WEFT_FALLBACK_METRIC}`).sort());
  return uni.map((r) => `${r.dst} ${r.dev}`).sort();
};

describe('DatapathReconciler', () => {
  it('first apply builds everything; a no-op apply writes nothing; one change writes one peer', async () => {
    const { fake, rt, rec } = setup();
    const r1 = await rec.apply(state(peers(50)));
    expect(r1.ok).toBe(true);
    const dev = (await fake.getDevice('weft0'))!;
    expect(dev.publicKey).toBe(self.publicKey);
    expect(dev.listenPort).toBe(51820);
    expect(dev.peers).toHaveLength(50);
    expect(await rt.getLink('weft0')).toMatchObject({ mtu: 1440, up: true });
    expect(await rt.listAddresses('weft0')).toEqual(['10.244.0.1/32']);
    expect(weftRoutes(rt)).toEqual(['10.244.0.0/16 weft0', 'fd00:10::/56 weft0']);
    // create + device fields + 50 peers + link + address + 2 routes + 2 fallbacks
    expect(r1.writes).toBe(1 + 1 + 50 + 1 + 1 + 2 + 2);

    fake.resetCounters();
    rt.writes = 0;
    const r2 = await rec.apply(state(peers(50)));
    expect(r2).toMatchObject({ ok: true, writes: 0 });
    expect(fake.totalPeerWrites()).toBe(0);
    expect(fake.counters.setCalls).toBe(0);
    expect(rt.writes).toBe(0);

    const changed = peers(50, (i) => (i === 7 ? { endpoint: '192.0.2.200:51820' } : {}));
    const r3 = await rec.apply(state(changed));
    expect(r3).toMatchObject({ ok: true, writes: 1 });
    expect([...fake.counters.peerWrites.entries()]).toEqual([[changed[7]!.publicKey, 1]]);
    expect(rec.stats()).toMatchObject({ reconciles: 3, errors: 0, writes: r1.writes + 1 });
  });

  it('removes departed peers and stale addresses/routes it owns, keeps foreign routes', async () => {
    const { fake, rt, rec } = setup();
    rt.createLink('eth0', { up: true });
    rt.injectRoute({ dst: '0.0.0.0/0', dev: 'eth0', protocol: 3, table: RT_TABLE_MAIN, metric: 0, gateway: '192.0.2.254' });
    await rec.apply(state(peers(3)));
    await rec.apply(state(peers(2), { addresses: ['10.244.9.1/32'], routes: [{ dst: '10.244.0.0/16', dev: 'weft0' }] }));
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(2);
    expect(await rt.listAddresses('weft0')).toEqual(['10.244.9.1/32']);
    expect(weftRoutes(rt)).toEqual(['10.244.0.0/16 weft0']);
    expect(rt.allRoutes().some((r) => r.dst === '0.0.0.0/0')).toBe(true);
  });

  it('replaces a foreign route to the cluster CIDR (fail-closed) and counts it', async () => {
    const { rt, rec } = setup();
    rt.createLink('eth0', { up: true });
    rt.injectRoute({ dst: '10.244.0.0/16', dev: 'eth0', protocol: 3, table: RT_TABLE_MAIN, metric: 0, gateway: '192.0.2.254' });
    expect((await rec.apply(state([]))).ok).toBe(true);
    expect(rt.allRoutes().filter((r) => r.dst === '10.244.0.0/16' && r.type === 'unicast')).toMatchObject([{ dev: 'weft0', protocol: WEFT_RT_PROTO }]);
    expect(rec.stats().foreignRoutesReplaced).toBe(1);
  });

  it('repairs drift at resync: a peer removed by hand, a peer altered, a route deleted, the link downed, the key changed', async () => {
    const { fake, rt, rec } = setup();
    const want = state(peers(5, (i) => ({ persistentKeepalive: i === 0 ? 25 : 0 })));
    await rec.apply(want);
    fake.driftRemovePeer('weft0', want.peers[1]!.publicKey);
    fake.driftSetPeer('weft0', { publicKey: want.peers[2]!.publicKey, allowedIPs: ['10.244.3.0/24'] });
    fake.driftSetPeer('weft0', { publicKey: keyPair(99).publicKey, allowedIPs: ['10.244.99.0/24'] });
    fake.driftSetDevice('weft0', { privateKey: keyPair(98).privateKey });
    rt.dropRoute('10.244.0.0/16');
    await rt.setLink('weft0', { up: false });
    fake.resetCounters();
    const r = await rec.resync()!;
    expect(r.ok).toBe(true);
    const dev = (await fake.getDevice('weft0'))!;
    expect(dev.publicKey).toBe(self.publicKey);
    expect(dev.peers.map((p) => p.publicKey).sort()).toEqual(want.peers.map((p) => p.publicKey).sort());
    expect(dev.peers.find((p) => p.publicKey === want.peers[2]!.publicKey)!.allowedIPs.toSorted()).toEqual(['10.244.3.0/24', '10.244.3.1/32']);
    expect(weftRoutes(rt)).toEqual(['10.244.0.0/16 weft0', 'fd00:10::/56 weft0']);
    expect((await rt.getLink('weft0'))!.up).toBe(true);
    // Untouched peers were not written.
    expect(fake.counters.peerWrites.get(want.peers[0]!.publicKey)).toBeUndefined();
    expect(fake.counters.peerWrites.get(want.peers[4]!.publicKey)).toBeUndefined();
  });

  it('answers an apply of the state object it last applied without any diff, and still repairs drift at resync', async () => {
    const { fake, rt, rec } = setup();
    const want = state(peers(3));
    expect((await rec.apply(want)).ok).toBe(true);
    let rtCalls = 0;
    for (const op of ['getLink', 'listAddresses', 'listRoutes'] as const) {
      const orig = rt[op].bind(rt) as (...a: unknown[]) => Promise<unknown>;
      (rt as unknown as Record<string, unknown>)[op] = (...a: unknown[]) => (rtCalls++, orig(...a));
    }
    fake.resetCounters();
    fake.driftRemovePeer('weft0', want.peers[0]!.publicKey);
    rt.dropRoute('10.244.0.0/16');
    const same = await rec.apply(want);
    expect(same).toMatchObject({ ok: true, writes: 0, unchanged: true });
    expect(fake.counters.reads).toBe(0);
    expect(rtCalls).toBe(0);
    expect(rec.stats().unchanged).toBe(1);
    // An equal but new object is diffed as before (against the trusted model, so the peer removed
    // by hand is not seen; the route is).
    const equal = await rec.apply(state(peers(3)));
    expect(equal.unchanged).toBeUndefined();
    expect(weftRoutes(rt)).toContain('10.244.0.0/16 weft0');
    // The periodic resync reads the device and repairs the rest.
    expect((await rec.resync()!).ok).toBe(true);
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(3);
  });

  it('retries a state whose pass failed when the same object is applied again', async () => {
    const { fake, rec } = setup();
    await rec.apply(state([]));
    const want = state(peers(4));
    fake.injectFailure({ op: 'set', afterPeers: 2 });
    expect((await rec.apply(want)).ok).toBe(false);
    const again = await rec.apply(want);
    expect(again).toMatchObject({ ok: true });
    expect(again.unchanged).toBeUndefined();
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(4);
    expect((await rec.apply(want)).unchanged).toBe(true);
  });

  it('recreates the interface when it disappears', async () => {
    const { fake, rt, rec } = setup();
    await rec.apply(state(peers(2)));
    fake.driftDeleteDevice('weft0');
    await rt.deleteLink('weft0');
    // Interface routes went with the link; the fallbacks still hold the cluster CIDRs closed.
    expect(rt.allRoutes().filter((r) => r.protocol === WEFT_RT_PROTO).map((r) => `${r.type} ${r.dst}`).sort()).toEqual(['blackhole 10.244.0.0/16', 'blackhole fd00:10::/56']);
    expect((await rec.resync()!).ok).toBe(true);
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(2);
    expect(weftRoutes(rt)).toHaveLength(2);
  });

  it('logs and counts errors, still installs the fail-closed routes, and retries at the next resync', async () => {
    const { fake, rt, rec } = setup();
    await rec.apply(state([]));
    fake.injectFailure({ op: 'set', afterPeers: 2 });
    rt.dropRoute('10.244.0.0/16');
    const r = await rec.apply(state(peers(4)));
    expect(r.ok).toBe(false);
    expect(r.errors.map((e) => e.stage)).toEqual(['device']);
    expect(weftRoutes(rt)).toContain('10.244.0.0/16 weft0');
    expect(rec.stats()).toMatchObject({ errors: 1, lastError: expect.stringContaining('injected failure') });
    const again = await rec.resync()!;
    expect(again.ok).toBe(true);
    expect(again.writes).toBe(2);
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(4);
    expect(rec.stats().lastError).toBeUndefined();
  });

  it.each(['getLink', 'setLink', 'listAddresses', 'addAddress', 'listRoutes', 'addRoute'] as const)('survives rtnetlink %s failing once and repairs at the next resync', async (op) => {
    const { rt, rec } = setup();
    rt.failNext[op] = new Error(`boom ${op}`);
    const r = await rec.apply(state(peers(1)));
    expect(r.ok).toBe(false);
    expect(r.errors[0]!.message).toContain(`boom ${op}`);
    expect(rt.failNext[op]).toBeUndefined();
    expect((await rec.resync()!).ok).toBe(true);
    expect(weftRoutes(rt)).toHaveLength(2);
    expect(await rt.getLink('weft0')).toMatchObject({ up: true, mtu: 1440 });
    expect(rec.stats()).toMatchObject({ errors: 1, reconciles: 2 });
  });

  it('runs one reconcile at a time and coalesces triggers into one more pass over the newest state', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let release: () => void = () => {};
    let gate: Promise<void> | null = null;
    const { fake, rec } = setup({
      wg: (w) => ({
        ...w,
        kind: w.kind,
        async getDevice(name) {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          if (gate) await gate;
          inFlight--;
          return w.getDevice(name);
        },
      }),
    });
    gate = new Promise((r) => (release = r));
    const first = rec.apply(state(peers(1)));
    const later = [2, 3, 4, 5].map((n) => rec.apply(state(peers(n))));
    await new Promise((r) => setTimeout(r, 10));
    gate = null;
    release();
    const results = await Promise.all([first, ...later]);
    expect(results.every((r) => r.ok)).toBe(true);
    expect(maxInFlight).toBe(1);
    expect(rec.stats().reconciles).toBe(2);
    expect(rec.stats().coalesced).toBe(3);
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(5);
    // The later callers all got the result of the second pass.
    expect(new Set(later.map(() => results[1]))).toEqual(new Set([results[1]]));
    expect(results[1]).toBe(results[4]);
  });

  it('adopts an existing interface after a restart without flushing it', async () => {
    const a = setup();
    const want = state(peers(20));
    await a.rec.apply(want);
    await a.rec.stop();
    const fake2 = new FakeWireGuardBackend({ sharedWith: a.fake });
    fake2.resetCounters();
    a.rt.writes = 0;
    const b = setup({ fake: fake2, rt: a.rt });
    const r = await b.rec.apply(want);
    expect(r).toMatchObject({ ok: true, writes: 0 });
    expect(fake2.counters.creates).toBe(0);
    expect(fake2.totalPeerWrites()).toBe(0);
  });

  it('stop leaves the datapath in place and later applies are skipped', async () => {
    const { fake, rt, rec } = setup();
    await rec.apply(state(peers(2)));
    await rec.stop();
    expect(await rec.apply(state([]))).toMatchObject({ skipped: true, ok: false });
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(2);
    expect(weftRoutes(rt)).toHaveLength(2);
  });

  it('uninstall removes only weft routes and its interface', async () => {
    const { fake, rt, rec } = setup();
    rt.createLink('eth0', { up: true });
    rt.injectRoute({ dst: '192.0.2.0/24', dev: 'eth0', protocol: 2, table: RT_TABLE_MAIN, metric: 0 });
    await rec.apply(state(peers(2)));
    await rec.uninstall('weft0');
    expect(fake.deviceNames()).toEqual([]);
    expect(await rt.getLink('weft0')).toBeNull();
    expect(rt.allRoutes()).toEqual([expect.objectContaining({ dst: '192.0.2.0/24', protocol: 2 })]);
  });

  it('resyncs on the injected timer, only after a first apply', async () => {
    const fns: (() => void)[] = [];
    const timers: ResyncTimers = { setInterval: (fn) => (fns.push(fn), fns.length), clearInterval: () => {} };
    const { fake, rec } = setup({ timers });
    rec.start();
    rec.start();
    expect(fns).toHaveLength(1);
    expect(rec.resync()).toBeNull();
    fns[0]!();
    expect(rec.stats().reconciles).toBe(0);
    await rec.apply(state(peers(1)));
    fake.driftRemovePeer('weft0', peers(1)[0]!.publicKey);
    fns[0]!();
    await new Promise((r) => setTimeout(r, 10));
    expect(rec.stats().reconciles).toBe(2);
    expect((await fake.getDevice('weft0'))!.peers).toHaveLength(1);
    await rec.stop();
  });

  describe('the trusted device model', () => {
    it('apply diffs against the model (no read); resync always reads and repairs drift', async () => {
      let t = 0;
      const fake = new FakeWireGuardBackend();
      const rt = new FakeRtNetlink();
      const rec = new DatapathReconciler({ wg: linkFakes(fake, rt), rt, logger, privateKey: self.privateKey, resyncMs: 30_000, now: () => t });
      const want = state(peers(5));
      await rec.apply(want);
      expect(rec.stats().deviceReads).toBe(1);
      fake.resetCounters();
      expect(await rec.apply(state(peers(5, (i) => (i === 2 ? { endpoint: '192.0.2.99:1' } : {}))))).toMatchObject({ ok: true, writes: 1 });
      expect(fake.counters.reads).toBe(0);
      // Drift by hand is not seen by an apply within the trust window...
      fake.driftRemovePeer('weft0', want.peers[0]!.publicKey);
      expect(await rec.apply(want)).toMatchObject({ ok: true, writes: 1 });
      expect((await fake.getDevice('weft0'))!.peers).toHaveLength(4);
      // ...but the resync reads and repairs it.
      expect(await rec.resync()).toMatchObject({ ok: true, writes: 1 });
      expect((await fake.getDevice('weft0'))!.peers).toHaveLength(5);
      expect(rec.stats().deviceReads).toBe(2);
      // Trust expires after trustMs (default resyncMs) of the last real read, whatever was applied since.
      t += 29_999;
      await rec.apply(want);
      expect(rec.stats().deviceReads).toBe(2);
      t += 1;
      await rec.apply(want);
      expect(rec.stats().deviceReads).toBe(3);
    });

    it('a recreated interface (new ifindex) forces a real read', async () => {
      const { fake, rt, rec } = setup();
      await rec.apply(state(peers(3)));
      fake.driftDeleteDevice('weft0');
      await rt.deleteLink('weft0');
      await fake.ensureDevice('weft0');
      rt.createLink('weft0', { kind: 'wireguard' });
      expect(await rec.apply(state(peers(3)))).toMatchObject({ ok: true });
      expect(rec.stats().deviceReads).toBe(2);
      expect((await fake.getDevice('weft0'))!.peers).toHaveLength(3);
    });

    it('a failed set drops the model; trustMs 0 reads every time', async () => {
      const { fake, rec } = setup();
      await rec.apply(state(peers(3)));
      fake.injectFailure({ op: 'set', afterPeers: 1 });
      expect((await rec.apply(state(peers(6)))).ok).toBe(false);
      expect((await rec.apply(state(peers(6)))).ok).toBe(true);
      expect(rec.stats().deviceReads).toBe(2);
      expect((await fake.getDevice('weft0'))!.peers).toHaveLength(6);

      const f2 = new FakeWireGuardBackend();
      const rt2 = new FakeRtNetlink();
      const r2 = new DatapathReconciler({ wg: linkFakes(f2, rt2), rt: rt2, logger, privateKey: self.privateKey, resyncMs: 30_000, trustMs: 0 });
      await r2.apply(state(peers(2)));
      await r2.apply(state(peers(2)));
      expect(r2.stats().deviceReads).toBe(2);
    });
  });

  it('rejects a bad private key at construction', () => {
    expect(() => new DatapathReconciler({ wg: new FakeWireGuardBackend(), rt: new FakeRtNetlink(), logger, privateKey: 'nope', resyncMs: 1000 })).toThrow();
  });

  it('never logs the private key', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) });
    const fake = new FakeWireGuardBackend();
    const rt = new FakeRtNetlink();
    const rec = new DatapathReconciler({ wg: linkFakes(fake, rt), rt, logger: log, privateKey: self.privateKey, resyncMs: 0 });
    fake.injectFailure({ op: 'set' });
    await rec.apply(state(peers(2)));
    await rec.apply(state(peers(2)));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).not.toContain(self.privateKey);
  });
});

describe('DatapathReconciler loop safety', () => {
  it('turns an unexpected throw outside the stages into a failed result and keeps running', async () => {
    const fake = new FakeWireGuardBackend();
    const rt = new FakeRtNetlink();
    let calls = 0;
    // A clock that throws once, outside every stage (the pass's start time).
    const now = () => {
      calls++;
      if (calls === 1) throw new Error('clock broke');
      return calls;
    };
    const rec = new DatapathReconciler({ wg: linkFakes(fake, rt), rt, logger, privateKey: self.privateKey, resyncMs: 0, now });
    const r = await rec.apply(state(peers(1)));
    expect(r.ok).toBe(false);
    expect(r.errors[0]!.message).toContain('clock broke');
    expect((await rec.apply(state(peers(1)))).ok).toBe(true);
    expect(rec.stats()).toMatchObject({ reconciles: 2, errors: 1 });
  });
});
