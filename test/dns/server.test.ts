import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { Registry } from 'prom-client';
import { DnsServer, registerDnsMetrics, type DnsServerOptions } from '../../src/dns/server.ts';
import { Forwarder } from '../../src/dns/forwarder.ts';
import { buildTable } from '../../src/dns/table.ts';
import { decode, nodeInfo, query, sampleTable } from './fixtures.ts';
import { fakeUpstream, tcpExchange, truncatingUpstream, udpExchange, type FakeUpstream } from './net-helpers.ts';

const logger = pino({ level: 'silent' });
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startServer(extra: Partial<DnsServerOptions> = {}, address = '127.0.0.1'): Promise<{ server: DnsServer; port: number }> {
  const server = new DnsServer({ listen: [{ address, port: 0 }], table: sampleTable(), logger, rateLimit: false, ...extra });
  await server.start();
  cleanups.push(() => server.close());
  return { server, port: server.addresses()[0].port };
}

async function tempResolvConf(text: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdns-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'resolv.conf');
  await writeFile(file, text);
  return file;
}

async function upstream(host: string, port: number, ip: string, opts: { silent?: boolean } = {}): Promise<FakeUpstream> {
  const u = await fakeUpstream(host, port, ip, opts);
  cleanups.push(() => u.close());
  return u;
}

async function startForwarder(resolvConfPath: string, upstreamPort: number, self: { address: string; port: number }[] = [], timeoutMs = 300): Promise<Forwarder> {
  const f = new Forwarder({ resolvConfPath, upstreamPort, selfAddresses: self, timeoutMs, logger, checkIntervalMs: 100 });
  await f.start();
  cleanups.push(() => f.close());
  return f;
}

const manyTable = buildTable({
  zone: 'weft.local',
  self: {
    info: nodeInfo('n1', 1, { podCIDRs: ['10.244.1.0/24', 'fd00::/64'] }),
    pods: [{ name: 'many', namespace: 'x', ips: Array.from({ length: 60 }, (_, i) => `fd00::${(i + 1).toString(16)}`) }],
  },
  remotes: [],
});

