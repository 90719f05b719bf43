/**
 * Bounded binary reader and writer for the mesh wire format. Every read checks the remaining length
 * and throws a {@link DecodeError}, so a truncated or hostile buffer can never read out of bounds.
 */

/** A buffer could not be decoded: truncated, oversized field, or unknown tag. */
export class DecodeError extends Error {
  override name = 'DecodeError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`mesh decode: ${message}`, options);
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** Appends fields to a growable buffer. Not shared; one writer per message. */
export class Writer {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;

  constructor(initial = 256) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** Number of bytes written so far. */
  get length(): number {
    return this.pos;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.view.setUint16(this.pos, v);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.view.setUint32(this.pos, v >>> 0);
    this.pos += 4;
    return this;
  }

  /** A non-negative integer up to 2^53-1, as 8 bytes big-endian. */
  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`mesh encode: u64 out of range: ${v}`);
    this.ensure(8);
    this.view.setBigUint64(this.pos, BigInt(v));
    this.pos += 8;
    return this;
  }

  raw(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Bytes with a u32 length prefix. */
  bytes(b: Uint8Array): this {
    this.u32(b.length);
    return this.raw(b);
  }

  /** UTF-8 string with a u16 length prefix. */
  str(s: string): this {
    // Encode in place: at most 3 bytes per UTF-16 unit.
    this.ensure(2 + s.length * 3);
    const { read, written } = utf8Encoder.encodeInto(s, this.buf.subarray(this.pos + 2));
    if (read !== s.length) throw new RangeError('mesh encode: string did not encode');
    if (written > 0xffff) throw new RangeError('mesh encode: string longer than 65535 bytes');
    this.view.setUint16(this.pos, written);
    this.pos += 2 + written;
    return this;
  }

  /** A copy-free view of the written bytes; the writer must not be used afterwards. */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

/** Reads fields from a buffer, throwing {@link DecodeError} on any overrun. */
export class Reader {
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  private pos = 0;

  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** Bytes not yet read. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, what: string): void {
    if (n < 0 || this.pos + n > this.buf.length) {
      throw new DecodeError(`truncated ${what}: need ${n} bytes at offset ${this.pos}, have ${this.buf.length - this.pos}`);
    }
  }

  u8(): number {
    this.need(1, 'u8');
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2, 'u16');
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4, 'u32');
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number {
    this.need(8, 'u64');
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError('u64 beyond 2^53-1');
    return Number(v);
  }

  /** Exactly `n` bytes, as a view into the input. */
  raw(n: number): Uint8Array {
    this.need(n, 'bytes');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Length-prefixed bytes of at most `max` bytes. */
  bytes(max: number): Uint8Array {
    const n = this.u32();
    if (n > max) throw new DecodeError(`field of ${n} bytes exceeds limit ${max}`);
    return this.raw(n);
  }

  /** Length-prefixed UTF-8 string of at most `max` bytes. */
  str(max: number): string {
    const n = this.u16();
    if (n > max) throw new DecodeError(`string of ${n} bytes exceeds limit ${max}`);
    const b = this.raw(n);
    try {
      return utf8Decoder.decode(b);
    } catch (cause) {
      throw new DecodeError('invalid UTF-8', { cause });
    }
  }
}
