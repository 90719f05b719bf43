/** Loopback DNS clients and a fake upstream for the server tests (dns-packet for every message). */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

export function udpExchange(host: string, port: number, msg: Buffer, timeoutMs = 3000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => { s.close(); resolve(undefined); }, timeoutMs);
    s.on('message', (m) => { clearTimeout(t); s.close(); resolve(m); });
    s.send(msg, port, host);
  });
}

export function tcpExchange(host: string, port: number, msg: Buffer, timeoutMs = 2000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => { c.destroy(); reject(new Error('tcp timeout')); }, timeoutMs);
    c.on('connect', () => c.write(dnsPacket.streamEncode(dnsPacket.decode(msg))));
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        clearTimeout(t);
        c.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    c.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

/** A fake upstream resolver: answers every A query with `ip`, records the IDs it saw. */
export interface FakeUpstream {
  readonly port: number;
  readonly ids: number[];
  close(): Promise<void>;
}

export function fakeUpstream(host: string, port: number, ip: string, opts: { silent?: boolean } = {}): Promise<FakeUpstream> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const ids: number[] = [];
    s.on('error', reject);
    s.on('message', (m, r) => {
      const q = dnsPacket.decode(m);
      ids.push(q.id ?? -1);
      if (opts.silent) return;
      s.send(dnsPacket.encode({
        id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
        questions: q.questions, answers: [{ name: q.questions![0].name, type: 'A', ttl: 60, data: ip }],
      }), r.port, r.address);
    });
    s.bind(port, host, () => resolve({
      port: s.address().port, ids,
      close: () => new Promise<void>((res) => s.close(() => res())),
    }));
  });
}

/** A fake upstream that answers over UDP truncated (TC, no answers) and over TCP in full (`count` A records). */
export async function truncatingUpstream(host: string, count: number): Promise<FakeUpstream & { tcpQueries: number }> {
  const udp = dgram.createSocket('udp4');
  const ids: number[] = [];
  const state = { tcpQueries: 0 };
  const answer = (q: dnsPacket.DecodedPacket, tc: boolean) => dnsPacket.encode({
    id: q.id, type: 'response', flags: dnsPacket.RECURSION_AVAILABLE | (tc ? dnsPacket.TRUNCATED_RESPONSE : 0), questions: q.questions,
    answers: tc ? [] : Array.from({ length: count }, (_, i) => ({ name: q.questions![0].name, type: 'A' as const, ttl: 60, data: `198.18.0.${i + 1}` })),
  });
  udp.on('message', (m, r) => {
    const q = dnsPacket.decode(m);
    ids.push(q.id ?? -1);
    udp.send(answer(q, true), r.port, r.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, host, () => resolve()));
  const port = udp.address().port;
  const tcp = net.createServer((c) => {
    let buf = Buffer.alloc(0);
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        state.tcpQueries++;
        const q = dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        const a = answer(q, false);
        const framed = Buffer.alloc(a.length + 2);
        framed.writeUInt16BE(a.length, 0);
        a.copy(framed, 2);
        c.end(framed);
      }
    });
  });
  await new Promise<void>((resolve) => tcp.listen(port, host, () => resolve()));
  return {
    port, ids,
    get tcpQueries() { return state.tcpQueries; },
    close: async () => {
      await new Promise<void>((r) => udp.close(() => r()));
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}
