#!/usr/bin/env node
/**
 * A small TCP traffic tool the lab runs inside pod namespaces (`node src/lab/probe.ts ...`), so the
 * demo and the end-to-end tests need nothing beyond Node:
 *
 * - `serve <port>`: echo server on 0.0.0.0, runs until killed.
 * - `http <port> <text>`: HTTP server on 0.0.0.0 answering every GET with `<text>` (for curl).
 * - `check <host:port,...> [bytes]`: for each target, connect, send `bytes` random bytes, expect the
 *   same bytes back; prints one JSON line `[{target, ok, error?}]`. Exits 0 (results are in the JSON).
 * - `stream <host:port> <seconds>`: keeps ONE connection open for that long, sending a sequence
 *   number every 50 ms and checking each echo; prints `{sent, received, error?, maxGapMs}`. Exits 0
 *   when every message came back on the same connection, 1 otherwise.
 */
import { createServer as createHttpServer } from 'node:http';
import { createServer, connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';

/** Splits "host:port" (IPv4 or a name). */
function target(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`probe: bad target ${JSON.stringify(s)}`);
  return { host: s.slice(0, i), port };
}

function serve(port: number): void {
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => sock.destroy());
    sock.pipe(sock);
  });
  server.listen(port, '0.0.0.0', () => process.stdout.write(`probe: echo server on :${port}\n`));
}

function http(port: number, text: string): void {
  const body = `${text}\n`;
  createHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }).listen(port, '0.0.0.0', () => process.stdout.write(`probe: http server on :${port}\n`));
}

function checkOne(t: string, bytes: number, timeoutMs: number): Promise<{ target: string; ok: boolean; error?: string }> {
  return new Promise((resolve) => {
    const { host, port } = target(t);
    const payload = randomBytes(bytes);
    const got: Buffer[] = [];
    let n = 0;
    let done = false;
    const finish = (ok: boolean, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(error ? { target: t, ok, error } : { target: t, ok });
    };
    const timer = setTimeout(() => finish(false, `timeout after ${timeoutMs} ms (${n}/${bytes} bytes echoed)`), timeoutMs);
    const sock: Socket = connect({ host, port }, () => sock.write(payload));
    sock.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= bytes) finish(Buffer.concat(got).subarray(0, bytes).equals(payload), n > bytes ? 'echo longer than sent' : undefined);
    });
    sock.on('error', (err) => finish(false, err.message));
    sock.on('close', () => finish(false, `closed after ${n}/${bytes} bytes`));
  });
}

async function check(list: string, bytes: number): Promise<void> {
  const targets = list.split(',').filter((s) => s !== '');
  const results = await Promise.all(targets.map((t) => checkOne(t, bytes, 5000)));
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

function stream(t: string, seconds: number): Promise<number> {
  return new Promise((resolve) => {
    const { host, port } = target(t);
    let sent = 0;
    let received = 0;
    let lastRx = Date.now();
    let maxGapMs = 0;
    let error: string | undefined;
    let buf = Buffer.alloc(0);
    let ticker: NodeJS.Timeout | undefined;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      if (ticker) clearInterval(ticker);
      sock.destroy();
      const ok = error === undefined && sent > 0 && received === sent;
      process.stdout.write(`${JSON.stringify({ target: t, sent, received, maxGapMs, ...(error ? { error } : {}) })}\n`);
      resolve(ok ? 0 : 1);
    };
    const sock = connect({ host, port }, () => {
      sock.setNoDelay(true);
      ticker = setInterval(() => {
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(BigInt(sent));
        sent++;
        sock.write(b);
      }, 50);
      setTimeout(() => {
        if (ticker) clearInterval(ticker);
        ticker = undefined;
        // Leave the last echoes time to come back.
        const deadline = Date.now() + 5000;
        const wait = setInterval(() => {
          if (received === sent || Date.now() > deadline) {
            clearInterval(wait);
            if (received !== sent && !error) error = `${sent - received} messages not echoed`;
            end();
          }
        }, 20);
      }, seconds * 1000);
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8) {
        const seq = Number(buf.readBigUInt64BE(0));
        buf = buf.subarray(8);
        if (seq !== received && !error) error = `echo out of order: got ${seq}, want ${received}`;
        received++;
        const now = Date.now();
        maxGapMs = Math.max(maxGapMs, now - lastRx);
        lastRx = now;
      }
    });
    sock.on('error', (err) => {
      error ??= err.message;
      end();
    });
    sock.on('close', () => {
      error ??= 'connection closed by peer';
      end();
    });
  });
}

async function main(argv: string[]): Promise<number> {
  const [mode, a, b] = argv;
  if (mode === 'serve' && a) {
    serve(Number(a));
    return -1;
  }
  if (mode === 'http' && a) {
    http(Number(a), b ?? 'hello from weft');
    return -1;
  }
  if (mode === 'check' && a) {
    await check(a, b ? Number(b) : 65536);
    return 0;
  }
  if (mode === 'stream' && a && b) return stream(a, Number(b));
  process.stderr.write('usage: probe.ts serve <port> | http <port> [text] | check <host:port,...> [bytes] | stream <host:port> <seconds>\n');
  return 2;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(2);
    },
  );
}
