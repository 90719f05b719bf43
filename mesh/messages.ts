/**
 * The versioned wire format of the mesh. A UDP packet's plaintext is
 * `[format u8][sentAt u64][count u16]` then `count` messages `[type u8][len u16][body]`; a message of
 * an unknown type is skipped by its length, so newer members can add types during a rolling update.
 * A TCP frame's plaintext is `[format u8][sentAt u64][type u8][body]`. Every decoder is bounded by
 * {@link Limits} and throws {@link DecodeError} on anything malformed.
 */
import { DecodeError, Reader, Writer } from './codec.ts';
import type { SignedEntry } from './entries.ts';
import type { Limits } from './options.ts';
import type { MemberState } from './api.ts';

/** Payload format version written by this code. Readers accept this and newer minor formats. */
export const FORMAT_VERSION = 1;

/** Packet message types. */
export const MsgType = {
  ping: 1,
  indirectPing: 2,
  ack: 3,
  nack: 4,
  alive: 5,
  suspect: 6,
  dead: 7,
  entry: 8,
  entryDigest: 9,
} as const;

/** Stream (TCP) request and reply types. */
export const StreamType = {
  pushPull: 20,
  pushPullReply: 21,
  fetch: 22,
  fetchReply: 23,
  error: 24,
  /** Anti-entropy phase 1: per-member digests; the reply carries what differs and what it wants. */
  digest: 25,
  digestReply: 26,
  /** Anti-entropy phase 2: the records the other side asked for; acked by recordsAck. */
  records: 27,
  recordsAck: 28,
  /** memberlist's TCP fallback probe, tried alongside indirect probes; answered by pingAck. */
  ping: 29,
  pingAck: 30,
} as const;

/** Direct probe; `target` must be the receiver's name, else it is ignored. */
export interface PingMsg { readonly type: 1; readonly seq: number; readonly target: string; readonly source: string }
/** Asks the receiver to probe `target` and relay the ack (and a nack if none came in time). */
export interface IndirectPingMsg {
  readonly type: 2; readonly seq: number; readonly target: string; readonly addr: string; readonly port: number; readonly nack: boolean;
}
/** An ack also reports the address and port the responder saw the probe come from (for NAT discovery). */
export interface AckMsg { readonly type: 3; readonly seq: number; readonly observedAddr: string; readonly observedPort: number }
/** Lifeguard nack: the indirect helper got no ack from the target in time. */
export interface NackMsg { readonly type: 4; readonly seq: number }
/** A member's claim to be alive, signed by its identity key over {@link aliveSigningBytes}. */
export interface AliveMsg {
  readonly type: 5; readonly name: string; readonly incarnation: number; readonly addr: string; readonly port: number;
  readonly identityKey: Uint8Array; readonly signature: Uint8Array;
}
/** `from` suspects `name` at `incarnation`; independent suspicions count as confirmations. */
export interface SuspectMsg { readonly type: 6; readonly name: string; readonly incarnation: number; readonly from: string }
/** `from === name` means a graceful leave. */
export interface DeadMsg { readonly type: 7; readonly name: string; readonly incarnation: number; readonly from: string }
/** One signed entry, gossiped whole when it fits in a datagram. */
export interface EntryMsg { readonly type: 8; readonly entry: SignedEntry }
/** Announces an entry too large for a datagram; receivers fetch it over TCP from the sender. */
export interface EntryDigestMsg { readonly type: 9; readonly owner: string; readonly key: string; readonly version: number }

/** Every datagram message. */
export type PacketMsg = PingMsg | IndirectPingMsg | AckMsg | NackMsg | AliveMsg | SuspectMsg | DeadMsg | EntryMsg | EntryDigestMsg;

/** A member as carried in a push/pull: its last alive claim plus the state the sender holds. */
export interface MemberRecordWire {
  readonly alive: AliveMsg;
  readonly state: MemberState;
  /** Incarnation of the state (may exceed the alive claim's when suspect or dead). */
  readonly incarnation: number;
}

