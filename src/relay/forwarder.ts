/**
 * The relay's datagram forwarder (issue 7, see README.md). For each relayed pair {A, B} it holds two
 * UDP sockets: a datagram arriving on portA (from A) leaves by portB towards B, and the reverse. The
 * payload is WireGuard ciphertext between A and B; the relay neither reads nor changes it, and it is
 * never a WireGuard hop (like a TURN server or a Nebula relay).
 *
 * Where to send: the address the other side last sent from (learned, which is the NAT mapping it
 * holds open with its keepalive), or before that its published endpoint. What to accept: only
 * datagrams whose source IP is one of that side's known IPs (its published endpoint hosts and the
 * address the mesh sees it at), no larger than {@link MAX_DATAGRAM}. Everything else is dropped and
 * counted by reason. Sockets are always closed on `close()`.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Logger } from 'pino';
import { canonicalIP } from '../plan/cidr.ts';

/** Largest datagram forwarded: a UDP payload cannot be larger, and WireGuard's are MTU-sized in practice. */
export const MAX_DATAGRAM = 65_507;

/** One address to send to. */
export interface UdpAddr {
  readonly host: string;
  readonly port: number;
}

/** One side of a forwarded pair. */
export interface ForwardSide {
  readonly name: string;
  /** The relay port this side sends to. */
  readonly port: number;
  /** Source IPs accepted from this side (canonical or not; compared canonically). */
  readonly allow: readonly string[];
  /** Where to reach this side before it has sent anything (its published endpoint). */
  readonly fallback?: UdpAddr;
}

/** One forwarded pair. */
export interface ForwardSession {
  readonly a: ForwardSide;
  readonly b: ForwardSide;
}

/** Drop reasons counted by the forwarder. */
export type DropReason = 'source' | 'size' | 'no-destination' | 'send-error';

/** Counters since start. */
export interface ForwarderStats {
  readonly sessions: number;
  readonly packets: number;
  readonly bytes: number;
  readonly drops: Readonly<Record<DropReason, number>>;
}

/** The socket operations the forwarder needs; node:dgram by default, fakes in tests. */
export interface DatagramSocket {
  bind(port: number, host: string): Promise<void>;
  onMessage(fn: (msg: Uint8Array, from: UdpAddr) => void): void;
  send(msg: Uint8Array, to: UdpAddr): Promise<void>;
  close(): Promise<void>;
}

/** Creates unbound sockets of a family. */
export type SocketFactory = (family: 4 | 6) => DatagramSocket;

/** node:dgram sockets behind {@link DatagramSocket}. */
export const dgramSockets: SocketFactory = (family) => {
  const s: Socket = createSocket({ type: family === 6 ? 'udp6' : 'udp4', reuseAddr: false });
  let closed = false;
  s.on('error', () => {});
  return {
    bind: (port, host) =>
      new Promise((resolve, reject) => {
        const onErr = (err: Error) => reject(err);
        s.once('error', onErr);
        s.bind(port, host, () => {
          s.off('error', onErr);
          resolve();
        });
      }),
    onMessage: (fn) => void s.on('message', (msg: Buffer, r: RemoteInfo) => fn(msg, { host: r.address, port: r.port })),
    send: (msg, to) => new Promise((resolve, reject) => s.send(msg, to.port, to.host, (err) => (err ? reject(err) : resolve()))),
    close: () =>
      new Promise((resolve) => {
        if (closed) return resolve();
        closed = true;
        try {
          s.close(() => resolve());
        } catch {
          resolve();
        }
      }),
  };
};

/** A bind failed; the caller marks the port unusable and re-plans. */
export class RelayBindError extends Error {
  override name = 'RelayBindError';
  readonly port: number;
  constructor(port: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.port = port;
  }
}

interface Live {
  readonly key: string;
  sides: [LiveSide, LiveSide];
}

interface LiveSide {
  spec: ForwardSide;
  allow: Set<string>;
  socket: DatagramSocket;
  learned?: UdpAddr;
}

const keyOf = (s: ForwardSession): string => `${s.a.name}\n${s.b.name}\n${s.a.port}\n${s.b.port}`;

/**
 * Forwards datagrams for a set of pairs. `sync` makes the open sessions match the given ones (opens
 * new ones, updates allow lists and fallbacks in place, closes the rest); calls are serialized.
 */
export class RelayForwarder {
  readonly #host: string;
  readonly #family: 4 | 6;
  readonly #log: Logger;
  readonly #sockets: SocketFactory;
  readonly #live = new Map<string, Live>();
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;
  #packets = 0;
  #bytes = 0;
  readonly #drops: Record<DropReason, number> = { source: 0, size: 0, 'no-destination': 0, 'send-error': 0 };

