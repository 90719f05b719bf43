/**
 * The pure DNS handler: query bytes + lookup table -> response bytes, "forward", or "drop". No
 * sockets, no clock, never throws. The wire format is dns-packet's; nothing here encodes DNS by hand
 * beyond reading the fixed 12-byte header to decide between FORMERR and drop.
 *
 * Answer rules (zone `Z`, default `weft.local`):
 * - `<pod>.<ns>.pod.Z` A/AAAA, `<node>.node.Z` A/AAAA (mesh IP), PTR under the reverse zones of the
 *   pod CIDRs; ANY returns every record of the name; SOA at an apex returns the SOA.
 * - an existing name without the asked type: NOERROR, no answers, SOA in authority (RFC 2308);
 * - an unknown name under an apex the table is authoritative for: NXDOMAIN, SOA in authority;
 * - a name outside every apex: `forward` (the caller sends the original bytes upstream);
 * - a packet whose header is readable but whose body is malformed, that has trailing bytes, more
 *   or fewer than one question, answer or authority records, or several OPT records: FORMERR;
 * - a non-QUERY opcode: NOTIMP; a non-IN class or a zone transfer (AXFR/IXFR) in the zone:
 *   REFUSED; EDNS version > 0: BADVERS;
 * - shorter than a header, or a response (QR set): dropped.
 * EDNS0: the OPT record is echoed (no options, DO copied) advertising {@link HandlerOptions.ednsUdpSize};
 * over UDP the answer must fit max(512, min(client size, ours)), or 512 without EDNS, else it is
 * sent truncated (TC set, question and OPT only). Over TCP the whole answer is sent.
 */

import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Question } from 'dns-packet';
import type { DnsTable, NameRecords } from './table.ts';
import { findAuthority } from './table.ts';

/** RCODE values weft produces (BADVERS is the extended rcode 16, carried in the OPT record). */
export type Rcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED' | 'BADVERS';

/** Per-call options of {@link handleQuery}. */
export interface HandlerOptions {
  /** The transport the query came on: decides the size limit (UDP) or none (TCP). */
  readonly transport: 'udp' | 'tcp';
  /** TTL of answers and of the SOA (also the negative-caching TTL), in seconds. Default 5. */
  readonly ttl?: number;
  /** UDP payload size we advertise and accept at most over EDNS0. Default 1232 (DNS flag day 2020). */
  readonly ednsUdpSize?: number;
  /** Larger queries get FORMERR. Default 4096. */
  readonly maxQuerySize?: number;
}

/** Why a packet was dropped without an answer. */
export type DropReason = 'short' | 'response';

/** What the server should do with a query. */
export type HandlerResult =
  | { readonly kind: 'answer'; readonly bytes: Buffer; readonly rcode: Rcode; readonly truncated: boolean }
  | { readonly kind: 'forward' }
  | { readonly kind: 'drop'; readonly reason: DropReason };

/** Default answer TTL in seconds. */
export const DEFAULT_TTL = 5;
/** Default EDNS0 UDP payload size we advertise. */
export const DEFAULT_EDNS_UDP_SIZE = 1232;
/** Default largest query accepted. */
export const DEFAULT_MAX_QUERY_SIZE = 4096;

const HEADER = 12;
const QR = 0x8000;
const OPCODE_MASK = 0x7800;
const RD = dnsPacket.RECURSION_DESIRED;
const CD = dnsPacket.CHECKING_DISABLED;
const AA = dnsPacket.AUTHORITATIVE_ANSWER;
const TC = dnsPacket.TRUNCATED_RESPONSE;
const RA = dnsPacket.RECURSION_AVAILABLE;
const DO = dnsPacket.DNSSEC_OK;
const RCODE_NUM: Record<Rcode, number> = {
  NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16,
};
const KNOWN_CLASSES = new Set(['IN', 'CS', 'CH', 'HS', 'ANY']);
/** Every agent builds the zone from the mesh itself: zone transfers are not offered. */
const ZONE_TRANSFERS = new Set<string>(['AXFR', 'IXFR']);

/**
 * Answers one query from `table`. Pure and total: any input gives a result, never an exception.
 * `query` is the DNS message without the TCP length prefix.
 */