/** Full-state exchange (format 1 anti-entropy; still answered for older members). */
export interface PushPullMsg {
  readonly type: 20 | 21; readonly join: boolean; readonly members: readonly MemberRecordWire[]; readonly entries: readonly SignedEntry[];
}
/** Asks for one entry at or above `version` (after an entry digest). */
export interface FetchMsg { readonly type: 22; readonly owner: string; readonly key: string; readonly version: number }
/** The entry asked for, or undefined if not held at that version. */
export interface FetchReplyMsg { readonly type: 23; readonly entry: SignedEntry | undefined }
/** A request the other side could not serve. */
export interface ErrorReplyMsg { readonly type: 24; readonly message: string }
/** A member summarized: equal digests mean nothing to exchange about it. `hash` covers its entries' keys, versions and tombstones. */
export interface MemberDigest {
  readonly name: string;
  readonly incarnation: number;
  readonly state: MemberState;
  readonly hash: Uint8Array;
}
/** Anti-entropy phase 1 request. */
export interface DigestMsg { readonly type: 25; readonly join: boolean; readonly digests: readonly MemberDigest[] }
/** Anti-entropy phase 1 reply: differing records and the names wanted back. */
export interface DigestReplyMsg {
  readonly type: 26; readonly members: readonly MemberRecordWire[]; readonly entries: readonly SignedEntry[]; readonly want: readonly string[];
  /** The records did not all fit in one frame: ask again after merging these. */
  readonly more: boolean;
}
/** Anti-entropy phase 2: the records asked for. */
export interface RecordsMsg { readonly type: 27; readonly join: boolean; readonly members: readonly MemberRecordWire[]; readonly entries: readonly SignedEntry[] }
/** Acknowledges {@link RecordsMsg}. */
export interface RecordsAckMsg { readonly type: 28 }
/** TCP fallback probe. */
export interface StreamPingMsg { readonly type: 29; readonly target: string }
/** Answer to {@link StreamPingMsg} from the named member. */
export interface StreamPingAckMsg { readonly type: 30 }
/** Bytes of a member digest hash. */
export const DIGEST_HASH_BYTES = 8;

/** Every stream (TCP) request and reply. */
export type StreamMsg = PushPullMsg | FetchMsg | FetchReplyMsg | ErrorReplyMsg | DigestMsg | DigestReplyMsg | RecordsMsg | RecordsAckMsg | StreamPingMsg | StreamPingAckMsg;

const ALIVE_DOMAIN = 'weft-mesh-alive/1';

/** The bytes a member signs to claim it is alive at an incarnation and address. */
export function aliveSigningBytes(name: string, incarnation: number, addr: string, port: number, identityKey: Uint8Array): Uint8Array {
  return new Writer(128).str(ALIVE_DOMAIN).str(name).u64(incarnation).str(addr).u16(port).raw(identityKey).finish();
}

const STATE_CODES: readonly MemberState[] = ['alive', 'suspect', 'dead', 'left'];

function writeEntry(w: Writer, e: SignedEntry): void {
  w.str(e.owner).str(e.key).u64(e.version).u64(e.expiresAt).u8(e.deleted ? 1 : 0).bytes(e.payload).raw(e.signature);
}

function readEntry(r: Reader, l: Limits): SignedEntry {
  const owner = r.str(l.maxNameBytes);
  const key = r.str(l.maxKeyBytes);
  const version = r.u64();
  const expiresAt = r.u64();
  const flag = r.u8();
  if (flag > 1) throw new DecodeError(`bad deleted flag ${flag}`);
  const payload = r.bytes(l.maxEntryPayloadBytes);
  const signature = r.raw(64);
  if (owner.length === 0 || owner.includes('\u0000') || key.includes('\u0000')) throw new DecodeError('bad entry owner or key');
  if (flag === 1 && payload.length > 0) throw new DecodeError('tombstone with payload');
  // Copied out of the packet (which must not be retained) into ONE buffer: a member keeps every
  // entry it stores, and each separate ArrayBuffer costs ~200 bytes of bookkeeping beside its bytes.
  const [p, sig] = copyTogether(payload, signature);
  return { owner, key, version, expiresAt, deleted: flag === 1, payload: p, signature: sig };
}

/**
 * Copies of `a` and `b` as views of one new ArrayBuffer (never of the packet they were read from):
 * decoded fields kept for a member's lifetime then cost one buffer, not two.
 */
function copyTogether(a: Uint8Array, b: Uint8Array): [Uint8Array, Uint8Array] {
  const both = new Uint8Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  return [both.subarray(0, a.length), both.subarray(a.length)];
}

function writeAlive(w: Writer, m: Omit<AliveMsg, 'type'>): void {
  w.str(m.name).u64(m.incarnation).str(m.addr).u16(m.port).raw(m.identityKey).raw(m.signature);
}

function readAlive(r: Reader, l: Limits): AliveMsg {
  const name = r.str(l.maxNameBytes);
  const incarnation = r.u64();
  const addr = r.str(64);
  const port = r.u16();
  const [identityKey, signature] = copyTogether(r.raw(32), r.raw(64));
  if (name.length === 0) throw new DecodeError('empty member name');
  return { type: MsgType.alive, name, incarnation, addr, port, identityKey, signature };
}

function writeRecords(w: Writer, members: readonly MemberRecordWire[], entries: readonly SignedEntry[]): void {
  w.u32(members.length);
  for (const rec of members) {
    writeAlive(w, rec.alive);
    w.u8(STATE_CODES.indexOf(rec.state)).u64(rec.incarnation);
  }
  w.u32(entries.length);
  for (const e of entries) writeEntry(w, e);
}