describe('DnsServer on loopback', () => {
  it('answers over UDP and TCP on the same port', async () => {
    const { server, port } = await startServer();
    const u = decode((await udpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A', { id: 11 })))!);
    expect(u).toMatchObject({ id: 11, rcode: 'NOERROR' });
    expect(u.answers![0]).toMatchObject({ data: '10.244.1.5' });
    const t = decode(await tcpExchange('127.0.0.1', port, query('api.default.pod.weft.local', 'A', { id: 12 })));
    expect(t).toMatchObject({ id: 12, rcode: 'NOERROR' });
    expect(t.answers![0]).toMatchObject({ data: '10.244.2.9' });
    const n = decode((await udpExchange('127.0.0.1', port, query('gone.default.pod.weft.local', 'A')))!);
    expect(n.rcode).toBe('NXDOMAIN');
    expect(server.stats().responses).toMatchObject({ NOERROR: 2, NXDOMAIN: 1 });
    expect(server.stats().latency.count).toBe(3);
  });

  it('serves repeated queries from the cache with the right IDs, and drops the cache on setTable', async () => {
    const { server, port } = await startServer();
    for (const id of [1, 2, 3]) {
      const r = decode((await udpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A', { id })))!);
      expect(r.id).toBe(id);
    }
    expect(server.stats().cacheHits).toBe(2);
    server.setTable(buildTable({
      zone: 'weft.local', self: { info: nodeInfo('node-1', 1), pods: [{ name: 'web', namespace: 'default', ips: ['10.244.1.99'] }] }, remotes: [],
    }));
    const r = decode((await udpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A', { id: 4 })))!);
    expect(r.answers![0]).toMatchObject({ data: '10.244.1.99' });
    server.setTable(sampleTable());
    const gone = decode((await udpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'AAAA', { id: 5 })))!);
    expect(gone.answers![0]).toMatchObject({ data: 'fd00:10:244:1::5' });
  });

  it('truncates a large answer over UDP and returns it whole over TCP', async () => {
    const { server, port } = await startServer({ table: manyTable });
    const u = decode((await udpExchange('127.0.0.1', port, query('many.x.pod.weft.local', 'AAAA')))!);
    expect(u.flag_tc).toBe(true);
    expect(u.answers).toEqual([]);
    const t = decode(await tcpExchange('127.0.0.1', port, query('many.x.pod.weft.local', 'AAAA')));
    expect(t.flag_tc).toBe(false);
    expect(t.answers).toHaveLength(60);
    expect(server.stats().truncated).toBe(1);
  });

  it.skipIf(!existsSync('/usr/bin/dig'))('dig retries over TCP after TC and gets the whole answer', async () => {
    const { port } = await startServer({ table: manyTable });
    const { stdout } = await promisify(execFile)('dig', ['+tries=1', '+time=2', '+noedns', '-p', String(port), '@127.0.0.1', 'many.x.pod.weft.local', 'AAAA']);
    expect(stdout).toMatch(/Truncated, retrying in TCP mode/);
    expect(stdout).toMatch(/status: NOERROR/);
    expect(stdout.match(/\tAAAA\tfd00::/g)).toHaveLength(60);
  });

  it('rate limits per source over UDP and counts the drops', async () => {
    const { server, port } = await startServer({ rateLimit: { qps: 1, burst: 5 }, now: () => 1000 });
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) =>
      udpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A', { id: i }), 1500)));
    expect(answers.filter((a) => a !== undefined)).toHaveLength(5);
    expect(server.stats().dropped.ratelimited).toBe(7);
    // TCP is not rate limited (no spoofing over a handshake).
    const t = decode(await tcpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A')));
    expect(t.rcode).toBe('NOERROR');
  });

  it('answers REFUSED out of zone when it has no forwarder, FORMERR to garbage, nothing to responses', async () => {
    const { server, port } = await startServer();
    expect(decode((await udpExchange('127.0.0.1', port, query('example.com', 'A')))!).rcode).toBe('REFUSED');
    const bad = Buffer.concat([query('web.default.pod.weft.local', 'A', { id: 77 }), Buffer.from([9, 9])]);
    expect(decode((await udpExchange('127.0.0.1', port, bad))!)).toMatchObject({ id: 77, rcode: 'FORMERR' });
    const resp = Buffer.from(query('web.default.pod.weft.local', 'A'));
    resp[2] |= 0x80;
    expect(await udpExchange('127.0.0.1', port, resp, 300)).toBeUndefined();
    expect(server.stats().dropped.response).toBe(1);
  });

  it('bounds TCP: oversized length prefix and idle connections are closed, connections are capped', async () => {
    const { server, port } = await startServer({ tcp: { maxQuerySize: 512, idleTimeoutMs: 200, maxConnections: 2 } });
    const closed = (c: net.Socket) => new Promise<void>((resolve) => c.on('close', () => resolve()));
    const big = net.connect({ host: '127.0.0.1', port });
    big.on('error', () => {});
    big.on('connect', () => big.write(Buffer.from([0xff, 0xff, 1, 2, 3])));
    await closed(big);
    const idle = net.connect({ host: '127.0.0.1', port });
    idle.on('error', () => {});
    const t0 = Date.now();
    await closed(idle);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    // Two connections held open: the third is refused by the server (closed without an answer).
    const held = [net.connect({ host: '127.0.0.1', port }), net.connect({ host: '127.0.0.1', port })];
    for (const h of held) h.on('error', () => {});
    await Promise.all(held.map((h) => new Promise((r) => h.on('connect', r))));
    await new Promise((r) => setTimeout(r, 50));
    await expect(tcpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A'), 500)).rejects.toThrow();
    for (const h of held) h.destroy();
    expect(server.stats().dropped.tcpLimit).toBeGreaterThanOrEqual(2);
  });

  it.each([[3, 16], [200, 4]])('answers %i pipelined TCP queries on one connection (max %i in progress)', async (count, maxPipelined) => {
    const { port } = await startServer({ tcp: { maxPipelined } });
    const c = net.connect({ host: '127.0.0.1', port });
    cleanups.push(() => { c.destroy(); });
    const ids = Array.from({ length: count }, (_, i) => i + 1);
    const frames = ids.map((id) => {
      const q = query(id === 2 ? 'api.default.pod.weft.local' : 'web.default.pod.weft.local', 'A', { id });
      const f = Buffer.alloc(q.length + 2);
      f.writeUInt16BE(q.length, 0);
      q.copy(f, 2);
      return f;
    });
    await new Promise((r) => c.on('connect', r));
    c.write(Buffer.concat(frames));
    const got: number[] = [];
    let buf = Buffer.alloc(0);
    await new Promise<void>((resolve) => c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        got.push(decode(buf.subarray(2, 2 + buf.readUInt16BE(0))).id!);
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (got.length === count) resolve();
    }));
    expect(got.sort((a, b) => a - b)).toEqual(ids);
  });

  it('exposes counters on a prom-client registry', async () => {
    const { server, port } = await startServer();
    await udpExchange('127.0.0.1', port, query('web.default.pod.weft.local', 'A'));
    const reg = new Registry();
    registerDnsMetrics(reg, server);
    const text = await reg.metrics();
    expect(text).toMatch(/weft_dns_responses_total\{rcode="NOERROR"\} 1/);
    expect(text).toMatch(/weft_dns_latency_bucket_seconds\{le="\+Inf"\} 1/);
    expect(server.counters()).toMatchObject({ responses_noerror: 1, queries_answered: 1 });
  });

  it('listens on several addresses at once, IPv6 included', async () => {
    const server = new DnsServer({ listen: [{ address: '127.0.0.13', port: 0 }, { address: '::1', port: 0 }], table: sampleTable(), logger, rateLimit: false });
    await server.start();
    cleanups.push(() => server.close());
    const [v4, v6] = server.addresses();
    expect(decode((await udpExchange('127.0.0.13', v4.port, query('web.default.pod.weft.local', 'A')))!).rcode).toBe('NOERROR');
    const dgram = await import('node:dgram');
    const answer = await new Promise<Buffer>((resolve) => {
      const s = dgram.createSocket('udp6');
      s.on('message', (m) => { s.close(); resolve(m); });
      s.send(query('web.default.pod.weft.local', 'AAAA'), v6.port, '::1');
    });
    expect(decode(answer).answers![0]).toMatchObject({ data: 'fd00:10:244:1::5' });
    const t = decode(await tcpExchange('::1', v6.port, query('api.default.pod.weft.local', 'A')));
    expect(t.answers![0]).toMatchObject({ data: '10.244.2.9' });
  });

  it('closes cleanly and releases its ports', async () => {
    const { server, port } = await startServer();
    await server.close();
    await server.close();
    const again = new DnsServer({ listen: [{ address: '127.0.0.1', port }], table: sampleTable(), logger });
    await again.start();
    await again.close();
  });

  it('fails to start on a taken port and leaves nothing bound', async () => {
    const { port } = await startServer();
    const other = new DnsServer({ listen: [{ address: '127.0.0.1', port }], table: sampleTable(), logger });
    await expect(other.start()).rejects.toThrow(/dns: bind udp 127\.0\.0\.1/);
  });
});

describe('forwarding through the server', () => {
  it('forwards out-of-zone queries upstream with a fresh ID and returns the original ID', async () => {
    const up = await upstream('127.0.0.2', 0, '192.0.2.7');
    const fwd = await startForwarder(await tempResolvConf('# test\nnameserver 127.0.0.2\noptions ndots:5\n'), up.port);
    const { server, port } = await startServer({ forwarder: fwd });
    const ids = [101, 102, 103, 104, 105];
    for (const id of ids) {
      const r = decode((await udpExchange('127.0.0.1', port, query('example.com', 'A', { id })))!);
      expect(r).toMatchObject({ id, rcode: 'NOERROR' });
      expect(r.answers![0]).toMatchObject({ data: '192.0.2.7' });
    }
    // The upstream saw random IDs, not the clients' (all five equal by chance: 2^-80).
    expect(up.ids).toHaveLength(5);
    expect(up.ids).not.toEqual(ids);
    const t = decode(await tcpExchange('127.0.0.1', port, query('example.org', 'A', { id: 9 })));
    expect(t).toMatchObject({ id: 9, rcode: 'NOERROR' });
    expect(server.stats().forwarded).toBe(6);
    expect(fwd.stats().forwarded).toBe(6);
  });

  it('tries upstreams in order and answers SERVFAIL when all are dead', async () => {
    const silent = await upstream('127.0.0.3', 0, '192.0.2.1', { silent: true });
    // 127.0.0.4 has nothing on that port: ICMP port unreachable, a fast failure.
    const file = await tempResolvConf('nameserver 127.0.0.3\nnameserver 127.0.0.4\n');
    const fwd = await startForwarder(file, silent.port, [], 200);
    const { server, port } = await startServer({ forwarder: fwd });
    const r = decode((await udpExchange('127.0.0.1', port, query('example.com', 'A', { id: 55 }), 3000))!);
    expect(r).toMatchObject({ id: 55, rcode: 'SERVFAIL' });
    expect(r.questions).toEqual([{ name: 'example.com', type: 'A', class: 'IN' }]);
    expect(silent.ids).toHaveLength(1);
    expect(fwd.stats()).toMatchObject({ upstreamFailures: 2, servfail: 1 });
    expect(server.stats().responses.SERVFAIL).toBe(1);
    // A live upstream after a dead one is used.
    const live = await upstream('127.0.0.5', silent.port, '192.0.2.55');
    await writeFile(file, 'nameserver 127.0.0.4\nnameserver 127.0.0.5\n');
    await fwd.reload(true);
    const ok = decode((await udpExchange('127.0.0.1', port, query('example.com', 'A', { id: 56 }), 3000))!);
    expect(ok.answers![0]).toMatchObject({ data: '192.0.2.55' });
    expect(live.ids).toHaveLength(1);
  });

  it('picks up resolv.conf changes, including replacement by rename', async () => {
    const a = await upstream('127.0.0.6', 0, '192.0.2.6');
    const b = await upstream('127.0.0.7', a.port, '192.0.2.77');
    const file = await tempResolvConf('nameserver 127.0.0.6\n');
    const fwd = await startForwarder(file, a.port);
    const { port } = await startServer({ forwarder: fwd });
    const ask = async () => decode((await udpExchange('127.0.0.1', port, query('example.net', 'A'), 1500))!).answers![0];
    expect(await ask()).toMatchObject({ data: '192.0.2.6' });
    const tmp = `${file}.new`;
    await writeFile(tmp, 'nameserver 127.0.0.7\n');
    await rename(tmp, file);
    await expect.poll(() => fwd.upstreams().map((u) => u.address), { timeout: 3000, interval: 50 }).toEqual(['127.0.0.7']);
    expect(await ask()).toMatchObject({ data: '192.0.2.77' });
    await writeFile(file, 'nameserver 127.0.0.6\nnameserver 127.0.0.7\n');
    await expect.poll(() => fwd.upstreams().length, { timeout: 3000, interval: 50 }).toBe(2);
  });

  it('passes a truncated upstream answer to UDP clients and retries over TCP for TCP clients', async () => {
    const up = await truncatingUpstream('127.0.0.12', 80);
    cleanups.push(() => up.close());
    const fwd = await startForwarder(await tempResolvConf('nameserver 127.0.0.12\n'), up.port);
    const { port } = await startServer({ forwarder: fwd });
    const u = decode((await udpExchange('127.0.0.1', port, query('big.example', 'A', { id: 31 })))!);
    expect(u).toMatchObject({ id: 31, flag_tc: true });
    expect(up.tcpQueries).toBe(0);
    const t = decode(await tcpExchange('127.0.0.1', port, query('big.example', 'A', { id: 32 })));
    expect(t).toMatchObject({ id: 32, flag_tc: false });
    expect(t.answers).toHaveLength(80);
    expect(up.tcpQueries).toBe(1);
  });

  it('forwards only for allowed sources; in-zone names are answered to everyone', async () => {
    const up = await upstream('127.0.0.14', 0, '192.0.2.14');
    const fwd = await startForwarder(await tempResolvConf('nameserver 127.0.0.14\n'), up.port);
    const { port: closed } = await startServer({ forwarder: fwd, forwardFrom: ['10.244.0.0/16', 'fd00::/8'] });
    expect(decode((await udpExchange('127.0.0.1', closed, query('example.com', 'A')))!).rcode).toBe('REFUSED');
    expect(decode(await tcpExchange('127.0.0.1', closed, query('example.com', 'A'))).rcode).toBe('REFUSED');
    expect(decode((await udpExchange('127.0.0.1', closed, query('web.default.pod.weft.local', 'A')))!).rcode).toBe('NOERROR');
    expect(up.ids).toHaveLength(0);
    const { port: open } = await startServer({ forwarder: fwd, forwardFrom: ['10.244.0.0/16', '127.0.0.0/8'] });
    expect(decode((await udpExchange('127.0.0.1', open, query('example.com', 'A')))!).answers![0]).toMatchObject({ data: '192.0.2.14' });
  });

  it('never forwards to itself', async () => {
    // Server on 127.0.0.8:P; resolv.conf lists itself first, then a real upstream on the same port.
    const { server, port } = await startServer({}, '127.0.0.8');
    const up = await upstream('127.0.0.9', port, '192.0.2.9');
    const fwd = await startForwarder(await tempResolvConf('nameserver 127.0.0.8\nnameserver 127.0.0.9\n'), port, [...server.addresses()]);
    expect(fwd.upstreams()).toEqual([{ address: '127.0.0.9', port }]);
    await server.close();
    const { port: p2 } = await startServer({ forwarder: fwd });
    const r = decode((await udpExchange('127.0.0.1', p2, query('example.com', 'A')))!);
    expect(r.answers![0]).toMatchObject({ data: '192.0.2.9' });
    expect(up.ids).toHaveLength(1);
  });
});

describe('DnsService', () => {
  it('starts with an empty table, serves updates, and closes', async () => {
    const { DnsService } = await import('../../src/dns/service.ts');
    const up = await upstream('127.0.0.10', 0, '192.0.2.10');
    const svc = await DnsService.start({
      zone: 'Weft.Local', ttl: 7, listen: [{ address: '127.0.0.11', port: 0 }],
      resolvConfPath: await tempResolvConf('nameserver 127.0.0.10\n'), upstreamPort: up.port, logger,
    });
    cleanups.push(() => svc.close());
    const port = svc.server.addresses()[0].port;
    const ask = async (name: string) => decode((await udpExchange('127.0.0.11', port, query(name, 'A')))!);
    expect((await ask('web.default.pod.weft.local')).rcode).toBe('NXDOMAIN');
    const stats = svc.update({ self: { info: nodeInfo('node-1', 1), pods: [{ name: 'web', namespace: 'default', ips: ['10.244.1.5'] }] }, remotes: [] });
    expect(stats.pods).toBe(1);
    const r = await ask('web.default.pod.weft.local');
    expect(r.answers![0]).toMatchObject({ data: '10.244.1.5', ttl: 7 });
    expect((await ask('example.com')).answers![0]).toMatchObject({ data: '192.0.2.10' });
    await svc.close();
    await svc.close();
  });

  it('rejects an invalid zone before binding anything', async () => {
    const { DnsService } = await import('../../src/dns/service.ts');
    await expect(DnsService.start({ zone: 'bad zone', ttl: 5, listen: [{ address: '127.0.0.1', port: 0 }], logger })).rejects.toThrow(/invalid zone/);
  });
});