export function handleQuery(query: Uint8Array, table: DnsTable, opts: HandlerOptions): HandlerResult {
  try {
    return handle(Buffer.isBuffer(query) ? query : Buffer.from(query.buffer, query.byteOffset, query.byteLength), table, opts);
  } catch {
    // Unreachable by design (every decode is guarded); kept so the contract "never throws" holds.
    return { kind: 'drop', reason: 'short' };
  }
}

function handle(q: Buffer, table: DnsTable, opts: HandlerOptions): HandlerResult {
  if (q.length < HEADER) return { kind: 'drop', reason: 'short' };
  const id = q.readUInt16BE(0);
  const flags = q.readUInt16BE(2);
  if (flags & QR) return { kind: 'drop', reason: 'response' };
  const opcodeBits = flags & OPCODE_MASK;
  const headerOnly = (rcode: Rcode): HandlerResult => answer(
    { id, type: 'response', flags: opcodeBits | (flags & RD) | RA | RCODE_NUM[rcode], questions: [] }, rcode, false);

  if (q.length > (opts.maxQuerySize ?? DEFAULT_MAX_QUERY_SIZE)) return headerOnly('FORMERR');
  if (opcodeBits !== 0) return headerOnly('NOTIMP');

  let packet: DecodedPacket;
  try {
    packet = dnsPacket.decode(q);
  } catch {
    return headerOnly('FORMERR');
  }
  if (dnsPacket.decode.bytes !== q.length) return headerOnly('FORMERR');
  const questions = packet.questions ?? [];
  if (questions.length !== 1 || (packet.answers?.length ?? 0) > 0 || (packet.authorities?.length ?? 0) > 0) {
    return headerOnly('FORMERR');
  }
  const opts0 = (packet.additionals ?? []).filter((a): a is OptAnswer => a.type === 'OPT');
  if (opts0.length > 1 || (opts0.length === 1 && opts0[0].name !== '.')) return headerOnly('FORMERR');
  const clientOpt = opts0[0];
  const question = questions[0];
  if (!safeName(question.name) || !KNOWN_CLASSES.has(question.class ?? 'IN')) {
    // Names that do not survive a decode/encode round trip, or classes dns-packet cannot encode
    // back, are answered without echoing the question.
    return isInZone(question.name.toLowerCase(), table) ? headerOnly('FORMERR') : { kind: 'forward' };
  }

  const ourSize = opts.ednsUdpSize ?? DEFAULT_EDNS_UDP_SIZE;
  const limit = opts.transport === 'tcp'
    ? 65535
    : clientOpt ? Math.max(512, Math.min(clientOpt.udpPayloadSize, ourSize)) : 512;
  const ttl = opts.ttl ?? DEFAULT_TTL;
  const baseFlags = (flags & (RD | CD)) | RA;
  const additionals: Answer[] = [];
  if (clientOpt) {
    additionals.push({
      type: 'OPT', name: '.', udpPayloadSize: ourSize, extendedRcode: 0, ednsVersion: 0,
      flags: clientOpt.flags & DO, flag_do: (clientOpt.flags & DO) !== 0, options: [],
    });
    if (clientOpt.ednsVersion > 0) {
      (additionals[0] as OptAnswer).extendedRcode = RCODE_NUM.BADVERS >> 4;
      return answer({ id, type: 'response', flags: baseFlags, questions: [question], additionals }, 'BADVERS', false);
    }
  }

  const lower = question.name.toLowerCase();
  const apex = findAuthority(lower, table.authorities);
  if (apex === undefined) return { kind: 'forward' };
  if ((question.class !== 'IN' && question.class !== 'ANY') || ZONE_TRANSFERS.has(question.type)) {
    return answer({ id, type: 'response', flags: baseFlags | RCODE_NUM.REFUSED, questions: [question], additionals }, 'REFUSED', false);
  }

  const soa = soaRecord(apex, table.zone, ttl);
  const records = table.names.get(lower);
  if (records === undefined) {
    return fit({
      id, type: 'response', flags: baseFlags | AA | RCODE_NUM.NXDOMAIN,
      questions: [question], authorities: [soa], additionals,
    }, 'NXDOMAIN', limit);
  }
  const answers = recordsFor(question, records, lower === apex ? soa : undefined, ttl);
  return fit({
    id, type: 'response', flags: baseFlags | AA,
    questions: [question], answers, authorities: answers.length === 0 ? [soa] : [], additionals,
  }, 'NOERROR', limit);
}