function readRecords(r: Reader, l: Limits): { members: MemberRecordWire[]; entries: SignedEntry[] } {
  const nm = r.u32();
  if (nm > l.maxMembers) throw new DecodeError(`${nm} members exceed limit ${l.maxMembers}`);
  const members: MemberRecordWire[] = [];
  for (let i = 0; i < nm; i++) {
    const alive = readAlive(r, l);
    const s = STATE_CODES[r.u8()];
    if (s === undefined) throw new DecodeError('bad member state');
    members.push({ alive, state: s, incarnation: r.u64() });
  }
  const ne = r.u32();
  if (ne > l.maxMembers * l.maxEntriesPerMember || ne > r.remaining) throw new DecodeError(`${ne} entries exceed limits`);
  const entries: SignedEntry[] = [];
  for (let i = 0; i < ne; i++) entries.push(readEntry(r, l));
  return { members, entries };
}

/** Encodes one packet message as `[type][len][body]`, ready to be packed. */
export function encodeMsg(m: PacketMsg): Uint8Array {
  const w = new Writer(64);
  switch (m.type) {
    case MsgType.ping: w.u32(m.seq).str(m.target).str(m.source); break;
    case MsgType.indirectPing: w.u32(m.seq).str(m.target).str(m.addr).u16(m.port).u8(m.nack ? 1 : 0); break;
    case MsgType.ack: w.u32(m.seq).str(m.observedAddr).u16(m.observedPort); break;
    case MsgType.nack: w.u32(m.seq); break;
    case MsgType.alive: writeAlive(w, m); break;
    case MsgType.suspect:
    case MsgType.dead: w.str(m.name).u64(m.incarnation).str(m.from); break;
    case MsgType.entry: writeEntry(w, m.entry); break;
    case MsgType.entryDigest: w.str(m.owner).str(m.key).u64(m.version); break;
  }
  const body = w.finish();
  if (body.length > 0xffff) throw new RangeError('mesh encode: message body over 65535 bytes');
  const out = new Uint8Array(3 + body.length);
  out[0] = m.type;
  out[1] = body.length >> 8;
  out[2] = body.length & 0xff;
  out.set(body, 3);
  return out;
}

/** Bytes of the packet header before the messages. */
export const PACKET_HEADER_BYTES = 1 + 8 + 2;

/** Packs already-encoded messages into one packet plaintext. */
export function packPacket(sentAt: number, msgs: readonly Uint8Array[]): Uint8Array {
  const w = new Writer(PACKET_HEADER_BYTES + msgs.reduce((n, m) => n + m.length, 0));
  w.u8(FORMAT_VERSION).u64(sentAt).u16(msgs.length);
  for (const m of msgs) w.raw(m);
  return w.finish();
}

/** A decoded packet: its send time, the messages understood, and how many were of unknown type. */
export interface DecodedPacket {
  readonly sentAt: number;
  readonly msgs: PacketMsg[];
  readonly unknown: number;
}

function decodeBody(type: number, body: Uint8Array, l: Limits): PacketMsg | undefined {
  const r = new Reader(body);
  let m: PacketMsg;
  switch (type) {
    case MsgType.ping: m = { type, seq: r.u32(), target: r.str(l.maxNameBytes), source: r.str(l.maxNameBytes) }; break;
    case MsgType.indirectPing: {
      const seq = r.u32(); const target = r.str(l.maxNameBytes); const addr = r.str(64); const port = r.u16(); const nack = r.u8() === 1;
      m = { type, seq, target, addr, port, nack };
      break;
    }
    case MsgType.ack: m = { type, seq: r.u32(), observedAddr: r.str(64), observedPort: r.u16() }; break;
    case MsgType.nack: m = { type, seq: r.u32() }; break;
    case MsgType.alive: m = readAlive(r, l); break;
    case MsgType.suspect:
    case MsgType.dead: m = { type, name: r.str(l.maxNameBytes), incarnation: r.u64(), from: r.str(l.maxNameBytes) }; break;
    case MsgType.entry: m = { type, entry: readEntry(r, l) }; break;
    case MsgType.entryDigest: m = { type, owner: r.str(l.maxNameBytes), key: r.str(l.maxKeyBytes), version: r.u64() }; break;
    default: return undefined;
  }
  if (r.remaining !== 0) throw new DecodeError(`${r.remaining} trailing bytes in message type ${type}`);
  return m;
}

