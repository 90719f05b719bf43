/**
 * The link prober (issues 7 and 9): a periodic task in the agent that reads the WireGuard device and,
 * for each planned peer without a recent handshake, sends one small UDP datagram through the tunnel
 * to the peer's mesh IP (port 9, discard). The datagram itself is irrelevant: sending it makes
 * WireGuard start a handshake. The decisions are pure (`links.ts`); the socket is an injected
 * {@link ProbeSender}. Each tick also reports the direct links that have failed, for the relay.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { WgDevice } from '../wireguard/backend.ts';
import { assessLinks, DEFAULT_RELAY_AFTER_MS, type LinkMemory, type LinkTarget } from './links.ts';

/** Default probe period. */
export const DEFAULT_PROBE_INTERVAL_MS = 10_000;
/** Destination port of probe datagrams (discard): nothing needs to listen, WireGuard only needs traffic. */
export const PROBE_PORT = 9;

/** Sends one probe datagram to a mesh IP. Must not throw synchronously; may reject. */
export interface ProbeSender {
  send(meshIP: string): Promise<void>;
  close(): Promise<void>;
}

/** Timer functions (the agent's `Timers` shape), injectable so tests drive time. */
export interface ProberTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

/** Counters the prober keeps; exported as metrics. */
export interface ProberStats {
  readonly ticks: number;
  readonly probes: number;
  readonly probeErrors: number;
  readonly readErrors: number;
  /** Direct links currently judged failed. */
  readonly failing: number;
}

/** What the prober needs. */
export interface LinkProberDeps {
  /** The planned peers now (from the agent's last plan). Must not block. */
  readonly targets: () => readonly LinkTarget[];
  readonly readDevice: () => Promise<WgDevice | null>;
  readonly sender: ProbeSender;
  /** ms since the epoch. */
  readonly clock: () => number;
  readonly timers: ProberTimers;
  readonly logger: Logger;
  readonly intervalMs?: number;
  readonly relayAfterMs?: number;
  /** Called after every successful assessment with the failed direct links (sorted names). Must not block. */
  readonly onFailing?: (names: readonly string[]) => void;
}

/** The periodic prober. `start()` arms the timer; `tick()` runs one pass (tests call it directly); never throws. */
export class LinkProber {
  readonly #d: LinkProberDeps;
  #memory: LinkMemory = new Map();
  #timer: unknown;
  #running = false;
  #again = false;
  #stopped = false;
  #stats = { ticks: 0, probes: 0, probeErrors: 0, readErrors: 0, failing: 0 };

  constructor(deps: LinkProberDeps) {
    this.#d = deps;
  }

  /** Arms the periodic tick. Idempotent. */
  start(): void {
    if (this.#timer !== undefined || this.#stopped) return;
    this.#timer = this.#d.timers.setInterval(() => void this.tick(), this.#d.intervalMs ?? DEFAULT_PROBE_INTERVAL_MS);
  }

  /** Stops the timer and closes the sender. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer !== undefined) this.#d.timers.clearInterval(this.#timer);
    await this.#d.sender.close().catch(() => {});
  }

  /** Counters since start. */
  stats(): ProberStats {
    return { ...this.#stats };
  }

  /**
   * Runs a pass now, or right after the one running (for peers just added: a handshake at once).
   * Must not block: it returns before the pass runs.
   */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    void this.tick();
  }

  /** One pass: read the device, probe what needs it, report failed links. Overlapping calls are skipped. Never rejects. */
  async tick(): Promise<void> {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    try {
      let device: WgDevice | null;
      try {
        device = await this.#d.readDevice();
      } catch (err) {
        this.#stats.readErrors++;
        this.#d.logger.debug({ err }, 'link prober: cannot read the device');
        return;
      }
      if (!device) return;
      const handshakes = new Map(device.peers.map((p) => [p.publicKey, p.lastHandshake]));
      const counters = new Map(device.peers.map((p) => [p.publicKey, { rx: p.rxBytes, tx: p.txBytes }]));
      const out = assessLinks(this.#d.targets(), handshakes, this.#d.clock(), this.#memory, { relayAfterMs: this.#d.relayAfterMs ?? DEFAULT_RELAY_AFTER_MS }, counters);
      this.#memory = out.memory;
      this.#stats.ticks++;
      for (const t of out.probe) {
        try {
          await this.#d.sender.send(t.meshIP);
          this.#stats.probes++;
        } catch (err) {
          this.#stats.probeErrors++;
          this.#d.logger.debug({ err, peer: t.name }, 'link probe failed');
        }
      }
      if (out.failing.length !== this.#stats.failing) this.#d.logger.info({ failing: out.failing.slice(0, 20), count: out.failing.length }, 'direct links without a handshake');
      this.#stats.failing = out.failing.length;
      try {
        this.#d.onFailing?.(out.failing);
      } catch (err) {
        this.#d.logger.warn({ err }, 'link prober: failing-links callback threw');
      }
    } catch (err) {
      this.#d.logger.warn({ err }, 'link prober pass failed');
    } finally {
      this.#running = false;
      if (this.#again) {
        this.#again = false;
        void this.tick();
      }
    }
  }
}

/** A probe datagram's payload: one byte, so no pod sees a meaningful message. */
const PROBE_PAYLOAD = new Uint8Array([0]);

/**
 * The real {@link ProbeSender}: one unbound UDP socket per family, created lazily, sending one byte
 * to `<meshIP>:9`. The kernel routes it into the WireGuard interface (the cluster CIDR route).
 */
export function udpProbeSender(): ProbeSender {
  const sockets = new Map<4 | 6, Socket>();
  const socket = (fam: 4 | 6): Socket => {
    let s = sockets.get(fam);
    if (!s) {
      s = createSocket(fam === 6 ? 'udp6' : 'udp4');
      s.on('error', () => {});
      s.unref();
      sockets.set(fam, s);
    }
    return s;
  };
  return {
    send(meshIP) {
      const fam = isIP(meshIP);
      if (fam !== 4 && fam !== 6) return Promise.reject(new Error(`probe: ${JSON.stringify(meshIP)} is not an IP address`));
      return new Promise((resolve, reject) => {
        socket(fam).send(PROBE_PAYLOAD, PROBE_PORT, meshIP, (err) => (err ? reject(new Error(`probe: send to ${meshIP}:${PROBE_PORT}: ${err.message}`, { cause: err })) : resolve()));
      });
    },
    async close() {
      for (const s of sockets.values()) {
        try {
          s.close();
        } catch {
          // already closed
        }
      }
      sockets.clear();
    },
  };
}
