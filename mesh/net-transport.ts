/**
 * The real transport: UDP datagrams on node:dgram and one-request-per-connection TCP on node:net,
 * both on the same port. TCP frames are `[u32 length][bytes]`, bounded by `maxFrameBytes`.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { isIPv6 } from 'node:net';
import { TransportError } from './transport.ts';
import type { Address, Transport, TransportHandlers } from './transport.ts';

/** Options of {@link NetTransport}. */
export interface NetTransportOptions {
  readonly bindAddr: string;
  /** 0 picks a free port (the same one for UDP and TCP). */
  readonly bindPort: number;
  readonly maxPacketBytes: number;
  readonly maxFrameBytes: number;
  /** Server side: concurrent incoming connections (each may buffer up to maxFrameBytes). Default 64. */
  readonly maxConnections?: number;
  /** Server side: idle time after which an incoming connection is dropped. */
  readonly serverTimeoutMs?: number;
}

/** Reads one length-prefixed frame from a socket, bounded by `max`. */
function readFrame(sock: net.Socket, max: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    let want = -1;
    const cleanup = (): void => {
      sock.off('data', onData);
      sock.off('error', onErr);
      sock.off('end', onEnd);
      sock.off('close', onEnd);
    };
    const onErr = (err: Error): void => {
      cleanup();
      reject(new TransportError('stream error', { cause: err }));
    };
    const onEnd = (): void => {
      cleanup();
      reject(new TransportError('stream closed before a full frame'));
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      have += chunk.length;
      if (want < 0 && have >= 4) {
        const head = Buffer.concat(chunks);
        want = head.readUInt32BE(0);
        if (want > max) {
          cleanup();
          sock.destroy();
          reject(new TransportError(`frame of ${want} bytes exceeds ${max}`));
          return;
        }
      }
      if (want >= 0 && have >= 4 + want) {
        cleanup();
        const all = Buffer.concat(chunks);
        resolve(new Uint8Array(all.subarray(4, 4 + want)));
      }
    };
    sock.on('data', onData);
    sock.on('error', onErr);
    sock.on('end', onEnd);
    sock.on('close', onEnd);
  });
}

function frame(data: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length, 0);
  return Buffer.concat([head, data]);
}

/** UDP + TCP transport on one address and port. */
export class NetTransport implements Transport {
  private readonly o: NetTransportOptions;
  private udp: dgram.Socket | undefined;
  private server: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();
  private stopped = false;

  constructor(o: NetTransportOptions) {
    this.o = o;
  }

  async start(h: TransportHandlers): Promise<Address> {
    const type = isIPv6(this.o.bindAddr) ? 'udp6' : 'udp4';
    // Bind TCP first (port 0 -> pick one), then UDP on the same port.
    const server = net.createServer((sock) => this.serve(sock, h));
    server.maxConnections = this.o.maxConnections ?? 64;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.o.bindPort, this.o.bindAddr, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const port = (server.address() as net.AddressInfo).port;
    const udp = dgram.createSocket({ type, reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, this.o.bindAddr, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    udp.on('error', () => {
      /* ICMP errors etc.: UDP is lossy by contract */
    });
    udp.on('message', (msg, rinfo) => {
      if (msg.length > this.o.maxPacketBytes) return;
      h.packet(new Uint8Array(msg.buffer, msg.byteOffset, msg.length), { addr: rinfo.address, port: rinfo.port });
    });
    this.udp = udp;
    return { addr: this.o.bindAddr, port };
  }

  private serve(sock: net.Socket, h: TransportHandlers): void {
    this.conns.add(sock);
    sock.setTimeout(this.o.serverTimeoutMs ?? 10_000, () => sock.destroy());
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    const from = { addr: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 };
    readFrame(sock, this.o.maxFrameBytes)
      .then((req) => h.request(req, from))
      .then((reply) => {
        sock.end(frame(reply));
      })
      .catch(() => sock.destroy());
  }

  sendPacket(data: Uint8Array, to: Address): void {
    if (!this.udp || this.stopped) return;
    try {
      this.udp.send(data, to.port, to.addr);
    } catch {
      /* bad address or closed socket: dropped like any datagram */
    }
  }

  request(to: Address, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.stopped) return Promise.reject(new TransportError('stopped'));
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: to.addr, port: to.port });
      this.conns.add(sock);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new TransportError(`request to ${to.addr}:${to.port} timed out`));
      }, timeoutMs);
      timer.unref();
      sock.on('close', () => this.conns.delete(sock));
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new TransportError(`request to ${to.addr}:${to.port} failed`, { cause: err }));
      });
      sock.once('connect', () => {
        sock.write(frame(data));
        readFrame(sock, this.o.maxFrameBytes).then(
          (reply) => {
            clearTimeout(timer);
            sock.destroy();
            resolve(reply);
          },
          (err: unknown) => {
            clearTimeout(timer);
            sock.destroy();
            reject(err);
          },
        );
      });
    });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    const udp = this.udp;
    const server = this.server;
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}