/** Decodes a packet plaintext. Throws {@link DecodeError} if it is malformed. */
export function decodePacket(buf: Uint8Array, l: Limits): DecodedPacket {
  const r = new Reader(buf);
  const format = r.u8();
  if (format !== FORMAT_VERSION) throw new DecodeError(`unsupported packet format ${format}`);
  const sentAt = r.u64();
  const count = r.u16();
  if (count > buf.length) throw new DecodeError(`message count ${count} exceeds packet size`);
  const msgs: PacketMsg[] = [];
  let unknown = 0;
  for (let i = 0; i < count; i++) {
    const type = r.u8();
    const len = r.u16();
    const m = decodeBody(type, r.raw(len), l);
    if (m === undefined) unknown++;
    else msgs.push(m);
  }
  if (r.remaining !== 0) throw new DecodeError(`${r.remaining} trailing bytes in packet`);
  return { sentAt, msgs, unknown };
}

/** Encodes a stream frame plaintext. */
export function encodeStream(sentAt: number, m: StreamMsg): Uint8Array {
  const w = new Writer(256);
  w.u8(FORMAT_VERSION).u64(sentAt).u8(m.type);
  switch (m.type) {
    case StreamType.pushPull:
    case StreamType.pushPullReply:
      w.u8(m.join ? 1 : 0);
      writeRecords(w, m.members, m.entries);
      break;
    case StreamType.fetch: w.str(m.owner).str(m.key).u64(m.version); break;
    case StreamType.fetchReply:
      w.u8(m.entry ? 1 : 0);
      if (m.entry) writeEntry(w, m.entry);
      break;
    case StreamType.error: w.str(m.message.slice(0, 200)); break;
    case StreamType.digest:
      w.u8(m.join ? 1 : 0).u32(m.digests.length);
      for (const d of m.digests) w.str(d.name).u64(d.incarnation).u8(STATE_CODES.indexOf(d.state)).raw(d.hash);
      break;
    case StreamType.digestReply:
      writeRecords(w, m.members, m.entries);
      w.u32(m.want.length);
      for (const n of m.want) w.str(n);
      w.u8(m.more ? 1 : 0);
      break;
    case StreamType.records:
      w.u8(m.join ? 1 : 0);
      writeRecords(w, m.members, m.entries);
      break;
    case StreamType.recordsAck: break;
    case StreamType.ping: w.str(m.target); break;
    case StreamType.pingAck: break;
  }
  return w.finish();
}

/** Decodes a stream frame plaintext. Throws {@link DecodeError} if it is malformed. */
export function decodeStream(buf: Uint8Array, l: Limits): { sentAt: number; msg: StreamMsg } {
  const r = new Reader(buf);
  const format = r.u8();
  if (format !== FORMAT_VERSION) throw new DecodeError(`unsupported stream format ${format}`);
  const sentAt = r.u64();
  const type = r.u8();
  let msg: StreamMsg;
  switch (type) {
    case StreamType.pushPull:
    case StreamType.pushPullReply: {
      const join = r.u8() === 1;
      msg = { type, join, ...readRecords(r, l) };
      break;
    }
    case StreamType.digest: {
      const join = r.u8() === 1;
      const n = r.u32();
      if (n > l.maxMembers || n > r.remaining) throw new DecodeError(`${n} digests exceed limit ${l.maxMembers}`);
      const digests: MemberDigest[] = [];
      for (let i = 0; i < n; i++) {
        const name = r.str(l.maxNameBytes);
        const incarnation = r.u64();
        const state = STATE_CODES[r.u8()];
        if (state === undefined) throw new DecodeError('bad member state');
        digests.push({ name, incarnation, state, hash: new Uint8Array(r.raw(DIGEST_HASH_BYTES)) });
      }
      msg = { type, join, digests };
      break;
    }
    case StreamType.digestReply: {
      const recs = readRecords(r, l);
      const n = r.u32();
      if (n > l.maxMembers || n > r.remaining) throw new DecodeError(`${n} wanted names exceed limit ${l.maxMembers}`);
      const want: string[] = [];
      for (let i = 0; i < n; i++) want.push(r.str(l.maxNameBytes));
      msg = { type, ...recs, want, more: r.u8() === 1 };
      break;
    }
    case StreamType.records: {
      const join = r.u8() === 1;
      msg = { type, join, ...readRecords(r, l) };
      break;
    }
    case StreamType.recordsAck: msg = { type }; break;
    case StreamType.ping: msg = { type, target: r.str(l.maxNameBytes) }; break;
    case StreamType.pingAck: msg = { type }; break;
    case StreamType.fetch: msg = { type, owner: r.str(l.maxNameBytes), key: r.str(l.maxKeyBytes), version: r.u64() }; break;
    case StreamType.fetchReply: {
      const has = r.u8();
      msg = { type, entry: has === 1 ? readEntry(r, l) : undefined };
      break;
    }
    case StreamType.error: msg = { type, message: r.str(200) }; break;
    default: throw new DecodeError(`unknown stream type ${type}`);
  }
  if (r.remaining !== 0) throw new DecodeError(`${r.remaining} trailing bytes in stream frame`);
  return { sentAt, msg };
}