  constructor(opts: { readonly host: string; readonly logger: Logger; readonly sockets?: SocketFactory }) {
    const host = canonicalIP(opts.host);
    if (!host) throw new RangeError(`relay: bind address ${JSON.stringify(opts.host)} is not an IP address`);
    this.#host = host;
    this.#family = host.includes(':') ? 6 : 4;
    this.#log = opts.logger;
    this.#sockets = opts.sockets ?? dgramSockets;
  }

  /** Counters since start. */
  stats(): ForwarderStats {
    return { sessions: this.#live.size, packets: this.#packets, bytes: this.#bytes, drops: { ...this.#drops } };
  }

  /**
   * Makes the open sessions match `sessions`. Resolves with the ports that could not be bound (their
   * sessions are not open). Never rejects.
   */
  sync(sessions: readonly ForwardSession[]): Promise<{ readonly failedPorts: readonly number[] }> {
    const run = this.#chain.then(() => this.#sync(sessions));
    this.#chain = run.catch(() => {});
    return run.catch((err: unknown) => {
      this.#log.error({ err }, 'relay: sync failed');
      return { failedPorts: [] };
    });
  }

  async #sync(sessions: readonly ForwardSession[]): Promise<{ failedPorts: number[] }> {
    if (this.#closed) return { failedPorts: [] };
    const want = new Map(sessions.map((s) => [keyOf(s), s]));
    for (const [key, live] of this.#live) {
      if (want.has(key)) continue;
      this.#live.delete(key);
      await Promise.all(live.sides.map((s) => s.socket.close()));
      this.#log.info({ a: live.sides[0].spec.name, b: live.sides[1].spec.name }, 'relay session closed');
    }
    const failedPorts: number[] = [];
    for (const [key, spec] of want) {
      const live = this.#live.get(key);
      if (live) {
        for (const [i, side] of [spec.a, spec.b].entries()) {
          live.sides[i]!.spec = side;
          live.sides[i]!.allow = allowSet(side.allow);
        }
        continue;
      }
      const opened: DatagramSocket[] = [];
      try {
        const sides: LiveSide[] = [];
        for (const side of [spec.a, spec.b]) {
          const socket = this.#sockets(this.#family);
          opened.push(socket);
          try {
            await socket.bind(side.port, this.#host);
          } catch (err) {
            throw new RelayBindError(side.port, `relay: bind ${this.#host}:${side.port}: ${(err as Error).message}`, { cause: err });
          }
          sides.push({ spec: side, allow: allowSet(side.allow), socket });
        }
        const entry: Live = { key, sides: sides as [LiveSide, LiveSide] };
        sides[0]!.socket.onMessage((msg, from) => this.#forward(entry, 0, msg, from));
        sides[1]!.socket.onMessage((msg, from) => this.#forward(entry, 1, msg, from));
        this.#live.set(key, entry);
        this.#log.info({ a: spec.a.name, b: spec.b.name, portA: spec.a.port, portB: spec.b.port }, 'relay session open');
      } catch (err) {
        await Promise.all(opened.map((s) => s.close()));
        if (err instanceof RelayBindError) failedPorts.push(err.port);
        this.#log.warn({ err, a: spec.a.name, b: spec.b.name }, 'relay: cannot open a session');
      }
    }
    return { failedPorts };
  }

  /** A datagram from side `from` of `live`: checked, then sent out of the other side's socket. Must not throw. */
  #forward(live: Live, fromSide: 0 | 1, msg: Uint8Array, from: UdpAddr): void {
    if (this.#closed || this.#live.get(live.key) !== live) return;
    const src = live.sides[fromSide];
    const dst = live.sides[fromSide === 0 ? 1 : 0];
    if (!src.allow.has(canonicalIP(from.host) ?? from.host)) {
      this.#drops.source++;
      return;
    }
    if (msg.length === 0 || msg.length > MAX_DATAGRAM) {
      this.#drops.size++;
      return;
    }
    src.learned = { host: from.host, port: from.port };
    const to = dst.learned ?? dst.spec.fallback;
    if (!to) {
      this.#drops['no-destination']++;
      return;
    }
    this.#packets++;
    this.#bytes += msg.length;
    dst.socket.send(msg, to).catch(() => {
      this.#drops['send-error']++;
    });
  }

  /** Closes every socket. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#chain.catch(() => {});
    const all = [...this.#live.values()];
    this.#live.clear();
    await Promise.all(all.flatMap((l) => l.sides.map((s) => s.socket.close())));
  }
}

function allowSet(ips: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const ip of ips) {
    const c = canonicalIP(ip);
    if (c) out.add(c);
  }
  return out;
}