function recordsFor(question: Question, r: NameRecords, apexSoa: Answer | undefined, ttl: number): Answer[] {
  const name = question.name;
  const out: Answer[] = [];
  const t: string = question.type;
  if (t === 'A' || t === 'ANY') for (const ip of r.a) out.push({ type: 'A', name, ttl, class: 'IN', data: ip });
  if (t === 'AAAA' || t === 'ANY') for (const ip of r.aaaa) out.push({ type: 'AAAA', name, ttl, class: 'IN', data: ip });
  if (t === 'PTR' || t === 'ANY') for (const target of r.ptr) out.push({ type: 'PTR', name, ttl, class: 'IN', data: target });
  if ((t === 'SOA' || t === 'ANY') && apexSoa) out.push({ ...apexSoa, name } as Answer);
  return out;
}

function soaRecord(apex: string, zone: string, ttl: number): Answer {
  return {
    type: 'SOA', name: apex, ttl, class: 'IN',
    data: {
      mname: `ns.dns.${zone}`, rname: `hostmaster.${zone}`,
      serial: 1, refresh: 7200, retry: 1800, expire: 86400, minimum: ttl,
    },
  };
}

function answer(p: dnsPacket.Packet, rcode: Rcode, truncated: boolean): HandlerResult {
  return { kind: 'answer', bytes: dnsPacket.encode(p), rcode, truncated };
}

/** Encodes `p`; when it exceeds `limit`, sends question and OPT only with TC set. */
function fit(p: dnsPacket.Packet, rcode: Rcode, limit: number): HandlerResult {
  const bytes = dnsPacket.encode(p);
  if (bytes.length <= limit) return { kind: 'answer', bytes, rcode, truncated: false };
  return answer({ ...p, flags: (p.flags ?? 0) | TC, answers: [], authorities: [] }, rcode, true);
}

function isInZone(lowerName: string, table: DnsTable): boolean {
  return findAuthority(lowerName, table.authorities) !== undefined;
}

/** Printable ASCII only, labels of 1..63 bytes: the name re-encodes to the same wire bytes (case aside). */
function safeName(name: string): boolean {
  if (name === '.') return true;
  if (name.length > 253) return false;
  let labelLen = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2e) {
      if (labelLen === 0) return false;
      labelLen = 0;
    } else if (c < 0x21 || c > 0x7e || ++labelLen > 63) {
      return false;
    }
  }
  return labelLen > 0;
}

/**
 * Builds an error response (e.g. SERVFAIL when every upstream failed, REFUSED when forwarding is
 * off) for `query`, echoing its question when it has one that re-encodes cleanly. Returns undefined
 * when the query is not answerable (too short, or a response). Never throws.
 */
export function errorResponse(query: Uint8Array, rcode: Exclude<Rcode, 'BADVERS'>): Buffer | undefined {
  try {
    const q = Buffer.isBuffer(query) ? query : Buffer.from(query.buffer, query.byteOffset, query.byteLength);
    if (q.length < HEADER) return undefined;
    const flags = q.readUInt16BE(2);
    if (flags & QR) return undefined;
    const base = { id: q.readUInt16BE(0), type: 'response' as const, flags: (flags & (OPCODE_MASK | RD | CD)) | RA | RCODE_NUM[rcode] };
    let questions: Question[] = [];
    try {
      const p = dnsPacket.decode(q);
      const first = p.questions?.[0];
      if (p.questions?.length === 1 && first && safeName(first.name) && KNOWN_CLASSES.has(first.class ?? 'IN')) questions = [first];
    } catch {
      questions = [];
    }
    return dnsPacket.encode({ ...base, questions });
  } catch {
    return undefined;
  }
}

/** Reads the rcode of a response (4-bit header rcode; extended rcodes are not consulted). */
export function responseRcode(response: Uint8Array): number {
  return response.length >= HEADER ? ((response[3] ?? 0) & 0x0f) : -1;
}
