/**
 * The DNS server: UDP and TCP listeners in front of the pure handler and the forwarder.
 *
 * - `setTable` swaps the lookup table in O(1) plus clearing the answer cache; it never blocks.
 * - Answers are cached as the handler's encoded bytes, keyed by transport and the query bytes after
 *   the ID, and dropped on every table swap: the handler is a pure function of exactly those
 *   inputs, so a hit only re-stamps the client's ID.
 * - UDP answers are rate limited per source address (token bucket, bounded memory) so the node
 *   cannot be used as an amplifier; limited queries are dropped and counted. TCP needs a completed
 *   handshake (no spoofing) and is bounded instead: max connections, idle timeout, max message
 *   size, max pipelined queries per connection.
 * - Counters by rcode and a latency histogram are kept in `stats()`; `registerDnsMetrics` exposes
 *   them on a prom-client registry.
 * The server does not own the forwarder: whoever created it closes it.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorResponse, handleQuery, responseRcode, DEFAULT_MAX_QUERY_SIZE, type HandlerOptions } from './handler.ts';
import type { DnsTable } from './table.ts';
import { SourceRateLimiter, type RateLimitOptions } from './ratelimit.ts';
import type { ListenAddress } from './forwarder.ts';
import { SourceAcl } from './acl.ts';

/** What the server needs from a forwarder (see forwarder.ts); must never reject. */
export interface QueryForwarder {
  forward(query: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined>;
}

/** TCP bounds. */
export interface TcpLimits {
  /** Default 256. */
  readonly maxConnections?: number;
  /** A connection with no traffic for this long is closed. Default 10 s. */
  readonly idleTimeoutMs?: number;
  /** Largest query accepted; a larger length prefix closes the connection. Default 4096. */
  readonly maxQuerySize?: number;
  /** Queries in progress per connection before reading pauses. Default 16. */
  readonly maxPipelined?: number;
}

/** Options of {@link DnsServer}. */
export interface DnsServerOptions {
  /** Addresses to serve on, UDP and TCP each. Port 0 picks one free port shared by UDP and TCP. */
  readonly listen: readonly ListenAddress[];
  readonly table: DnsTable;
  /** Out-of-zone queries go here; without it they get REFUSED. */
  readonly forwarder?: QueryForwarder;
  /**
   * Sources allowed to have out-of-zone names forwarded (CIDRs, e.g. the cluster CIDRs plus
   * loopback); others get REFUSED for them, so the node is no open resolver. In-zone names are
   * answered to everyone. Default: everyone.
   */
  readonly forwardFrom?: readonly string[];
  /** Answer TTL in seconds. Default 5. */
  readonly ttl?: number;
  /** EDNS0 UDP payload size advertised. Default 1232. */
  readonly ednsUdpSize?: number;
  /** Per-source UDP limit; `false` turns it off. Default 1000 qps, burst 2000, 65536 sources. */
  readonly rateLimit?: RateLimitOptions | false;
  readonly tcp?: TcpLimits;
  /** Cached answers at most (then the cache starts over). Default 20000. */
  readonly cacheSize?: number;
  readonly logger: Logger;
  /** Milliseconds clock for the rate limiter. Default performance.now. */
  readonly now?: () => number;
}

/** Latency histogram bucket upper bounds, in seconds. */
export const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5] as const;

/** Counters of the server. */
export interface DnsServerStats {
  /** Responses sent, by rcode name (NOERROR, NXDOMAIN, FORMERR, SERVFAIL, ...). */
  readonly responses: Readonly<Record<string, number>>;
  /** Queries dropped without an answer, by reason. */
  readonly dropped: Readonly<Record<'short' | 'response' | 'ratelimited' | 'tcpLimit' | 'unanswerable', number>>;
  readonly forwarded: number;
  readonly truncated: number;
  readonly cacheHits: number;
  /** Non-cumulative counts per {@link LATENCY_BUCKETS} bound, plus a last +Inf slot. */
  readonly latency: { readonly counts: readonly number[]; readonly sum: number; readonly count: number };
}

