/**
 * Request/response latency probe (what netperf TCP_RR measures): a TCP echo server, and a client
 * that sends a fixed-size request and waits for the whole reply before the next one, on one
 * connection with Nagle off, and prints `{"rounds","p50_us","p99_us","mean_us"}` on stdout.
 *
 * Usage (run inside the pod namespaces):
 *   node rr.ts serve <port>
 *   node rr.ts client <host> <port> [--rounds N] [--bytes B] [--warmup W]
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { percentile } from './stats.ts';

/** Serves echo on `port` until the process is signalled; every byte received is sent back. */
export function serve(port: number): void {
  const server = createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
    s.on('error', () => s.destroy());
  });
  server.listen(port, '0.0.0.0', () => process.stdout.write(`listening ${port}\n`));
}

/** Runs `rounds` request/response exchanges of `bytes` bytes after `warmup` unrecorded ones; resolves the round-trip times in microseconds. */
export function client(host: string, port: number, rounds: number, bytes: number, warmup: number, timeoutMs = 20_000): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.alloc(bytes, 0x61);
    const samples: number[] = [];
    let got = 0;
    let t0 = 0n;
    let done = 0;
    const s: Socket = createConnection({ host, port }, () => {
      s.setNoDelay(true);
      send();
    });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`rr: timed out after ${timeoutMs} ms with ${samples.length} of ${rounds} rounds`));
    }, timeoutMs);
    const send = (): void => {
      got = 0;
      t0 = process.hrtime.bigint();
      s.write(payload);
    };
    s.on('data', (d) => {
      got += d.length;
      if (got < bytes) return;
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      done++;
      if (done > warmup) samples.push(us);
      if (samples.length >= rounds) {
        clearTimeout(timer);
        s.end();
        resolve(samples);
      } else {
        send();
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`rr: ${host}:${port}: ${err.message}`, { cause: err }));
    });
  });
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { rounds: { type: 'string', default: '2000' }, bytes: { type: 'string', default: '64' }, warmup: { type: 'string', default: '100' } },
  });
  const [mode, a, b] = positionals;
  if (mode === 'serve' && a) {
    serve(Number(a));
  } else if (mode === 'client' && a && b) {
    const rounds = Number(values.rounds);
    const bytes = Number(values.bytes);
    if (!(Number.isInteger(rounds) && rounds >= 10 && rounds <= 1_000_000 && Number.isInteger(bytes) && bytes >= 1 && bytes <= 65_536)) {
      process.stderr.write('rr: --rounds 10..1000000, --bytes 1..65536\n');
      process.exit(2);
    }
    client(a, Number(b), rounds, bytes, Number(values.warmup)).then(
      (us) => process.stdout.write(`${JSON.stringify({ rounds: us.length, p50_us: percentile(us, 50), p99_us: percentile(us, 99), mean_us: us.reduce((x, y) => x + y, 0) / us.length })}\n`),
      (err: Error) => {
        process.stderr.write(`${err.message}\n`);
        process.exit(1);
      },
    );
  } else {
    process.stderr.write('usage: rr.ts serve <port> | rr.ts client <host> <port> [--rounds N] [--bytes B]\n');
    process.exit(2);
  }
}
