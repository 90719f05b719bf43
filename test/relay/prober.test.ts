import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { LinkProber, udpProbeSender, type ProbeSender } from '../../src/relay/prober.ts';
import type { LinkTarget } from '../../src/relay/links.ts';
import type { WgDevice } from '../../src/wireguard/backend.ts';

const logger = pino({ level: 'silent' });

class ManualTimers {
  fns: (() => void)[] = [];
  cleared = 0;
  setInterval(fn: () => void): unknown {
    this.fns.push(fn);
    return this.fns.length;
  }
  clearInterval(): void {
    this.cleared++;
  }
}

class RecordingSender implements ProbeSender {
  sent: string[] = [];
  fail = new Set<string>();
  closed = false;
  async send(ip: string): Promise<void> {
    if (this.fail.has(ip)) throw new Error('EHOSTUNREACH');
    this.sent.push(ip);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

const device = (peers: { publicKey: string; lastHandshake: number }[]): WgDevice => ({
  name: 'weft0', listenPort: 51820, fwmark: 0,
  peers: peers.map((p) => ({ ...p, allowedIPs: [], persistentKeepalive: 0, rxBytes: 0, txBytes: 0 })),
});

describe('LinkProber', () => {
  const targets: LinkTarget[] = [
    { name: 'busy', publicKey: 'kb', meshIP: '10.244.1.1', endpoint: '192.0.2.1:51820' },
    { name: 'idle', publicKey: 'ki', meshIP: '10.244.2.1', endpoint: '192.0.2.2:51820' },
    { name: 'new', publicKey: 'kn', meshIP: '10.244.3.1', endpoint: '192.0.2.3:51820' },
  ];

  it('probes peers without a recent handshake, leaves busy ones alone, reports failing links after relayAfter, counts', async () => {
    let now = 1_700_000_000_000;
    const s = Math.floor(now / 1000);
    const sender = new RecordingSender();
    const failing: string[][] = [];
    const timers = new ManualTimers();
    const p = new LinkProber({
      targets: () => targets,
      readDevice: async () => device([{ publicKey: 'kb', lastHandshake: s - 20 }, { publicKey: 'ki', lastHandshake: s - 400 }]),
      sender, clock: () => now, timers, logger, intervalMs: 10_000, relayAfterMs: 30_000,
      onFailing: (n) => failing.push([...n]),
    });
    p.start();
    p.start();
    expect(timers.fns).toHaveLength(1);
    await p.tick();
    expect(sender.sent).toEqual(['10.244.2.1', '10.244.3.1']);
    expect(failing).toEqual([[]]);
    now += 30_000;
    await p.tick();
    expect(failing.at(-1)).toEqual(['idle', 'new']);
    expect(p.stats()).toMatchObject({ ticks: 2, probes: 4, probeErrors: 0, failing: 2 });
    await p.stop();
    expect(sender.closed).toBe(true);
    expect(timers.cleared).toBe(1);
    await p.tick();
    expect(p.stats().ticks).toBe(2);
  });

  it('kick runs a pass at once, or once more right after a pass in flight; never after stop', async () => {
    const sender = new RecordingSender();
    let release: (() => void) | undefined;
    let reads = 0;
    const p = new LinkProber({
      targets: () => [targets[2]!],
      readDevice: async () => {
        reads++;
        if (reads === 1) await new Promise<void>((r) => (release = r));
        return device([]);
      },
      sender, clock: () => 1_700_000_000_000, timers: new ManualTimers(), logger, intervalMs: 10_000,
    });
    p.kick(); // starts pass 1, which blocks in readDevice
    p.kick(); // pass 1 in flight: one more right after it
    p.kick(); // coalesces with the previous kick
    expect(reads).toBe(1);
    release!();
    for (let i = 0; i < 50 && p.stats().ticks < 2; i++) await new Promise((r) => setTimeout(r, 5));
    expect(p.stats().ticks).toBe(2);
    expect(reads).toBe(2);
    expect(sender.sent).toEqual(['10.244.3.1', '10.244.3.1']);
    await p.stop();
    p.kick();
    await new Promise((r) => setTimeout(r, 20));
    expect(p.stats().ticks).toBe(2);
  });

  it('never throws out of a tick: device read errors, send errors and a throwing callback are counted or logged', async () => {
    const sender = new RecordingSender();
    sender.fail.add('10.244.2.1');
    let readFails = true;
    const p = new LinkProber({
      targets: () => { if (readFails) return []; return targets; },
      readDevice: async () => { if (readFails) throw new Error('uapi: gone'); return device([]); },
      sender, clock: () => 1_700_000_000_000, timers: new ManualTimers(), logger,
      onFailing: () => { throw new Error('boom'); },
    });
    await expect(p.tick()).resolves.toBeUndefined();
    expect(p.stats().readErrors).toBe(1);
    readFails = false;
    await expect(p.tick()).resolves.toBeUndefined();
    expect(sender.sent).toEqual(['10.244.1.1', '10.244.3.1']);
    expect(p.stats()).toMatchObject({ probes: 2, probeErrors: 1 });
  });

  it('a null device (not created yet) probes nothing', async () => {
    const sender = new RecordingSender();
    const p = new LinkProber({ targets: () => targets, readDevice: async () => null, sender, clock: () => 0, timers: new ManualTimers(), logger });
    await p.tick();
    expect(sender.sent).toEqual([]);
  });
});

describe('udpProbeSender', () => {
  it('sends one datagram to <ip>:9 and rejects a non-IP', async () => {
    const sender = udpProbeSender();
    await expect(sender.send('not-an-ip')).rejects.toThrow(/not an IP/);
    // Port 9 on loopback: nothing listens; the send itself succeeds (WireGuard only needs the packet to leave).
    await expect(sender.send('127.0.0.1')).resolves.toBeUndefined();
    await sender.close();
  });
});
