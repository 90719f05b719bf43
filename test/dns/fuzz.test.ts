import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { handleQuery, type HandlerResult } from '../../src/dns/handler.ts';
import { decode, query, sampleTable } from './fixtures.ts';

const table = sampleTable();

/** The handler's contract on hostile input: never throws; drop, or a parseable response with the query's ID. */
function checkContract(bytes: Uint8Array, transport: 'udp' | 'tcp' = 'udp'): HandlerResult {
  const r = handleQuery(bytes, table, { transport });
  if (bytes.length < 12) expect(r).toEqual({ kind: 'drop', reason: 'short' });
  if (r.kind === 'answer') {
    const p = decode(r.bytes);
    expect(p.id).toBe(Buffer.from(bytes).readUInt16BE(0));
    expect(p.flag_qr).toBe(true);
    if (transport === 'udp') expect(r.bytes.length).toBeLessThanOrEqual(1232);
  }
  return r;
}

const header = (qd: number, an = 0, ns = 0, ar = 0, flags = 0x0100) => {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(0x1234, 0);
  h.writeUInt16BE(flags, 2);
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  h.writeUInt16BE(ns, 8);
  h.writeUInt16BE(ar, 10);
  return h;
};

describe('handler fuzzing', () => {
  it('never throws on random bytes (short, long, oversized)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 9000 }), fc.constantFrom('udp' as const, 'tcp' as const), (b, t) => {
      checkContract(b, t);
    }), { numRuns: 2000 });
  });

  it('truncated valid queries get FORMERR when the header is readable, drop otherwise', () => {
    const names = fc.constantFrom('web.default.pod.weft.local', 'example.com', 'nope.weft.local', '5.1.244.10.in-addr.arpa');
    fc.assert(fc.property(names, fc.constantFrom('A', 'AAAA', 'PTR', 'TXT') as fc.Arbitrary<'A'>, fc.boolean(), fc.nat(), (name, type, edns, cut) => {
      const full = query(name, type, edns ? { edns: 1232 } : {});
      const len = cut % full.length;
      const r = checkContract(full.subarray(0, len));
      if (len < 12) expect(r.kind).toBe('drop');
      else {
        expect(r.kind).toBe('answer');
        if (r.kind === 'answer') expect(r.rcode).toBe('FORMERR');
      }
    }), { numRuns: 1000 });
  });

  it('valid queries with random bytes flipped never throw', () => {
    fc.assert(fc.property(fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), (seed, flips) => {
      const b = Buffer.from(query(['web.default.pod.weft.local', 'example.com'][seed % 2], 'A', { edns: 4096 }));
      for (const [pos, v] of flips) b[pos % b.length] = v;
      checkContract(b);
    }), { numRuns: 2000 });
  });

  it('compression pointer loops and forward pointers get FORMERR', () => {
    // Question name is a pointer to itself (offset 12).
    const self = Buffer.concat([header(1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    // Two pointers pointing at each other.
    const mutual = Buffer.concat([header(1), Buffer.from([0xc0, 14, 0xc0, 12, 0, 1, 0, 1])]);
    // Label then pointer back to the start of the label (a cycle through prior data).
    const cycle = Buffer.concat([header(1), Buffer.from([1, 0x61, 0xc0, 12, 0, 1, 0, 1])]);
    for (const b of [self, mutual, cycle]) {
      const r = checkContract(b);
      expect(r.kind === 'answer' && r.rcode).toBe('FORMERR');
    }
  });

  it('random pointer soup after a header never throws and is FORMERR or dropped', () => {
    const pointer = fc.tuple(fc.integer({ min: 0xc0, max: 0xff }), fc.integer({ min: 0, max: 255 })).map(([a, b]) => [a, b]);
    const label = fc.uint8Array({ minLength: 0, maxLength: 5 }).map((l) => [l.length, ...l]);
    fc.assert(fc.property(fc.array(fc.oneof(pointer, label), { maxLength: 40 }), fc.integer({ min: 0, max: 3 }), (parts, qd) => {
      const body = Buffer.from(parts.flat());
      const r = checkContract(Buffer.concat([header(qd, 0, 0, qd), body, Buffer.from([0, 1, 0, 1])]));
      // The additional count promises records that are not there: never a usable query.
      expect(r.kind === 'answer' ? r.rcode : r.kind).toBe('FORMERR');
    }), { numRuns: 2000 });
  });

  it('huge section counts with little data get FORMERR', () => {
    const r = checkContract(Buffer.concat([header(0xffff, 0xffff, 0xffff, 0xffff), Buffer.from([0])]));
    expect(r.kind === 'answer' && r.rcode).toBe('FORMERR');
  });

  it('oversized names (over 255 bytes) get FORMERR', () => {
    const labels = Array.from({ length: 6 }, () => [63, ...Buffer.alloc(63, 0x61)]).flat();
    const r = checkContract(Buffer.concat([header(1), Buffer.from(labels), Buffer.from([0, 0, 1, 0, 1])]));
    expect(r.kind === 'answer' && r.rcode).toBe('FORMERR');
  });

  it('random well-formed packets (dns-packet encoded) are answered, forwarded or dropped, never throw', () => {
    const nameArb = fc.array(fc.stringMatching(/^[a-zA-Z0-9-]{1,20}$/), { minLength: 1, maxLength: 6 })
      .map((ls) => ls.join('.'))
      .chain((n) => fc.constantFrom(n, `${n}.weft.local`, `${n}.pod.weft.local`, `${n}.in-addr.arpa`));
    const typeArb = fc.constantFrom('A', 'AAAA', 'PTR', 'TXT', 'SOA', 'NS', 'ANY', 'SRV', 'CNAME');
    fc.assert(fc.property(nameArb, typeArb, fc.boolean(), fc.integer({ min: 0, max: 65535 }), (name, type, edns, size) => {
      const b = query(name, type as 'A', edns ? { edns: size } : {});
      const r = checkContract(b);
      if (r.kind === 'answer') expect(['NOERROR', 'NXDOMAIN', 'REFUSED']).toContain(r.rcode);
    }), { numRuns: 1000 });
  });

  it('sanity: dns-packet rejects forward pointers (the guard the handler relies on)', () => {
    expect(() => dnsPacket.decode(Buffer.concat([header(1), Buffer.from([0xc0, 20, 0, 1, 0, 1, 0, 0, 1, 0x61, 0])]))).toThrow();
  });
});
