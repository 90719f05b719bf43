/**
 * The transport a mesh member talks through: unreliable datagrams for gossip and probes, and
 * reliable request/reply exchanges (one sealed frame each way) for push/pull and fetches. The UDP/TCP
 * implementation is in net-transport.ts, the simulated one in sim.ts; the protocol is the same on both.
 */

/** A network endpoint. */
export interface Address {
  readonly addr: string;
  readonly port: number;
}

/** What the transport calls on receipt. Both are called with untrusted, already-bounded bytes. */
export interface TransportHandlers {
  /** A datagram arrived. Must not block or throw. */
  packet(data: Uint8Array, from: Address): void;
  /** A request arrived on a stream; the returned bytes are the reply. Rejecting closes the stream. */
  request(data: Uint8Array, from: Address): Promise<Uint8Array>;
}

/** A mesh member's network endpoint. */
export interface Transport {
  /** Binds and starts delivering to `handlers`; resolves with the bound address. */
  start(handlers: TransportHandlers): Promise<Address>;
  /** Sends a datagram; never blocks, may silently drop (UDP semantics). */
  sendPacket(data: Uint8Array, to: Address): void;
  /** Sends one request frame and resolves with the reply frame; rejects on error or timeout. */
  request(to: Address, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Closes everything; idempotent. */
  stop(): Promise<void>;
}

/** A transport operation failed (connect, timeout, oversized frame). */
export class TransportError extends Error {
  override name = 'TransportError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`transport: ${message}`, options);
  }
}

/** Formats an address as `host:port`, bracketing IPv6. */
export function formatAddress(a: Address): string {
  return a.addr.includes(':') ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`;
}

/** Parses `host:port` or `[v6]:port`; throws TransportError on anything else. */
export function parseAddress(s: string): Address {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536)) throw new TransportError(`bad address ${JSON.stringify(s).slice(0, 80)}`);
  return { addr: m[1]!, port };
}
