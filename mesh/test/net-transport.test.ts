import dgram from 'node:dgram';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { Keyring, createMesh, generateIdentity } from '../index.ts';
import type { Mesh } from '../index.ts';

const key = new Uint8Array(32).fill(42);
const meshes: Mesh[] = [];
afterAll(async () => {
  await Promise.all(meshes.map((m) => m.stop()));
});

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

describe('UDP/TCP transport', () => {
  it('joins over TCP, gossips over UDP, and shrugs off hostile datagrams and streams', async () => {
    const mk = (name: string): Mesh => {
      const m = createMesh({ name, identity: generateIdentity(), keyring: new Keyring(key), bindAddr: '127.0.0.1', bindPort: 0, limits: { maxStreamBytes: 1 << 20 } });
      meshes.push(m);
      return m;
    };
    const a = mk('a');
    await a.start([]);
    const port = a.snapshot().members[0]!.port;
    expect(port).toBeGreaterThan(0);
    const b = mk('b');
    const c = mk('c');
    await Promise.all([b.start([`127.0.0.1:${port}`]), c.start([`127.0.0.1:${port}`])]);
    a.setLocal('node', new TextEncoder().encode('a-info'));
    expect(await until(() => [a, b, c].every((m) => m.counts().live === 3) && [b, c].every((m) => m.entryVersion('a', 'node') !== undefined), 10_000)).toBe(true);

    // Garbage datagrams.
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < 20; i++) sock.send(Buffer.alloc(100, i), port, '127.0.0.1');
    // A TCP client announcing a frame larger than the limit, and one sending garbage.
    const big = net.connect(port, '127.0.0.1');
    await new Promise((r) => big.once('connect', r));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(50 << 20);
    big.write(head);
    const closed = new Promise((r) => big.once('close', r));
    const junk = net.connect(port, '127.0.0.1');
    await new Promise((r) => junk.once('connect', r));
    const h2 = Buffer.alloc(4);
    h2.writeUInt32BE(10);
    junk.write(Buffer.concat([h2, Buffer.alloc(10, 7)]));
    const junkClosed = new Promise((r) => junk.once('close', r));
    junk.on('error', () => {});
    big.on('error', () => {});
    await closed;
    await junkClosed;
    expect(await until(() => a.stats().decryptFailures >= 21, 5000)).toBe(true);
    sock.close();

    b.setLocal('node', new TextEncoder().encode('b-info'));
    expect(await until(() => [a, c].every((m) => m.entryVersion('b', 'node') !== undefined), 10_000)).toBe(true);
    await c.leave(2000);
    expect(await until(() => a.memberState('c') === 'left', 5000)).toBe(true);
  }, 30_000);
});
