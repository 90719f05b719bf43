import { describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import { errorResponse, handleQuery, type HandlerResult } from '../../src/dns/handler.ts';
import { buildTable } from '../../src/dns/table.ts';
import { decode, nodeInfo, query, sampleTable } from './fixtures.ts';

const table = sampleTable();
const udp = { transport: 'udp' as const };

function answered(r: HandlerResult) {
  expect(r.kind).toBe('answer');
  if (r.kind !== 'answer') throw new Error('not an answer');
  return { ...r, packet: decode(r.bytes) };
}

describe('handleQuery: in-zone answers', () => {
  it.each([
    ['web.default.pod.weft.local', 'A', ['10.244.1.5']],
    ['web.default.pod.weft.local', 'AAAA', ['fd00:10:244:1::5']],
    ['WEB.Default.POD.weft.LOCAL', 'A', ['10.244.1.5']],
    ['api.default.pod.weft.local', 'A', ['10.244.2.9']],
    ['db-primary.prod.pod.weft.local', 'A', ['10.244.1.6']],
    ['node-1.node.weft.local', 'A', ['10.244.1.1']],
    ['node-2.node.weft.local', 'A', ['10.244.2.1']],
    ['5.1.244.10.in-addr.arpa', 'PTR', ['web.default.pod.weft.local']],
    ['9.2.244.10.in-addr.arpa', 'PTR', ['api.default.pod.weft.local']],
    ['1.1.244.10.in-addr.arpa', 'PTR', ['node-1.node.weft.local']],
    [`5.${'0.'.repeat(15)}1.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa`, 'PTR', ['web.default.pod.weft.local']],
  ] as const)('%s %s -> %j', (name, type, want) => {
    const { packet, rcode } = answered(handleQuery(query(name, type, { id: 777 }), table, udp));
    expect(rcode).toBe('NOERROR');
    expect(packet.id).toBe(777);
    expect(packet.flag_qr && packet.flag_aa && packet.flag_rd).toBe(true);
    expect(packet.questions).toEqual([{ name, type, class: 'IN' }]);
    expect(packet.answers!.map((a) => ('data' in a ? a.data : undefined))).toEqual(want);
    expect(packet.answers!.every((a) => a.name === name && 'ttl' in a && a.ttl === 5)).toBe(true);
    expect(packet.authorities).toEqual([]);
  });

  it('answers ANY with every record of the name', () => {
    const { packet } = answered(handleQuery(query('web.default.pod.weft.local', 'ANY'), table, udp));
    expect(packet.answers!.map((a) => a.type)).toEqual(['A', 'AAAA']);
  });

  it('answers SOA at the apex', () => {
    const { packet, rcode } = answered(handleQuery(query('weft.local', 'SOA'), table, udp));
    expect(rcode).toBe('NOERROR');
    expect(packet.answers).toHaveLength(1);
    expect(packet.answers![0]).toMatchObject({ type: 'SOA', name: 'weft.local', data: { minimum: 5 } });
  });

  it('uses the configured TTL for answers and the SOA', () => {
    const a = answered(handleQuery(query('web.default.pod.weft.local', 'A'), table, { transport: 'udp', ttl: 30 }));
    expect(a.packet.answers![0]).toMatchObject({ ttl: 30 });
    const n = answered(handleQuery(query('nope.default.pod.weft.local', 'A'), table, { transport: 'udp', ttl: 30 }));
    expect(n.packet.authorities![0]).toMatchObject({ type: 'SOA', ttl: 30, data: { minimum: 30 } });
  });

  it.each([
    ['v4only.default.pod.weft.local', 'AAAA'],
    ['web.default.pod.weft.local', 'TXT'],
    ['web.default.pod.weft.local', 'MX'],
    ['default.pod.weft.local', 'A'],
    ['pod.weft.local', 'A'],
    ['node.weft.local', 'AAAA'],
    ['weft.local', 'A'],
    ['5.1.244.10.in-addr.arpa', 'A'],
  ] as const)('existing name without the type: %s %s -> NOERROR, no answers, SOA', (name, type) => {
    const { packet, rcode } = answered(handleQuery(query(name, type), table, udp));
    expect(rcode).toBe('NOERROR');
    expect(packet.rcode).toBe('NOERROR');
    expect(packet.answers).toEqual([]);
    expect(packet.authorities).toHaveLength(1);
    expect(packet.authorities![0]).toMatchObject({ type: 'SOA' });
  });

  it.each([
    ['nope.default.pod.weft.local', 'A', 'weft.local'],
    ['ghost.default.pod.weft.local', 'A', 'weft.local'],
    ['node-3.node.weft.local', 'A', 'weft.local'],
    ['web.other.pod.weft.local', 'A', 'weft.local'],
    ['x.web.default.pod.weft.local', 'A', 'weft.local'],
    ['200.1.244.10.in-addr.arpa', 'PTR', '1.244.10.in-addr.arpa'],
  ] as const)('unknown in-zone name %s %s -> NXDOMAIN with SOA of %s', (name, type, apex) => {
    const { packet, rcode } = answered(handleQuery(query(name, type), table, udp));
    expect(rcode).toBe('NXDOMAIN');
    expect(packet.rcode).toBe('NXDOMAIN');
    expect(packet.flag_aa).toBe(true);
    expect(packet.answers).toEqual([]);
    expect(packet.authorities).toHaveLength(1);
    expect(packet.authorities![0]).toMatchObject({ type: 'SOA', name: apex });
  });

  it('serves another configured zone', () => {
    const t = sampleTable('cluster.example');
    const { packet } = answered(handleQuery(query('web.default.pod.cluster.example', 'A'), t, udp));
    expect(packet.answers![0]).toMatchObject({ data: '10.244.1.5' });
    expect(handleQuery(query('web.default.pod.weft.local', 'A'), t, udp)).toEqual({ kind: 'forward' });
  });

  it('refuses non-IN classes and zone transfers inside the zone', () => {
    const { rcode } = answered(handleQuery(query('web.default.pod.weft.local', 'A', { klass: 'CH' }), table, udp));
    expect(rcode).toBe('REFUSED');
    expect(answered(handleQuery(query('weft.local', 'AXFR'), table, { transport: 'tcp' })).rcode).toBe('REFUSED');
    expect(answered(handleQuery(query('weft.local', 'IXFR'), table, udp)).rcode).toBe('REFUSED');
  });
});

describe('handleQuery: forwarding', () => {
  it.each([
    ['example.com', 'A'],
    ['weft.local.example.com', 'A'],
    ['local', 'SOA'],
    ['.', 'NS'],
    ['9.3.244.10.in-addr.arpa', 'PTR'], // dead node's reverse zone
    ['1.0.0.127.in-addr.arpa', 'PTR'],
    ['version.bind', 'TXT'],
  ] as const)('%s %s -> forward', (name, type) => {
    expect(handleQuery(query(name, type), table, udp)).toEqual({ kind: 'forward' });
  });
});

describe('handleQuery: EDNS0 and truncation', () => {
  const big = buildTable({
    zone: 'weft.local',
    self: {
      info: nodeInfo('n1', 1, { podCIDRs: ['10.244.1.0/24', 'fd00::/64'] }),
      pods: [{ name: 'many', namespace: 'x', ips: Array.from({ length: 60 }, (_, i) => `fd00::${(i + 1).toString(16)}`) }],
    },
    remotes: [],
  });

  it('echoes OPT with our payload size and the DO bit, and sends none without EDNS', () => {
    const withOpt = answered(handleQuery(query('web.default.pod.weft.local', 'A', { edns: 4096, do: true }), table, udp)).packet;
    const opt = withOpt.additionals!.find((a) => a.type === 'OPT');
    expect(opt).toMatchObject({ udpPayloadSize: 1232, ednsVersion: 0, flag_do: true, options: [] });
    const without = answered(handleQuery(query('web.default.pod.weft.local', 'A'), table, udp)).packet;
    expect(without.additionals).toEqual([]);
  });

  it('answers BADVERS to EDNS versions above 0', () => {
    const { packet, rcode } = answered(handleQuery(query('web.default.pod.weft.local', 'A', { edns: 1232, ednsVersion: 1 }), table, udp));
    expect(rcode).toBe('BADVERS');
    expect(packet.additionals![0]).toMatchObject({ type: 'OPT', extendedRcode: 1 });
    expect(packet.answers).toEqual([]);
  });

  it('truncates over UDP at 512 bytes without EDNS, with TC set and no answers', () => {
    const r = answered(handleQuery(query('many.x.pod.weft.local', 'AAAA'), big, udp));
    expect(r.truncated).toBe(true);
    expect(r.packet.flag_tc).toBe(true);
    expect(r.packet.answers).toEqual([]);
    expect(r.packet.questions).toHaveLength(1);
    expect(r.bytes.length).toBeLessThanOrEqual(512);
  });

  it('fits the answer within the EDNS size when it can, bounded by ours', () => {
    // 60 AAAA records are about 1.7 KB: over our 1232 even if the client offers 4096.
    const capped = answered(handleQuery(query('many.x.pod.weft.local', 'AAAA', { edns: 4096 }), big, udp));
    expect(capped.packet.flag_tc).toBe(true);
    const larger = answered(handleQuery(query('many.x.pod.weft.local', 'AAAA', { edns: 4096 }), big, { transport: 'udp', ednsUdpSize: 4096 }));
    expect(larger.packet.flag_tc).toBe(false);
    expect(larger.packet.answers).toHaveLength(60);
    // A client size below 512 is treated as 512.
    const tiny = answered(handleQuery(query('web.default.pod.weft.local', 'A', { edns: 100 }), table, udp));
    expect(tiny.packet.flag_tc).toBe(false);
  });

  it('sends the whole answer over TCP', () => {
    const r = answered(handleQuery(query('many.x.pod.weft.local', 'AAAA'), big, { transport: 'tcp' }));
    expect(r.packet.flag_tc).toBe(false);
    expect(r.packet.answers).toHaveLength(60);
  });
});

describe('handleQuery: malformed input', () => {
  const good = query('web.default.pod.weft.local', 'A', { id: 0xbeef });
  const formerr = (bytes: Buffer, opts: { transport: 'udp' | 'tcp' } = udp) => {
    const r = answered(handleQuery(bytes, table, opts));
    expect(r.rcode).toBe('FORMERR');
    expect(r.packet.id).toBe(bytes.readUInt16BE(0));
    expect(r.packet.rcode).toBe('FORMERR');
    return r.packet;
  };

  it('drops packets shorter than a header and responses', () => {
    expect(handleQuery(Buffer.alloc(0), table, udp)).toEqual({ kind: 'drop', reason: 'short' });
    expect(handleQuery(good.subarray(0, 11), table, udp)).toEqual({ kind: 'drop', reason: 'short' });
    const resp = Buffer.from(good);
    resp[2] |= 0x80;
    expect(handleQuery(resp, table, udp)).toEqual({ kind: 'drop', reason: 'response' });
  });

  it('answers FORMERR to a readable header with a truncated body', () => {
    formerr(good.subarray(0, good.length - 3));
    formerr(good.subarray(0, 13));
  });

  it('answers FORMERR to trailing bytes, question counts other than 1, answers in a query, two OPTs', () => {
    formerr(Buffer.concat([good, Buffer.from([1, 2, 3])]));
    formerr(dnsPacket.encode({ id: 1, type: 'query', questions: [] }));
    formerr(dnsPacket.encode({ id: 2, type: 'query', questions: [{ name: 'a.weft.local', type: 'A' }, { name: 'b.weft.local', type: 'A' }] }));
    formerr(dnsPacket.encode({ id: 3, type: 'query', questions: [{ name: 'a.weft.local', type: 'A' }], answers: [{ name: 'a.weft.local', type: 'A', data: '10.0.0.1' }] }));
    const opt = { type: 'OPT' as const, name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
    formerr(dnsPacket.encode({ id: 4, type: 'query', questions: [{ name: 'a.weft.local', type: 'A' }], additionals: [opt, opt] }));
  });

  it('answers FORMERR to oversized queries and to in-zone names that cannot be echoed', () => {
    formerr(Buffer.concat([good, Buffer.alloc(5000)]), { transport: 'tcp' });
    const weird = dnsPacket.encode({ id: 5, type: 'query', questions: [{ name: 'a b.default.pod.weft.local', type: 'A' }] });
    formerr(weird);
  });

  it('answers NOTIMP to other opcodes, keeping the opcode', () => {
    const notify = Buffer.from(good);
    notify.writeUInt16BE((4 << 11) | 0x0100, 2);
    const r = answered(handleQuery(notify, table, udp));
    expect(r.rcode).toBe('NOTIMP');
    expect(r.packet.opcode).toBe('NOTIFY');
  });
});

describe('errorResponse', () => {
  it('builds SERVFAIL with the question echoed and the original ID', () => {
    const p = decode(errorResponse(query('example.com', 'A', { id: 99 }), 'SERVFAIL')!);
    expect(p).toMatchObject({ id: 99, rcode: 'SERVFAIL', flag_qr: true, flag_rd: true });
    expect(p.questions).toEqual([{ name: 'example.com', type: 'A', class: 'IN' }]);
  });

  it('returns undefined for unanswerable input and omits broken questions', () => {
    expect(errorResponse(Buffer.alloc(5), 'SERVFAIL')).toBeUndefined();
    const p = decode(errorResponse(Buffer.concat([Buffer.from([0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([60, 1])]), 'SERVFAIL')!);
    expect(p.id).toBe(7);
    expect(p.questions).toEqual([]);
  });
});