/** Bytes of answers a TCP client may leave unread before it is disconnected. */
const MAX_TCP_UNREAD = 256 * 1024;
const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

interface Cached {
  readonly bytes: Buffer;
  readonly rcode: string;
  readonly truncated: boolean;
}

type Outcome = { bytes: Buffer; rcode: string; truncated: boolean } | 'forward' | 'drop';

/**
 * dgram runs every send's address through `lookup` (by default dns.lookup, which answers IP
 * literals on the next tick). The server only ever sends to IP literals taken from `rinfo`, so it
 * answers synchronously and refuses names: one tick and one closure less per answer.
 */
function literalLookup(host: string, _options: unknown, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = net.isIP(host);
  if (family !== 0) cb(null, host, family);
  else cb(new DnsServerError(`dns: refusing to resolve ${JSON.stringify(host)}: the server sends to IP addresses only`), host, 0);
}

/** Error starting or running the server, e.g. `dns: bind udp 10.244.3.1:53: EADDRINUSE`. */
export class DnsServerError extends Error {
  override name = 'DnsServerError';
}

/** A UDP+TCP DNS server; see the module comment. */
export class DnsServer {
  readonly #opts: DnsServerOptions;
  readonly #log: Logger;
  readonly #limiter: SourceRateLimiter | undefined;
  readonly #forwardAcl: SourceAcl | undefined;
  readonly #handlerUdp: HandlerOptions;
  readonly #handlerTcp: HandlerOptions;
  /** Answer caches per transport (the answer differs: UDP may be truncated), keyed by the query after its ID. */
  readonly #cacheUdp = new Map<string, Cached>();
  readonly #cacheTcp = new Map<string, Cached>();
  readonly #cacheSize: number;
  readonly #udp: dgram.Socket[] = [];
  readonly #tcp: net.Server[] = [];
  readonly #conns = new Set<net.Socket>();
  readonly #bound: ListenAddress[] = [];
  #table: DnsTable;
  #closed = false;

  readonly #responses: Record<string, number> = {};
  readonly #dropped = { short: 0, response: 0, ratelimited: 0, tcpLimit: 0, unanswerable: 0 };
  #forwarded = 0;
  #truncated = 0;
  #cacheHits = 0;
  readonly #latCounts = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
  #latSum = 0;
  #latCount = 0;

  constructor(opts: DnsServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#table = opts.table;
    const rl = opts.rateLimit === undefined ? { qps: 1000, burst: 2000 } : opts.rateLimit;
    this.#limiter = rl === false ? undefined : new SourceRateLimiter(rl);
    this.#forwardAcl = opts.forwardFrom === undefined ? undefined : new SourceAcl(opts.forwardFrom);
    const maxQuerySize = opts.tcp?.maxQuerySize ?? DEFAULT_MAX_QUERY_SIZE;
    this.#handlerUdp = { transport: 'udp', ttl: opts.ttl, ednsUdpSize: opts.ednsUdpSize, maxQuerySize };
    this.#handlerTcp = { transport: 'tcp', ttl: opts.ttl, ednsUdpSize: opts.ednsUdpSize, maxQuerySize };
    this.#cacheSize = opts.cacheSize ?? 20000;
  }

