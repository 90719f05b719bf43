/**
 * Relaying end to end over the fake mesh (issue 7): two NATed nodes whose direct link fails and one
 * public node. The prober of one NATed node finds the link failed, it asks for a relay, the public
 * node (the only candidate) opens a session and publishes it, both NATed nodes aim at the relay with
 * keepalive, status shows the peer `relayed`, and an endpoint change sends the pair back to direct.
 * Sockets are in-memory; the real forwarder is tested in forwarder.test.ts and the lab.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.ts';
import { MemoryBlockStore } from '../../src/agent/block-store.ts';
import { makePlanFn } from '../../src/agent/plan.ts';
import { parseConfig } from '../../src/config.ts';
import type { DatagramSocket, SocketFactory, UdpAddr } from '../../src/relay/forwarder.ts';
import { RELAY_OFFER_KEY, RELAY_SESSIONS_KEY, RELAY_WANT_KEY } from '../../src/relay/records.ts';
import { RelayService } from '../../src/relay/service.ts';
import type { WgDevice } from '../../src/wireguard/backend.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { FakeMesh, FakeMeshNet } from '../agent/fake-mesh.ts';
import { LastDatapath, NattedMesh, noopHostNet } from '../agent/fake-ports.ts';

const logger = pino({ level: 'silent' });

const bound = new Set<number>();
const sockets: SocketFactory = () => {
  let port = 0;
  const s: DatagramSocket = {
    bind: async (p) => void bound.add((port = p)),
    onMessage: () => {},
    send: async (_m: Uint8Array, _to: UdpAddr) => {},
    close: async () => void bound.delete(port),
  };
  return s;
};

let dir: string;
let net: FakeMeshNet;
let agents: Agent[] = [];
let now = 1_700_000_000_000;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wrl-relay-'));
  net = new FakeMeshNet();
  bound.clear();
});
afterEach(async () => {
  await Promise.all(agents.map((a) => a.stop()));
  agents = [];
  await rm(dir, { recursive: true, force: true });
});

/** Handshakes the fake device reports, by peer name (seconds since the epoch). */
const handshakes = new Map<string, Map<string, number>>();

function node(name: string, i: number, mesh: FakeMesh, retry?: { directAcks: Map<string, number>; retryMs: number }) {
  const config = parseConfig({ name, listenAddr: `192.0.2.${10 + i}`, podCidr: `10.244.${i}.0/24`, stateDir: join(dir, name), runDir: join(dir, `${name}-run`) }, {});
  const dp = new LastDatapath();
  const relay = new RelayService({ name, mode: config.relay, ports: config.relayPorts, host: `192.0.2.${10 + i}`, families: [4], mesh, clock: () => now, logger, graceMs: 0, sockets, ...(retry ? { directAcks: (n: string) => retry.directAcks.get(n) ?? 0, retryMs: retry.retryMs } : {}) });
  const hs = new Map<string, number>();
  handshakes.set(name, hs);
  const readDevice = async (): Promise<WgDevice> => ({
    name: 'weft0', listenPort: 51820, fwmark: 0,
    peers: (dp.last?.peers ?? []).map((p) => ({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIPs: [...p.allowedIPs], persistentKeepalive: p.persistentKeepalive, lastHandshake: hs.get(p.name) ?? 0, rxBytes: 0, txBytes: 0 })),
  });
  const agent = new Agent({
    config, logger, clock: () => now, random: Math.random, mesh, wgPublicKey: generateKeyPair().publicKey, backendKind: 'fake',
    endpoints: [`192.0.2.${10 + i}:51820`], plan: makePlanFn(config, { mtu: 1500, families: [4] }), datapath: dp,
    blockStore: new MemoryBlockStore(), hostNet: noopHostNet, initialSyncMs: 5, readDevice,
    prober: { sender: { send: async () => {}, close: async () => {} }, relayAfterMs: 30_000 },
    relay,
  });
  agents.push(agent);
  return { agent, dp, relay, mesh };
}

const settle = async () => {
  for (let i = 0; i < 8; i++) {
    await new Promise((r) => setImmediate(r));
    await Promise.all(agents.map((a) => a.idle()));
  }
};
const entryOf = (m: FakeMesh, key: string): unknown => {
  const e = m.entries.get(key);
  return e && !e.deleted ? JSON.parse(new TextDecoder().decode(e.payload)) : undefined;
};

