import { describe, expect, it } from 'vitest';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';
import { WireGuardError } from '../../src/wireguard/errors.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { describeCompliance } from './compliance.ts';

describeCompliance('fake', async () => {
  const root = new FakeWireGuardBackend();
  let first = true;
  return {
    async open() {
      if (first) {
        first = false;
        return root;
      }
      return new FakeWireGuardBackend({ sharedWith: root });
    },
    async removePeerOutOfBand(ifname, publicKey) {
      root.driftRemovePeer(ifname, publicKey);
    },
    async setAllowedIPsOutOfBand(ifname, publicKey, allowedIPs) {
      root.driftSetPeer(ifname, { publicKey, allowedIPs });
    },
    async close() {},
  };
});

const key = () => generateKeyPair().publicKey;

describe('FakeWireGuardBackend specifics', () => {
  it('counts writes per peer, and a read-only pass writes nothing', async () => {
    const wg = new FakeWireGuardBackend();
    await wg.ensureDevice('wg0');
    const a = key();
    const b = key();
    await wg.setDevice('wg0', { listenPort: 1, peers: [{ publicKey: a }, { publicKey: b, allowedIPs: ['10.0.0.0/8'] }] });
    expect(wg.counters.deviceWrites).toBe(1);
    expect(wg.counters.peerWrites.get(a)).toBe(1);
    expect(wg.totalPeerWrites()).toBe(2);
    wg.resetCounters();
    await wg.getDevice('wg0');
    expect(wg.totalPeerWrites()).toBe(0);
    expect(wg.counters.setCalls).toBe(0);
    expect(wg.counters.reads).toBe(1);
    await wg.setDevice('wg0', { peers: [{ publicKey: b, endpoint: '192.0.2.1:1' }] });
    expect([...wg.counters.peerWrites]).toEqual([[b, 1]]);
    expect(wg.counters.deviceWrites).toBe(0);
  });

  it('applies a set partially when a failure is injected part-way, like a non-atomic UAPI set', async () => {
    const wg = new FakeWireGuardBackend();
    await wg.ensureDevice('wg0');
    const keys = [key(), key(), key()];
    wg.injectFailure({ op: 'set', afterPeers: 2, message: 'boom' });
    await expect(wg.setDevice('wg0', { peers: keys.map((k) => ({ publicKey: k })) })).rejects.toThrow(/set wg0: boom/);
    expect((await wg.getDevice('wg0'))!.peers.map((p) => p.publicKey)).toEqual(keys.slice(0, 2));
    // The failure is used once: a retry applies everything.
    await wg.setDevice('wg0', { peers: keys.map((k) => ({ publicKey: k })) });
    expect((await wg.getDevice('wg0'))!.peers).toHaveLength(3);
  });

  it('injects failures into ensure, get and delete once each', async () => {
    const wg = new FakeWireGuardBackend();
    for (const op of ['ensure', 'get', 'delete'] as const) wg.injectFailure({ op });
    await expect(wg.ensureDevice('wg0')).rejects.toBeInstanceOf(WireGuardError);
    await wg.ensureDevice('wg0');
    await expect(wg.getDevice('wg0')).rejects.toBeInstanceOf(WireGuardError);
    expect(await wg.getDevice('wg0')).not.toBeNull();
    await expect(wg.deleteDevice('wg0')).rejects.toBeInstanceOf(WireGuardError);
    await wg.deleteDevice('wg0');
    expect(wg.deviceNames()).toEqual([]);
  });

  it('set on a missing device fails; drift helpers and traffic do not count as writes', async () => {
    const wg = new FakeWireGuardBackend();
    await expect(wg.setDevice('nope', { listenPort: 1 })).rejects.toThrow(/no such device/);
    await wg.ensureDevice('wg0');
    const a = key();
    await wg.setDevice('wg0', { peers: [{ publicKey: a }] });
    wg.resetCounters();
    wg.simulateTraffic('wg0', a, { lastHandshake: 1000, rx: 10, tx: 20 });
    wg.driftSetDevice('wg0', { listenPort: 999 });
    const d = await wg.getDevice('wg0');
    expect(d!.listenPort).toBe(999);
    expect(d!.peers[0]).toMatchObject({ lastHandshake: 1000, rxBytes: 10, txBytes: 20 });
    expect(wg.totalPeerWrites()).toBe(0);
    wg.driftDeleteDevice('wg0');
    expect(await wg.getDevice('wg0')).toBeNull();
  });

  it('rejects calls after close', async () => {
    const wg = new FakeWireGuardBackend();
    await wg.close();
    await expect(wg.ensureDevice('wg0')).rejects.toThrow(/closed/);
  });
});
