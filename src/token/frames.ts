/**
 * Length-prefixed frames (u32 BE length + body) over a TCP socket, bounded, for the join handshake.
 */
import type { Socket } from 'node:net';
import { HandshakeError, MAX_FRAME_BYTES } from './handshake.ts';

/**
 * Reads frames from a socket one at a time. `next()` rejects with {@link HandshakeError} on a frame over
 * {@link MAX_FRAME_BYTES}, on end of stream, or on a socket error; the caller owns the socket's lifetime.
 */
export class FrameReader {
  #buf = Buffer.alloc(0);
  #waiter: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #error: Error | undefined;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      if (this.#buf.length > MAX_FRAME_BYTES + 4) this.#fail(new HandshakeError('peer sent more than one frame allows'));
      this.#pump();
    });
    socket.on('end', () => this.#fail(new HandshakeError('connection closed by peer')));
    socket.on('close', () => this.#fail(new HandshakeError('connection closed')));
    socket.on('error', (err) => this.#fail(new HandshakeError(`connection error: ${err.message}`, { cause: err })));
  }

  #fail(err: Error): void {
    if (!this.#error) this.#error = err;
    this.#pump();
  }

  #pump(): void {
    if (!this.#waiter) return;
    if (this.#buf.length >= 4) {
      const len = this.#buf.readUInt32BE(0);
      if (len > MAX_FRAME_BYTES) {
        const w = this.#waiter;
        this.#waiter = undefined;
        w.reject(new HandshakeError(`frame of ${len} bytes exceeds ${MAX_FRAME_BYTES}`));
        return;
      }
      if (this.#buf.length >= 4 + len) {
        const frame = this.#buf.subarray(4, 4 + len);
        this.#buf = this.#buf.subarray(4 + len);
        const w = this.#waiter;
        this.#waiter = undefined;
        w.resolve(Buffer.from(frame));
        return;
      }
    }
    if (this.#error) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.reject(this.#error);
    }
  }

  /** The next frame's body. Only one `next()` may be pending. */
  next(): Promise<Buffer> {
    if (this.#waiter) return Promise.reject(new HandshakeError('concurrent read'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#pump();
    });
  }
}
