import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DecodeError, Reader, Writer } from '../codec.ts';
import { MsgType, StreamType, decodePacket, decodeStream, encodeMsg, encodeStream, packPacket } from '../messages.ts';
import type { PacketMsg, StreamMsg } from '../messages.ts';
import { DEFAULT_LIMITS } from '../options.ts';

const L = DEFAULT_LIMITS;
const sig = new Uint8Array(64).fill(9);
const key = new Uint8Array(32).fill(4);
const entry = { owner: 'n1', key: 'pod/default/web', version: 1_700_000_000_123, expiresAt: 0, deleted: false, payload: new Uint8Array([1, 2, 3]), signature: sig };

const samples: PacketMsg[] = [
  { type: MsgType.ping, seq: 7, target: 'n2', source: 'n1' },
  { type: MsgType.indirectPing, seq: 8, target: 'n3', addr: '192.0.2.3', port: 7946, nack: true },
  { type: MsgType.ack, seq: 7, observedAddr: '198.18.0.1', observedPort: 40000 },
  { type: MsgType.nack, seq: 8 },
  { type: MsgType.alive, name: 'n1', incarnation: 3, addr: '192.0.2.1', port: 7946, identityKey: key, signature: sig },
  { type: MsgType.suspect, name: 'n2', incarnation: 1, from: 'n1' },
  { type: MsgType.dead, name: 'n2', incarnation: 1, from: 'n2' },
  { type: MsgType.entry, entry },
  { type: MsgType.entryDigest, owner: 'n1', key: 'big', version: 5 },
];

/** Decoding must either succeed or throw DecodeError: anything else is a crash. */
function decodeNeverCrashes(buf: Uint8Array): void {
  for (const f of [() => decodePacket(buf, L), () => decodeStream(buf, L)]) {
    try {
      f();
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
    }
  }
}

describe('wire codec', () => {
  it('round-trips every packet message type', () => {
    const pkt = packPacket(1234, samples.map(encodeMsg));
    const out = decodePacket(pkt, L);
    expect(out.sentAt).toBe(1234);
    expect(out.unknown).toBe(0);
    expect(out.msgs).toEqual(samples);
  });

  it('round-trips stream messages', () => {
    const alive = samples[4] as Extract<PacketMsg, { type: 5 }>;
    const msgs: StreamMsg[] = [
      { type: StreamType.pushPull, join: true, members: [{ alive, state: 'suspect', incarnation: 4 }], entries: [entry] },
      { type: StreamType.fetch, owner: 'n1', key: 'k', version: 3 },
      { type: StreamType.fetchReply, entry },
      { type: StreamType.fetchReply, entry: undefined },
      { type: StreamType.error, message: 'nope' },
    ];
    for (const m of msgs) expect(decodeStream(encodeStream(99, m), L).msg).toEqual(m);
  });

  it('skips messages of unknown type by length (newer peers in a rolling update)', () => {
    const unknown = new Uint8Array([200, 0, 3, 1, 2, 3]);
    const out = decodePacket(packPacket(1, [unknown, encodeMsg(samples[0]!)]), L);
    expect(out.unknown).toBe(1);
    expect(out.msgs).toEqual([samples[0]]);
  });

  it('rejects unknown formats, truncation, trailing bytes and oversized fields', () => {
    const pkt = packPacket(1, [encodeMsg(samples[7]!)]);
    const bad = new Uint8Array(pkt);
    bad[0] = 2;
    expect(() => decodePacket(bad, L)).toThrow(DecodeError);
    for (let n = 0; n < pkt.length; n++) expect(() => decodePacket(pkt.subarray(0, n), L)).toThrow(DecodeError);
    expect(() => decodePacket(new Uint8Array([...pkt, 0]), L)).toThrow(DecodeError);
    const small = { ...L, maxEntryPayloadBytes: 2 };
    expect(() => decodePacket(pkt, small)).toThrow(/exceeds limit/);
    const longName = { type: MsgType.ping, seq: 1, target: 'x'.repeat(200), source: 'a' } as const;
    expect(() => decodePacket(packPacket(1, [encodeMsg(longName)]), L)).toThrow(/exceeds limit/);
    const tooMany = new Writer().u8(1).u64(1).u8(StreamType.pushPull).u8(0).u32(L.maxMembers + 1).finish();
    expect(() => decodeStream(tooMany, L)).toThrow(/exceed limit/);
    expect(() => new Reader(new Uint8Array([0xff, 0xfe])).str(10)).toThrow(DecodeError);
  });

  it('rejects tombstones carrying a payload and entries with NUL in owner or key', () => {
    const tomb = encodeMsg({ type: MsgType.entry, entry: { ...entry, deleted: true } });
    expect(() => decodePacket(packPacket(1, [tomb]), L)).toThrow(/tombstone/);
    const nul = encodeMsg({ type: MsgType.entry, entry: { ...entry, key: 'a\u0000b' } });
    expect(() => decodePacket(packPacket(1, [nul]), L)).toThrow(/owner or key/);
  });

  it('fuzz: random bytes never crash the decoders', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), (b) => decodeNeverCrashes(b)), { numRuns: 5000 });
  });

  it('fuzz: mutated valid packets and frames never crash the decoders', () => {
    const valid = [
      packPacket(5, samples.map(encodeMsg)),
      encodeStream(5, { type: StreamType.pushPull, join: false, members: [{ alive: samples[4] as Extract<PacketMsg, { type: 5 }>, state: 'alive', incarnation: 3 }], entries: [entry, entry] }),
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...valid),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        (base, flips, cut) => {
          const b = new Uint8Array(base);
          for (const [i, v] of flips) b[i % b.length] = v;
          decodeNeverCrashes(b);
          decodeNeverCrashes(b.subarray(0, cut % (b.length + 1)));
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('corpus: inputs that once crashed or misbehaved stay fixed', () => {
    const corpus = JSON.parse(readFileSync(new URL('./fuzz-corpus.json', import.meta.url), 'utf8')) as { name: string; hex: string }[];
    expect(corpus.length).toBeGreaterThan(0);
    for (const c of corpus) {
      expect(() => decodeNeverCrashes(Buffer.from(c.hex, 'hex')), c.name).not.toThrow();
    }
  });

  it('encoder refuses numbers the wire cannot carry instead of corrupting them', () => {
    expect(() => new Writer().u64(1.5)).toThrow(RangeError);
    expect(() => new Writer().u64(-1)).toThrow(RangeError);
    const big = new Writer().u8(1).raw(new Uint8Array(8).fill(0xff)).u16(0).finish();
    expect(() => decodePacket(big, L)).toThrow(/2\^53/);
  });
});

describe('anti-entropy frames', () => {
  it('round-trip digests, digest replies, records and acks', () => {
    const alive = samples[4] as Extract<PacketMsg, { type: 5 }>;
    const msgs: StreamMsg[] = [
      { type: StreamType.digest, join: true, digests: [{ name: 'n1', incarnation: 2, state: 'dead', hash: new Uint8Array(8).fill(3) }] },
      { type: StreamType.digestReply, members: [{ alive, state: 'alive', incarnation: 3 }], entries: [entry], want: ['n1', 'n9'], more: true },
      { type: StreamType.records, join: false, members: [], entries: [entry] },
      { type: StreamType.recordsAck },
    ];
    for (const m of msgs) expect(decodeStream(encodeStream(7, m), L).msg).toEqual(m);
    const tooMany = new Writer().u8(1).u64(1).u8(StreamType.digest).u8(0).u32(L.maxMembers + 1).finish();
    expect(() => decodeStream(tooMany, L)).toThrow(DecodeError);
  });
});