  /** Binds every listen address (UDP and TCP). Rejects with {@link DnsServerError} if one fails; nothing stays bound then. */
  async start(): Promise<void> {
    try {
      for (const l of this.#opts.listen) await this.#bindPair(l);
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** The addresses actually bound (port 0 resolved), UDP and TCP sharing each port. */
  addresses(): readonly ListenAddress[] {
    return [...this.#bound];
  }

  /** Swaps the lookup table; answers from the old table are dropped from the cache. Never blocks. */
  setTable(table: DnsTable): void {
    this.#table = table;
    this.#cacheUdp.clear();
    this.#cacheTcp.clear();
  }

  /** The table in use. */
  table(): DnsTable {
    return this.#table;
  }

  /** A snapshot of the counters. */
  stats(): DnsServerStats {
    return {
      responses: { ...this.#responses },
      dropped: { ...this.#dropped },
      forwarded: this.#forwarded,
      truncated: this.#truncated,
      cacheHits: this.#cacheHits,
      latency: { counts: [...this.#latCounts], sum: this.#latSum, count: this.#latCount },
    };
  }

  /** Flat counters (`responses_noerror`, `dropped_ratelimited`, ...) for the agent's metric sources. */
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.#responses)) out[`responses_${k.toLowerCase()}`] = v;
    for (const [k, v] of Object.entries(this.#dropped)) out[`dropped_${k.toLowerCase()}`] = v;
    out.forwarded = this.#forwarded;
    out.truncated = this.#truncated;
    out.cache_hits = this.#cacheHits;
    out.queries_answered = this.#latCount;
    return out;
  }

  /** Closes every socket and connection. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#udp.splice(0)) {
      await new Promise<void>((resolve) => {
        try { s.close(() => resolve()); } catch { resolve(); }
      });
    }
    for (const c of this.#conns) c.destroy();
    this.#conns.clear();
    for (const srv of this.#tcp.splice(0)) await new Promise<void>((resolve) => srv.close(() => resolve()));
  }

  async #bindPair(l: ListenAddress): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const udp = await this.#bindUdp(l.address, l.port);
      const port = udp.address().port;
      try {
        const tcp = await this.#bindTcp(l.address, port);
        this.#udp.push(udp);
        this.#tcp.push(tcp);
        this.#bound.push({ address: l.address, port });
        return;
      } catch (err) {
        udp.close();
        // With port 0 the UDP port may be taken for TCP: try another one.
        if (l.port !== 0 || attempt >= 20) throw err;
      }
    }
  }

  #bindUdp(address: string, port: number): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type: net.isIPv6(address) ? 'udp6' : 'udp4', recvBufferSize: 1 << 21, lookup: literalLookup });
      const onError = (err: Error): void => {
        sock.close();
        reject(new DnsServerError(`dns: bind udp ${address}:${port}: ${err.message}`, { cause: err }));
      };
      sock.once('error', onError);
      sock.bind({ address, port, exclusive: true }, () => {
        sock.off('error', onError);
        sock.on('error', (err) => this.#log.debug({ err }, 'dns udp socket error'));
        sock.on('message', (msg, rinfo) => this.#onUdp(sock, msg, rinfo));
        resolve(sock);
      });
    });
  }

  #bindTcp(address: string, port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer((c) => this.#onTcp(c));
      srv.maxConnections = this.#opts.tcp?.maxConnections ?? 256;
      srv.on('drop', () => { this.#dropped.tcpLimit++; });
      const onError = (err: Error): void => {
        srv.close();
        reject(new DnsServerError(`dns: bind tcp ${address}:${port}: ${err.message}`, { cause: err }));
      };
      srv.once('error', onError);
      srv.listen({ host: address, port, exclusive: true }, () => {
        srv.off('error', onError);
        srv.on('error', (err) => this.#log.warn({ err }, 'dns tcp server error'));
        resolve(srv);
      });
    });
  }

  /** Answers from the cache or the handler; counts drops. */
  #answer(msg: Buffer, transport: 'udp' | 'tcp'): Outcome {
    const cacheable = msg.length >= 12 && msg.length <= 512;
    const cache = transport === 'udp' ? this.#cacheUdp : this.#cacheTcp;
    const key = cacheable ? msg.toString('latin1', 2) : '';
    if (cacheable) {
      const hit = cache.get(key);
      if (hit !== undefined) {
        this.#cacheHits++;
        const out = Buffer.allocUnsafe(hit.bytes.length);
        hit.bytes.copy(out);
        out[0] = msg[0];
        out[1] = msg[1];
        return { bytes: out, rcode: hit.rcode, truncated: hit.truncated };
      }
    }
    const r = handleQuery(msg, this.#table, transport === 'udp' ? this.#handlerUdp : this.#handlerTcp);
    if (r.kind === 'drop') {
      this.#dropped[r.reason]++;
      return 'drop';
    }
    if (r.kind === 'forward') return 'forward';
    if (cacheable) {
      if (cache.size >= this.#cacheSize) cache.clear();
      cache.set(key, { bytes: Buffer.from(r.bytes), rcode: r.rcode, truncated: r.truncated });
    }
    return { bytes: r.bytes, rcode: r.rcode, truncated: r.truncated };
  }

  #count(rcode: string, truncated: boolean, t0: number): void {
    this.#responses[rcode] = (this.#responses[rcode] ?? 0) + 1;
    if (truncated) this.#truncated++;
    const s = (performance.now() - t0) / 1000;
    let i = 0;
    while (i < LATENCY_BUCKETS.length && s > LATENCY_BUCKETS[i]) i++;
    this.#latCounts[i]++;
    this.#latSum += s;
    this.#latCount++;
  }

  /** Forwards `msg`; `send` is called exactly once, with undefined when there is nothing to send. */
  #forward(msg: Buffer, transport: 'udp' | 'tcp', source: string | undefined, t0: number, send: (b: Buffer | undefined) => void): void {
    const fw = this.#opts.forwarder;
    if (fw === undefined || (this.#forwardAcl !== undefined && !this.#forwardAcl.allows(source))) {
      const refused = errorResponse(msg, 'REFUSED');
      if (refused) this.#count('REFUSED', false, t0);
      else this.#dropped.unanswerable++;
      send(refused);
      return;
    }
    this.#forwarded++;
    fw.forward(Buffer.from(msg), transport).then((res) => {
      if (res === undefined) this.#dropped.unanswerable++;
      else {
        const rc = responseRcode(res);
        this.#count(RCODE_NAMES[rc] ?? `RCODE_${rc}`, (res.length >= 4 && (res[2] & 0x02) !== 0), t0);
      }
      send(res);
    }, (err: unknown) => {
      // Forwarders must not reject; if one does, the client gets nothing and we log why.
      this.#dropped.unanswerable++;
      this.#log.warn({ err }, 'dns forwarder rejected');
      send(undefined);
    });
  }

  #onUdp(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const t0 = performance.now();
    if (this.#limiter !== undefined && !this.#limiter.allow(rinfo.address, this.#opts.now ? this.#opts.now() : t0)) {
      this.#dropped.ratelimited++;
      return;
    }
    const out = this.#answer(msg, 'udp');
    if (out === 'drop') return;
    if (out === 'forward') {
      this.#forward(msg, 'udp', rinfo.address, t0, (b) => {
        if (!this.#closed && b !== undefined) sock.send(b, rinfo.port, rinfo.address);
      });
      return;
    }
    this.#count(out.rcode, out.truncated, t0);
    // No per-send callback (it costs a closure and a completion callback per answer); send errors
    // surface as the socket's 'error' events.
    sock.send(out.bytes, rinfo.port, rinfo.address);
  }

  #onTcp(c: net.Socket): void {
    if (this.#closed) {
      c.destroy();
      return;
    }
    this.#conns.add(c);
    const limits = this.#opts.tcp ?? {};
    const maxQuery = limits.maxQuerySize ?? DEFAULT_MAX_QUERY_SIZE;
    const maxPipelined = limits.maxPipelined ?? 16;
    let buf: Buffer = Buffer.alloc(0);
    let pending = 0;
    c.setNoDelay(true);
    c.setTimeout(limits.idleTimeoutMs ?? 10_000, () => c.destroy());
    c.on('error', () => c.destroy());
    c.on('close', () => this.#conns.delete(c));
    const send = (b: Buffer | undefined): void => {
      pending--;
      if (b !== undefined && !c.destroyed && c.writable) {
        // A client that does not read its answers is not allowed to make us buffer them forever.
        if (c.writableLength > MAX_TCP_UNREAD) {
          this.#dropped.tcpLimit++;
          c.destroy();
          return;
        }
        const framed = Buffer.allocUnsafe(b.length + 2);
        framed.writeUInt16BE(b.length, 0);
        b.copy(framed, 2);
        c.write(framed);
      }
      if (pending < maxPipelined && !c.destroyed) drain();
    };
    // Handles complete frames from `buf` while fewer than maxPipelined queries are in progress;
    // reading pauses otherwise and resumes as answers go out.
    let draining = false;
    const drain = (): void => {
      // Synchronous answers call send() -> drain() from inside the loop: the loop already continues.
      if (draining) return;
      draining = true;
      try {
        drainFrames();
      } finally {
        draining = false;
      }
    };
    const drainFrames = (): void => {
      while (buf.length >= 2 && pending < maxPipelined) {
        const len = buf.readUInt16BE(0);
        if (len > maxQuery) {
          this.#dropped.tcpLimit++;
          c.destroy();
          return;
        }
        if (buf.length < len + 2) break;
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        const t0 = performance.now();
        pending++;
        const out = this.#answer(msg, 'tcp');
        if (out === 'drop') {
          pending--;
          // A peer that sends what we cannot even answer FORMERR to is not a DNS client.
          c.destroy();
          return;
        }
        if (out === 'forward') this.#forward(msg, 'tcp', c.remoteAddress, t0, send);
        else {
          this.#count(out.rcode, out.truncated, t0);
          send(out.bytes);
        }
        if (c.destroyed) return;
      }
      if (pending >= maxPipelined || buf.length > maxQuery + 2) c.pause();
      else if (c.isPaused()) c.resume();
    };
    c.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      drain();
    });
  }
}

/**
 * Registers the server's counters and latency on `registry`, read at scrape time:
 * `weft_dns_responses_total{rcode}`, `weft_dns_dropped_total{reason}`, `weft_dns_forwarded_total`,
 * `weft_dns_truncated_total`, `weft_dns_cache_hits_total` and `weft_dns_latency_bucket_seconds{le}`
 * (cumulative counts per latency bound, i.e. histogram buckets as a gauge).
 */
export function registerDnsMetrics(registry: Registry, server: Pick<DnsServer, 'stats'>): void {
  const r = [registry];
  new Counter({
    name: 'weft_dns_responses_total', help: 'DNS responses sent, by rcode', labelNames: ['rcode'], registers: r,
    collect() {
      this.reset();
      for (const [rcode, n] of Object.entries(server.stats().responses)) this.inc({ rcode }, n);
    },
  });
  new Counter({
    name: 'weft_dns_dropped_total', help: 'DNS queries dropped without an answer, by reason', labelNames: ['reason'], registers: r,
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(server.stats().dropped)) this.inc({ reason }, n);
    },
  });
  for (const [name, help, pick] of [
    ['weft_dns_forwarded_total', 'DNS queries forwarded upstream', (s: DnsServerStats) => s.forwarded],
    ['weft_dns_truncated_total', 'DNS answers sent truncated (TC)', (s: DnsServerStats) => s.truncated],
    ['weft_dns_cache_hits_total', 'DNS answers served from the answer cache', (s: DnsServerStats) => s.cacheHits],
  ] as const) {
    new Counter({
      name, help, registers: r,
      collect() {
        this.reset();
        this.inc(pick(server.stats()));
      },
    });
  }
  new Gauge({
    name: 'weft_dns_latency_bucket_seconds', help: 'DNS answers with latency at most le seconds (cumulative)', labelNames: ['le'], registers: r,
    collect() {
      this.reset();
      const { counts } = server.stats().latency;
      let acc = 0;
      LATENCY_BUCKETS.forEach((le, i) => {
        acc += counts[i];
        this.set({ le: String(le) }, acc);
      });
      this.set({ le: '+Inf' }, acc + counts[LATENCY_BUCKETS.length]);
    },
  });
}
