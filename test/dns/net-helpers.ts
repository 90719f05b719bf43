/** Loopback DNS clients and a fake upstream for the server tests (dns-packet for every message). */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

export function udpExchange(host: string, port: number, msg: Buffer, timeoutMs = 1000): Promise<Buffer | undefined> {
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
