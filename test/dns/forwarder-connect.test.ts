/**
 * The forwarder when connecting to an upstream fails at once (no route, a broadcast address): the
 * upstream counts as failed and the next one is tried, or SERVFAIL is answered. Before the fix,
 * dgram's connect callback received the error, the code sent on the unconnected socket anyway, and
 * the RangeError thrown from the callback killed the agent (found by test/lab/e2e-dns.test.ts: a
 * PTR query for a dead node's pod, no longer in the zone, was forwarded to an unroutable upstream).
 * 255.255.255.255 makes connect(2) fail deterministically (EACCES without SO_BROADCAST), on any host.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Forwarder } from '../../src/dns/forwarder.ts';
import { decode, query } from './fixtures.ts';
import { fakeUpstream } from './net-helpers.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A forwarder reading `conf`, with its debug log lines collected. Timeout long enough that only a connect failure can end the first attempt in a test. */
async function forwarderWith(conf: string, port: number): Promise<{ fwd: Forwarder; lines: Array<{ msg?: string; err?: { message?: string } }> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdns-conn-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'resolv.conf');
  await writeFile(file, conf);
  const lines: Array<{ msg?: string; err?: { message?: string } }> = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
  const fwd = new Forwarder({ resolvConfPath: file, upstreamPort: port, selfAddresses: [], timeoutMs: 20_000, logger: pino({ level: 'debug' }, sink) });
  await fwd.start();
  cleanups.push(() => fwd.close());
  return { fwd, lines };
}

describe('Forwarder: an upstream whose connect fails', () => {
  it('is counted as failed and the next upstream answers', async () => {
    const up = await fakeUpstream('127.0.0.21', 0, '192.0.2.21');
    cleanups.push(() => up.close());
    const { fwd, lines } = await forwarderWith('nameserver 255.255.255.255\nnameserver 127.0.0.21\n', up.port);
    const res = decode((await fwd.forward(query('example.org', 'A', { id: 4242 }), 'udp'))!);
    expect(res).toMatchObject({ id: 4242, rcode: 'NOERROR' });
    expect(res.answers![0]).toMatchObject({ data: '192.0.2.21' });
    expect(fwd.stats()).toMatchObject({ forwarded: 1, upstreamFailures: 1, servfail: 0 });
    const failure = lines.find((l) => l.msg === 'upstream failed');
    expect(failure?.err?.message).toMatch(/^forward: 255\.255\.255\.255:\d+: connect: /);
  });

  it('answers SERVFAIL with the original ID when it is the only upstream', async () => {
    const { fwd } = await forwarderWith('nameserver 255.255.255.255\n', 53);
    const res = decode((await fwd.forward(query('example.org', 'A', { id: 777 }), 'udp'))!);
    expect(res).toMatchObject({ id: 777, rcode: 'SERVFAIL' });
    expect(fwd.stats()).toMatchObject({ upstreamFailures: 1, servfail: 1 });
  });
});
