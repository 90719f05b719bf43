/**
 * Forwards queries outside weft's zone to the upstream resolvers listed in resolv.conf. The file is
 * re-read when it changes (fs.watch on its directory, plus a periodic mtime/inode/size check for
 * symlinked or bind-mounted files that watch does not see). Upstreams equal to one of our own
 * listen addresses (or reaching our wildcard listener through loopback or a local address) are
 * skipped, so the server never forwards to itself.
 *
 * Each forwarded query goes out with a fresh random ID from a fresh ephemeral port (so a spoofed
 * upstream answer has to guess both), and the response is sent back with the client's original ID.
 * Upstreams are tried in order, each with a timeout; if all fail the answer is SERVFAIL.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { randomInt } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import dnsPacket from 'dns-packet';
import type { Question } from 'dns-packet';
import type { Logger } from 'pino';
import { errorResponse } from './handler.ts';
import { expandIPv6 } from './names.ts';

/** One upstream resolver. */
export interface Upstream {
  readonly address: string;
  readonly port: number;
}

/** An address:port the DNS server listens on. */
export interface ListenAddress {
  readonly address: string;
  readonly port: number;
}

/** Options of {@link Forwarder}. */
export interface ForwarderOptions {
  /** Default `/etc/resolv.conf`. */
  readonly resolvConfPath?: string;
  /** Port of the upstreams (resolv.conf has none). Default 53. */
  readonly upstreamPort?: number;
  /** The server's own listen addresses: upstreams matching them are skipped. */
  readonly selfAddresses: readonly ListenAddress[];
  /** Addresses of this host, for wildcard listeners; default from os.networkInterfaces(). */
  readonly localAddresses?: () => readonly string[];
  /** Per-upstream timeout. Default 2000 ms. */
  readonly timeoutMs?: number;
  /** Concurrent forwarded queries at most; beyond it queries get SERVFAIL. Default 1024. */
  readonly maxInflight?: number;
  /** Period of the mtime check. Default 2000 ms. */
  readonly checkIntervalMs?: number;
  readonly logger: Logger;
}

/** Counters of the forwarder. */
export interface ForwarderStats {
  forwarded: number;
  upstreamFailures: number;
  servfail: number;
  overloaded: number;
  reloads: number;
}

/** Error of one upstream exchange, e.g. `forward: 192.0.2.1:53: timeout`. */
export class ForwardError extends Error {
  override name = 'ForwardError';
}

/** What the parser keeps from resolv.conf. */
export interface ResolvConf {
  readonly nameservers: readonly string[];
}

/** Parses resolv.conf text: `nameserver` lines with a valid IP (scoped IPv6 allowed), in order, deduplicated. */
export function parseResolvConf(text: string): ResolvConf {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (!m) continue;
    const addr = m[1];
    const bare = addr.split('%')[0];
    if (net.isIP(bare) === 0 || out.includes(addr)) continue;
    out.push(addr);
  }
  return { nameservers: out };
}

function canonicalIP(ip: string): string {
  const bare = ip.split('%')[0].toLowerCase();
  return net.isIPv6(bare) ? (expandIPv6(bare) ?? bare) : bare;
}

function isWildcard(ip: string): boolean {
  return ip === '0.0.0.0' || canonicalIP(ip) === '0'.repeat(32);
}

function isLoopback(ip: string): boolean {
  const c = canonicalIP(ip);
  return c.startsWith('127.') || c === `${'0'.repeat(31)}1`;
}

/**
 * The usable upstreams: every nameserver on `port`, except those that would reach this server
 * itself (same address and port as a listener, or loopback/local address when a listener is a
 * wildcard on that port). Pure.
 */
export function selectUpstreams(
  nameservers: readonly string[], port: number, self: readonly ListenAddress[], local: readonly string[],
): Upstream[] {
  const localSet = new Set(local.map(canonicalIP));
  return nameservers
    .filter((ns) => !self.some((l) => l.port === port && (
      canonicalIP(l.address) === canonicalIP(ns)
      || (isWildcard(l.address) && (isLoopback(ns) || localSet.has(canonicalIP(ns))))
    )))
    .map((address) => ({ address, port }));
}

function defaultLocalAddresses(): string[] {
  return Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
}

