import { createSocket, type Socket } from 'node:dgram';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_DATAGRAM, RelayForwarder, type DatagramSocket, type ForwardSession, type SocketFactory, type UdpAddr } from '../../src/relay/forwarder.ts';

const logger = pino({ level: 'silent' });

/** In-memory sockets: `deliver` injects a datagram; sends are recorded. */
class FakeSockets {
  bound = new Map<number, FakeSocket>();
  sent: { from: number; to: UdpAddr; msg: string }[] = [];
  busy = new Set<number>();
  closed = 0;
  factory: SocketFactory = () => new FakeSocket(this);
  deliver(port: number, msg: Uint8Array | string, from: UdpAddr): void {
    this.bound.get(port)!.handler?.(typeof msg === 'string' ? new TextEncoder().encode(msg) : msg, from);
  }
}
class FakeSocket implements DatagramSocket {
  port = 0;
  handler?: (msg: Uint8Array, from: UdpAddr) => void;
  readonly net: FakeSockets;
  constructor(net: FakeSockets) {
    this.net = net;
  }
  async bind(port: number): Promise<void> {
    if (this.net.busy.has(port) || this.net.bound.has(port)) throw new Error('EADDRINUSE');
    this.port = port;
    this.net.bound.set(port, this);
  }
  onMessage(fn: (msg: Uint8Array, from: UdpAddr) => void): void {
    this.handler = fn;
  }
  async send(msg: Uint8Array, to: UdpAddr): Promise<void> {
    this.net.sent.push({ from: this.port, to, msg: new TextDecoder().decode(msg) });
  }
  async close(): Promise<void> {
    if (this.net.bound.get(this.port) === this) this.net.bound.delete(this.port);
    this.net.closed++;
  }
}

const session = (over: Partial<ForwardSession> = {}): ForwardSession => ({
  a: { name: 'a', port: 51900, allow: ['198.18.0.254'], fallback: { host: '198.18.0.254', port: 51820 } },
  b: { name: 'b', port: 51901, allow: ['198.18.0.254', '192.0.2.11'], fallback: { host: '198.18.0.254', port: 51821 } },
  ...over,
});

describe('RelayForwarder (fake sockets)', () => {
  it('forwards each way out of the other port, to the fallback first and then to the address the side last sent from', async () => {
    const net = new FakeSockets();
    const f = new RelayForwarder({ host: '198.18.0.1', logger, sockets: net.factory });
    expect(await f.sync([session()])).toEqual({ failedPorts: [] });
    net.deliver(51900, 'from-a', { host: '198.18.0.254', port: 51820 });
    expect(net.sent).toEqual([{ from: 51901, to: { host: '198.18.0.254', port: 51821 }, msg: 'from-a' }]);
    // b answers from another mapping: learned; a's learned address is used for the reply.
    net.deliver(51901, 'from-b', { host: '198.18.0.254', port: 40001 });
    expect(net.sent[1]).toEqual({ from: 51900, to: { host: '198.18.0.254', port: 51820 }, msg: 'from-b' });
    net.deliver(51900, 'again', { host: '198.18.0.254', port: 51820 });
    expect(net.sent[2]).toEqual({ from: 51901, to: { host: '198.18.0.254', port: 40001 }, msg: 'again' });
    expect(f.stats()).toMatchObject({ sessions: 1, packets: 3, bytes: 17 });
    await f.close();
    expect(net.bound.size).toBe(0);
  });

  it('drops and counts datagrams from unknown sources, empty or oversized ones, and those with nowhere to go', async () => {
    const net = new FakeSockets();
    const f = new RelayForwarder({ host: '198.18.0.1', logger, sockets: net.factory });
    await f.sync([session({ b: { name: 'b', port: 51901, allow: ['192.0.2.11'] } })]);
    net.deliver(51900, 'x', { host: '198.18.0.99', port: 1 });
    net.deliver(51901, 'x', { host: '198.18.0.254', port: 1 });
    net.deliver(51900, new Uint8Array(0), { host: '198.18.0.254', port: 51820 });
    net.deliver(51900, new Uint8Array(MAX_DATAGRAM + 1), { host: '198.18.0.254', port: 51820 });
    // b has no fallback and has not sent yet.
    net.deliver(51900, 'x', { host: '198.18.0.254', port: 51820 });
    expect(net.sent).toEqual([]);
    expect(f.stats().drops).toEqual({ source: 2, size: 2, 'no-destination': 1, 'send-error': 0 });
    await f.close();
  });

  it('sync opens, updates in place and closes; a port that cannot be bound is reported and nothing half-open stays', async () => {
    const net = new FakeSockets();
    const f = new RelayForwarder({ host: '198.18.0.1', logger, sockets: net.factory });
    net.busy.add(51903);
    const two = [session(), session({ a: { name: 'c', port: 51902, allow: [] }, b: { name: 'd', port: 51903, allow: [] } })];
    expect(await f.sync(two)).toEqual({ failedPorts: [51903] });
    expect([...net.bound.keys()].sort()).toEqual([51900, 51901]);
    // New allow list applies to the open session without reopening it.
    await f.sync([session({ a: { name: 'a', port: 51900, allow: ['198.18.0.77'] } })]);
    net.deliver(51900, 'x', { host: '198.18.0.77', port: 5 });
    expect(net.sent).toHaveLength(1);
    await f.sync([]);
    expect(net.bound.size).toBe(0);
    expect(f.stats().sessions).toBe(0);
    await f.close();
    await f.close();
  });

  it('refuses a bind address that is not an IP', () => {
    expect(() => new RelayForwarder({ host: 'relay.local', logger })).toThrow(/not an IP/);
  });
});

describe('RelayForwarder (real UDP on loopback)', () => {
  const sockets: Socket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.close();
  });
  const udp = async (): Promise<{ s: Socket; port: number; got: string[] }> => {
    const s = createSocket('udp4');
    sockets.push(s);
    const got: string[] = [];
    s.on('message', (m) => got.push(m.toString()));
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    return { s, port: s.address().port, got };
  };
  const freePort = async (): Promise<number> => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    const p = s.address().port;
    await new Promise<void>((r) => s.close(() => r()));
    return p;
  };

  it('relays datagrams between two sockets both ways and closes its sockets', async () => {
    const a = await udp();
    const b = await udp();
    const pa = await freePort();
    const pb = await freePort();
    const f = new RelayForwarder({ host: '127.0.0.1', logger });
    const res = await f.sync([{ a: { name: 'a', port: pa, allow: ['127.0.0.1'] }, b: { name: 'b', port: pb, allow: ['127.0.0.1'], fallback: { host: '127.0.0.1', port: b.port } } }]);
    expect(res.failedPorts).toEqual([]);
    a.s.send('hello-b', pa, '127.0.0.1');
    await waitUntil(() => b.got.length > 0);
    expect(b.got).toEqual(['hello-b']);
    b.s.send('hello-a', pb, '127.0.0.1');
    await waitUntil(() => a.got.length > 0);
    expect(a.got).toEqual(['hello-a']);
    await f.close();
    // The relay ports are free again.
    const again = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.bind(pa, '127.0.0.1', () => resolve());
    });
    again.close();
  });
});

async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}
