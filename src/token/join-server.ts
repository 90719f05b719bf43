/**
 * The seed's join listener: a small TCP server (agent flag `--join-port`, default 7947, on the mesh's
 * listen address) running the handshake of `handshake.ts` against an {@link Admitter}. Per-source rate
 * limit, bounded connections and frames, a deadline per connection, and one audit log line
 * (`audit: true`) for every accept and refusal with its reason. Never logs the token secret, the
 * verifier or the mesh key.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Admitter } from './admit.ts';
import { FrameReader } from './frames.ts';
import {
  encodeFrame,
  makeChallenge,
  makeRefuse,
  newEphemeral,
  openRequest,
  parseMessage,
  sealGrant,
  sessionKey,
  signAdmission,
  type Hello,
  type RefusalCode,
} from './handshake.ts';
import type { Identity } from '../../mesh/crypto.ts';

/** Default TCP port of the join listener. */
export const DEFAULT_JOIN_PORT = 7947;

/** Per-source token bucket: `burst` attempts, refilled at one per `refillMs`. Bounded to `maxSources` sources. */
export class SourceRateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  readonly #burst: number;
  readonly #refillMs: number;
  readonly #max: number;
  constructor(opts: { burst?: number; refillMs?: number; maxSources?: number } = {}) {
    this.#burst = opts.burst ?? 5;
    this.#refillMs = opts.refillMs ?? 12_000;
    this.#max = opts.maxSources ?? 10_000;
  }

  /** Takes one attempt for `source` at `now` (ms); false when the source is over its rate. */
  take(source: string, now: number): boolean {
    let b = this.#buckets.get(source);
    if (b) {
      b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) / this.#refillMs);
      b.at = now;
      this.#buckets.delete(source);
    } else {
      if (this.#buckets.size >= this.#max) this.#buckets.delete(this.#buckets.keys().next().value!);
      b = { tokens: this.#burst, at: now };
    }
    this.#buckets.set(source, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/** Options of {@link JoinServer}. */
export interface JoinServerOptions {
  readonly admitter: Admitter;
  /** The admitting member's identity (signs admissions). */
  readonly identity: Identity;
  readonly logger: Logger;
  readonly clock: () => number;
  readonly rateLimiter?: SourceRateLimiter;
  /** Whole-handshake deadline per connection (includes the confirmation window). Default 30 s. */
  readonly deadlineMs?: number;
  readonly maxConnections?: number;
  /** Called after a joiner was admitted (a use of `tokenId` is spent). Must not block; a throw is ignored. */
  readonly onAdmitted?: (tokenId: string, joiner: string) => void;
}

/** Counters for status and metrics. */
export interface JoinServerStats {
  accepted: number;
  refused: number;
  rateLimited: number;
  errors: number;
}

/** The join listener. `listen` then `close` (idempotent). */
export class JoinServer {
  readonly #o: JoinServerOptions;
  readonly #log: Logger;
  readonly #limiter: SourceRateLimiter;
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  readonly stats: JoinServerStats = { accepted: 0, refused: 0, rateLimited: 0, errors: 0 };

  constructor(o: JoinServerOptions) {
    this.#o = o;
    this.#log = o.logger;
    this.#limiter = o.rateLimiter ?? new SourceRateLimiter();
  }

  /** Listens on `host:port` (0 = any port); resolves with the bound port. */
  async listen(host: string, port: number): Promise<number> {
    const server = createServer((s) => void this.#serve(s));
    server.maxConnections = this.#o.maxConnections ?? 64;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`join: listen ${host}:${port}: ${err.message}`, { cause: err })));
      server.listen(port, host, () => resolve());
    });
    this.#server = server;
    const a = server.address();
    const bound = typeof a === 'object' && a ? a.port : port;
    this.#log.info({ host, port: bound }, 'join listener ready');
    return bound;
  }

  /** Stops listening and closes open handshakes. Idempotent. */
  async close(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const sock of this.#sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  #audit(ok: boolean, fields: Record<string, unknown>, msg: string): void {
    this.#log.info({ audit: true, event: ok ? 'join-accepted' : 'join-refused', ...fields }, msg);
  }

  async #serve(sock: Socket): Promise<void> {
    this.#sockets.add(sock);
    const source = sock.remoteAddress ?? '?';
    // Every connection costs the source one attempt, garbage included.
    const allowed = this.#limiter.take(source, this.#o.clock());
    const timer = setTimeout(() => sock.destroy(), this.#o.deadlineMs ?? 30_000);
    const reader = new FrameReader(sock);
    let authority = this.#o.admitter.authority;
    let hello: Hello | undefined;
    const refuse = (code: RefusalCode, msg: string, extra: Record<string, unknown> = {}): void => {
      this.stats.refused++;
      this.#audit(false, { source, tokenId: hello?.id, reason: code, detail: msg, ...extra }, `join refused: ${code}`);
      if (hello) sock.end(encodeFrame(makeRefuse(code, msg, hello.nonce, authority)));
      else sock.end();
    };
    try {
      const first = parseMessage(await reader.next());
      if (first.t !== 'hello') return refuse('bad-request', 'expected hello');
      hello = first;
      authority = this.#o.admitter.authorityFor(hello.fp);
      if (!allowed) {
        this.stats.rateLimited++;
        return refuse('rate-limited', 'too many join attempts from this address; wait a minute');
      }
      const verifier = this.#o.admitter.verifierOf(hello.id);
      if (!verifier) return refuse('unknown', `token ${hello.id} is not known to the mesh (never issued, or expired and purged)`);
      const eph = newEphemeral();
      const { challenge, th } = makeChallenge(hello, eph, authority);
      sock.write(encodeFrame(challenge));
      const key = sessionKey(verifier, new Uint8Array(Buffer.from(hello.eph, 'base64')), eph, th);
      const second = parseMessage(await reader.next());
      if (second.t !== 'request') return refuse('bad-request', 'expected request');
      const req = openRequest(key, second, th);
      if (!req) return refuse('forged', `proof for token ${hello.id} does not verify: wrong token secret (forged or mistyped token)`);
      const r = await this.#o.admitter.redeem(hello.id, req);
      if (!r.ok) return refuse(r.code, r.msg, { joiner: req.name, ...(r.detail ?? {}) });
      const signed = signAdmission(this.#o.identity, r.admission);
      sock.end(encodeFrame(sealGrant(key, { meshKey: this.#o.admitter.meshKey(), ...signed, seeds: r.seeds })));
      this.stats.accepted++;
      this.#audit(true, { source, tokenId: hello.id, joiner: req.name, identityKey: req.identityKey }, `node ${req.name} admitted with token ${hello.id}`);
      try {
        this.#o.onAdmitted?.(hello.id, req.name);
      } catch {
        // a listener's problem, not the joiner's
      }
    } catch (err) {
      this.stats.errors++;
      this.#audit(false, { source, tokenId: hello?.id, reason: 'protocol', detail: (err as Error).message }, 'join handshake failed');
      if (hello && !sock.destroyed) {
        try {
          sock.end(encodeFrame(makeRefuse('bad-request', (err as Error).message, hello.nonce, authority)));
        } catch {
          sock.destroy();
        }
      } else sock.destroy();
    } finally {
      clearTimeout(timer);
      this.#sockets.delete(sock);
    }
  }
}