/** Forwards out-of-zone queries; see the module comment. Call {@link Forwarder.start} first. */
export class Forwarder {
  readonly #opts: ForwarderOptions;
  readonly #path: string;
  readonly #log: Logger;
  #upstreams: Upstream[] = [];
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #fingerprint = '';
  #inflight = 0;
  #closed = false;
  #reloading: Promise<void> | undefined;
  #reloadAgain = false;
  readonly #stats: ForwarderStats = { forwarded: 0, upstreamFailures: 0, servfail: 0, overloaded: 0, reloads: 0 };

  constructor(opts: ForwarderOptions) {
    this.#opts = opts;
    this.#path = opts.resolvConfPath ?? '/etc/resolv.conf';
    this.#log = opts.logger;
  }

  /** Reads resolv.conf once and starts watching it. A missing file means no upstreams (SERVFAIL). */
  async start(): Promise<void> {
    await this.reload();
    try {
      const name = basename(this.#path);
      this.#watcher = watch(dirname(this.#path), { persistent: false }, (_event, file) => {
        if (file === null || file === name) void this.reload();
      });
      this.#watcher.on('error', (err) => this.#log.warn({ err }, 'resolv.conf watch failed; relying on the periodic check'));
    } catch (err) {
      this.#log.warn({ err }, 'cannot watch resolv.conf directory; relying on the periodic check');
    }
    this.#timer = setInterval(() => void this.reload(), this.#opts.checkIntervalMs ?? 2000);
    this.#timer.unref();
  }

  /** The upstreams in use now. */
  upstreams(): readonly Upstream[] {
    return this.#upstreams;
  }

  /** A copy of the counters. */
  stats(): ForwarderStats {
    return { ...this.#stats };
  }

  /**
   * Re-reads resolv.conf when its mtime, inode or size changed (or always with `force`).
   * Concurrent calls coalesce; never rejects.
   */
  async reload(force = false): Promise<void> {
    if (this.#reloading) {
      this.#reloadAgain = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      do {
        this.#reloadAgain = false;
        await this.#reloadOnce(force);
      } while (this.#reloadAgain && !this.#closed);
    })().finally(() => { this.#reloading = undefined; });
    return this.#reloading;
  }

  async #reloadOnce(force: boolean): Promise<void> {
    let text = '';
    let fp = 'missing';
    try {
      const st = await stat(this.#path);
      fp = `${st.ino}:${st.size}:${st.mtimeMs}`;
      if (!force && fp === this.#fingerprint) return;
      text = await readFile(this.#path, 'utf8');
    } catch (err) {
      if (!force && fp === this.#fingerprint) return;
      this.#log.warn({ err, path: this.#path }, 'cannot read resolv.conf; no upstreams');
    }
    this.#fingerprint = fp;
    const conf = parseResolvConf(text.slice(0, 65536));
    const local = (this.#opts.localAddresses ?? defaultLocalAddresses)();
    const next = selectUpstreams(conf.nameservers, this.#opts.upstreamPort ?? 53, this.#opts.selfAddresses, local);
    const skipped = conf.nameservers.length - next.length;
    this.#stats.reloads++;
    this.#upstreams = next;
    this.#log.info({ upstreams: next.map((u) => `${u.address}:${u.port}`), skippedSelf: skipped }, 'dns upstreams loaded');
  }

  /**
   * Forwards `query` (a client query, without TCP length prefix) and resolves with the response to
   * send back: the upstream's answer with the original ID, or SERVFAIL when every upstream failed,
   * or undefined when the query cannot be answered at all (not a query). Never rejects.
   * `transport` is the client's: over TCP a truncated upstream UDP answer is retried over TCP.
   */
  async forward(query: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    if (query.length < 12) return undefined;
    if (this.#inflight >= (this.#opts.maxInflight ?? 1024) || this.#closed) {
      this.#stats.overloaded++;
      this.#stats.servfail++;
      return errorResponse(query, 'SERVFAIL');
    }
    this.#inflight++;
    try {
      const originalId = query.readUInt16BE(0);
      for (const up of this.#upstreams) {
        try {
          let res = await this.#exchangeUdp(query, up);
          if (transport === 'tcp' && (res.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE) !== 0) {
            res = await this.#exchangeTcp(query, up);
          }
          res.writeUInt16BE(originalId, 0);
          this.#stats.forwarded++;
          return res;
        } catch (err) {
          this.#stats.upstreamFailures++;
          this.#log.debug({ err, upstream: `${up.address}:${up.port}` }, 'upstream failed');
        }
      }
      this.#stats.servfail++;
      return errorResponse(query, 'SERVFAIL');
    } finally {
      this.#inflight--;
    }
  }

  #exchangeUdp(query: Buffer, up: Upstream): Promise<Buffer> {
    const timeoutMs = this.#opts.timeoutMs ?? 2000;
    const where = `forward: ${up.address}:${up.port}`;
    return new Promise((resolve, reject) => {
      const id = randomInt(0, 65536);
      const out = Buffer.from(query);
      out.writeUInt16BE(id, 0);
      const sock = dgram.createSocket(net.isIPv6(up.address.split('%')[0]) ? 'udp6' : 'udp4');
      let done = false;
      const finish = (err: Error | undefined, res?: Buffer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try {
          sock.close();
        } catch {
          // Already closed (e.g. the bind failed): nothing to release.
        }
        if (err) reject(err);
        else resolve(res!);
      };
      const timer = setTimeout(() => finish(new ForwardError(`${where}: timeout after ${timeoutMs} ms`)), timeoutMs);
      sock.on('error', (err) => finish(new ForwardError(`${where}: ${err.message}`, { cause: err })));
      sock.on('message', (msg) => {
        // Connected socket: only the upstream's address reaches us. Ignore anything that is not
        // the answer to this exact question.
        if (matchesQuery(query, id, msg)) finish(undefined, msg);
      });
      // dgram calls this callback with the error when connect(2) fails (no route, EACCES for a
      // broadcast address...), leaving the socket unconnected: sending then would throw out of the
      // callback (ERR_SOCKET_BAD_PORT) and take the whole process down.
      sock.connect(up.port, up.address, (cerr?: Error) => {
        if (cerr) return finish(new ForwardError(`${where}: connect: ${cerr.message}`, { cause: cerr }));
        if (done) return;
        try {
          sock.send(out, (err) => { if (err) finish(new ForwardError(`${where}: send: ${err.message}`, { cause: err })); });
        } catch (err) {
          finish(new ForwardError(`${where}: send: ${(err as Error).message}`, { cause: err }));
        }
      });
    });
  }

  #exchangeTcp(query: Buffer, up: Upstream): Promise<Buffer> {
    const timeoutMs = this.#opts.timeoutMs ?? 2000;
    const where = `forward: tcp ${up.address}:${up.port}`;
    return new Promise((resolve, reject) => {
      const id = randomInt(0, 65536);
      const out = Buffer.alloc(query.length + 2);
      out.writeUInt16BE(query.length, 0);
      query.copy(out, 2);
      out.writeUInt16BE(id, 2);
      const sock = net.connect({ host: up.address, port: up.port });
      let buf = Buffer.alloc(0);
      let done = false;
      const finish = (err: Error | undefined, res?: Buffer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(res!);
      };
      const timer = setTimeout(() => finish(new ForwardError(`${where}: timeout after ${timeoutMs} ms`)), timeoutMs);
      sock.on('error', (err) => finish(new ForwardError(`${where}: ${err.message}`, { cause: err })));
      sock.on('close', () => finish(new ForwardError(`${where}: closed before an answer`)));
      sock.on('connect', () => sock.write(out));
      sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length > 65537) return finish(new ForwardError(`${where}: oversized answer`));
        if (buf.length < 2) return;
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) return;
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        if (matchesQuery(query, id, msg)) finish(undefined, msg);
        else finish(new ForwardError(`${where}: answer does not match the query`));
      });
    });
  }

  /** Stops watching; in-flight queries finish on their own timers. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** dns-packet exports its question codec, but @types/dns-packet does not declare it. */
const questionCodec = (dnsPacket as unknown as { question: { decode(buf: Buffer, offset: number): Question } }).question;

/**
 * True when `res` is a response with ID `id` to the same question as `query` (name compared
 * case-insensitively, for 0x20-randomising upstreams). Only the question is decoded, so answers with
 * record types dns-packet cannot parse still pass through untouched.
 */
function matchesQuery(query: Buffer, id: number, res: Buffer): boolean {
  if (res.length < 12 || res.readUInt16BE(0) !== id || (res.readUInt16BE(2) & 0x8000) === 0) return false;
  try {
    if (query.readUInt16BE(4) === 0) return true;
    if (res.readUInt16BE(4) === 0) return false;
    const q = questionCodec.decode(query, 12);
    const r = questionCodec.decode(res, 12);
    return r.name.toLowerCase() === q.name.toLowerCase() && r.type === q.type && r.class === q.class;
  } catch {
    return false;
  }
}