describe('relaying between two NATed nodes through a public one', () => {
  it('detects the failed link, relays it on both sides, shows it relayed, and goes direct again when an endpoint changes', async () => {
    const ma = new NattedMesh(net, 'a');
    const mb = new NattedMesh(net, 'b');
    const a = node('a', 1, ma);
    const b = node('b', 2, mb);
    const r = node('r', 3, net.member('r'));
    for (const n of [r, a, b]) await n.agent.start();
    ma.observed = { addr: '198.18.0.254', port: 7946 };
    mb.observed = { addr: '198.18.0.254', port: 7956 };
    a.agent.trigger('nat');
    b.agent.trigger('nat');
    await settle();
    // Only the public node offers (auto); a and b reach r (fresh handshakes), not each other.
    expect(entryOf(r.mesh, RELAY_OFFER_KEY)).toEqual({ host: '192.0.2.13', ports: [51900, 51999] });
    expect(entryOf(ma, RELAY_OFFER_KEY)).toBeUndefined();
    for (const [n, peers] of [['a', ['r']], ['b', ['r']], ['r', ['a', 'b']]] as const) for (const p of peers) handshakes.get(n)!.set(p, Math.floor(now / 1000));
    expect(a.dp.last!.peers.find((p) => p.name === 'b')).toMatchObject({ endpoint: '192.0.2.12:51820', persistentKeepalive: 25 });

    await a.agent.prober!.tick();
    expect(entryOf(ma, RELAY_WANT_KEY)).toBeUndefined();
    now += 30_000;
    for (const hs of handshakes.values()) for (const k of hs.keys()) hs.set(k, Math.floor(now / 1000));
    await a.agent.prober!.tick();
    expect(entryOf(ma, RELAY_WANT_KEY)).toEqual(['b']);
    await settle();
    await settle();
    expect(entryOf(r.mesh, RELAY_SESSIONS_KEY)).toEqual([{ a: 'a', b: 'b', portA: 51900, portB: 51901 }]);
    expect([...bound].sort()).toEqual([51900, 51901]);
    expect(a.dp.last!.peers.find((p) => p.name === 'b')).toMatchObject({ endpoint: '192.0.2.13:51900', persistentKeepalive: 25, relay: 'r' });
    expect(b.dp.last!.peers.find((p) => p.name === 'a')).toMatchObject({ endpoint: '192.0.2.13:51901', persistentKeepalive: 25, relay: 'r' });
    // r and the others stay direct.
    expect(a.dp.last!.peers.find((p) => p.name === 'r')).toMatchObject({ endpoint: '192.0.2.13:51820' });
    expect(a.dp.last!.peers.find((p) => p.name === 'r')!.relay).toBeUndefined();
    const st = await a.agent.status();
    expect(st.peers.find((p) => p.name === 'b')).toMatchObject({ link: 'relayed', relay: 'r', endpoint: '192.0.2.13:51900' });
    expect(st.peers.find((p) => p.name === 'r')).toMatchObject({ link: 'connected' });
    expect(r.relay.stats()).toMatchObject({ offering: true, forwarder: { sessions: 1 } });

    // b moves (its NAT address changes): a withdraws its want, r closes the session, the pair is direct again.
    mb.observed = { addr: '198.18.0.253', port: 7956 };
    b.agent.trigger('moved');
    await settle();
    await settle();
    expect(entryOf(ma, RELAY_WANT_KEY)).toBeUndefined();
    expect(entryOf(r.mesh, RELAY_SESSIONS_KEY)).toEqual([]);
    expect(bound.size).toBe(0);
    expect(a.dp.last!.peers.find((p) => p.name === 'b')!.relay).toBeUndefined();
  });

  it('moves the pair to the other relay when the chosen one dies, and closes sessions of a pair whose side left', async () => {
    const ma = new NattedMesh(net, 'a');
    const mb = new NattedMesh(net, 'b');
    const a = node('a', 1, ma);
    const b = node('b', 2, mb);
    const r1 = node('r1', 3, net.member('r1'));
    const r2 = node('r2', 4, net.member('r2'));
    for (const n of [r1, r2, a, b]) await n.agent.start();
    ma.observed = { addr: '198.18.0.254', port: 7946 };
    mb.observed = { addr: '198.18.0.254', port: 7956 };
    a.agent.trigger('nat');
    b.agent.trigger('nat');
    await settle();
    a.relay.setFailing(['b']);
    await settle();
    await settle();
    const via = a.dp.last!.peers.find((p) => p.name === 'b')!.relay!;
    expect(['r1', 'r2']).toContain(via);
    const chosen = via === 'r1' ? r1 : r2;
    const other = via === 'r1' ? r2 : r1;
    expect(chosen.relay.stats().forwarder.sessions).toBe(1);
    expect(other.relay.stats().forwarder.sessions).toBe(0);

    // The chosen relay dies: every member picks the other one, which opens the session.
    await chosen.agent.stop();
    net.kill(via);
    await settle();
    await settle();
    const otherName = via === 'r1' ? 'r2' : 'r1';
    expect(a.dp.last!.peers.find((p) => p.name === 'b')).toMatchObject({ relay: otherName, endpoint: `${otherName === 'r1' ? '192.0.2.13' : '192.0.2.14'}:51900` });
    expect(b.dp.last!.peers.find((p) => p.name === 'a')).toMatchObject({ relay: otherName, endpoint: `${otherName === 'r1' ? '192.0.2.13' : '192.0.2.14'}:51901` });
    expect(other.relay.stats().forwarder.sessions).toBe(1);

    // b leaves: a drops its want and the relay closes the session (grace 0 here).
    await b.agent.stop({ leave: true });
    await settle();
    await settle();
    expect(a.relay.wants()).toEqual([]);
    expect(other.relay.stats().forwarder.sessions).toBe(0);
  });

  it('retries the direct link once the mesh reaches the peer directly again, backing off while retries fail', async () => {
    const retryMs = 60_000;
    const acksA = new Map<string, number>();
    const acksB = new Map<string, number>();
    const ma = new NattedMesh(net, 'a');
    const mb = new NattedMesh(net, 'b');
    const a = node('a', 1, ma, { directAcks: acksA, retryMs });
    const b = node('b', 2, mb, { directAcks: acksB, retryMs });
    const r = node('r', 3, net.member('r'));
    for (const n of [r, a, b]) await n.agent.start();
    ma.observed = { addr: '198.18.0.254', port: 7946 };
    mb.observed = { addr: '198.18.0.254', port: 7956 };
    const pass = async () => {
      a.agent.trigger('t');
      b.agent.trigger('t');
      await settle();
      await settle();
    };
    const fail = async () => {
      a.relay.setFailing(['b']);
      b.relay.setFailing(['a']);
      await pass();
    };
    const viaOnA = () => a.dp.last!.peers.find((p) => p.name === 'b')!.relay;
    const ackBoth = () => {
      acksA.set('b', (acksA.get('b') ?? 0) + 1);
      acksB.set('a', (acksB.get('a') ?? 0) + 1);
    };
    await pass();
    await fail();
    expect(viaOnA()).toBe('r');
    expect(a.relay.wants()).toEqual(['b']);

    // Due, but no evidence the direct path works: stays relayed.
    now += retryMs;
    await pass();
    expect(viaOnA()).toBe('r');
    // Evidence on one side only: that side stops asking, the other still does, so the pair stays relayed.
    acksA.set('b', 1);
    await pass();
    expect(a.relay.wants()).toEqual([]);
    expect(b.relay.wants()).toEqual(['a']);
    expect(viaOnA()).toBe('r');
    // Evidence on both sides: both stop asking, the relay closes the session, the pair is direct.
    acksB.set('a', 1);
    await pass();
    expect(b.relay.wants()).toEqual([]);
    expect(entryOf(r.mesh, RELAY_SESSIONS_KEY)).toEqual([]);
    expect(viaOnA()).toBeUndefined();
    expect(a.dp.last!.peers.find((p) => p.name === 'b')).toMatchObject({ endpoint: '192.0.2.12:51820' });

    // The retry fails (the direct link fails again): relayed again, and the next retry waits twice as long.
    now += 40_000;
    await fail();
    expect(viaOnA()).toBe('r');
    now += retryMs;
    ackBoth();
    await pass();
    expect(viaOnA()).toBe('r');
    now += retryMs;
    ackBoth();
    await pass();
    expect(viaOnA()).toBeUndefined();

    // This retry holds: once it has for a while, the back-off is forgotten and the next failure waits retryMs again.
    now += 3 * retryMs;
    await pass();
    await fail();
    expect(viaOnA()).toBe('r');
    now += retryMs;
    ackBoth();
    await pass();
    expect(viaOnA()).toBeUndefined();
  });
});
