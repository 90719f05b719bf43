/**
 * iperf3 `-J` output: parsing (pure) and the argv the datapath benchmark runs. Parsing reads the
 * receiver's view (`end.sum_received`), so throughput is what arrived, not what was sent.
 */

/** An iperf3 report that is an error, or lacks the fields a figure is read from. */
export class IperfParseError extends Error {
  override name = 'IperfParseError';
}

/** What one TCP run measured. */
export interface TcpResult {
  readonly gbps: number;
  readonly seconds: number;
  readonly retransmits: number;
  readonly streams: number;
}

/** What one UDP run measured; `loss` is a fraction 0..1 of the datagrams sent. */
export interface UdpResult {
  readonly gbps: number;
  readonly seconds: number;
  readonly loss: number;
  readonly jitterMs: number;
  readonly packets: number;
}

type Obj = Record<string, unknown>;

function parse(text: string, what: string): Obj {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (err) {
    throw new IperfParseError(`iperf3 ${what}: output is not JSON: ${JSON.stringify(text.slice(0, 120))}`, { cause: err });
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new IperfParseError(`iperf3 ${what}: output is not a JSON object`);
  const o = j as Obj;
  if (typeof o.error === 'string') throw new IperfParseError(`iperf3 ${what}: ${o.error}`);
  if (typeof o.end !== 'object' || o.end === null) throw new IperfParseError(`iperf3 ${what}: no "end" section`);
  return o;
}

function num(o: unknown, key: string, what: string): number {
  const v = (o as Obj | undefined)?.[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new IperfParseError(`iperf3 ${what}: missing or invalid ${key}`);
  return v;
}

/** Parses the `-J` output of a TCP client run (`-P n` or not). Throws {@link IperfParseError}. */
export function parseIperfTcp(text: string): TcpResult {
  const o = parse(text, 'tcp');
  const end = o.end as Obj;
  const recv = end.sum_received as Obj | undefined;
  if (!recv) throw new IperfParseError('iperf3 tcp: no end.sum_received (is this a UDP report?)');
  const sent = end.sum_sent as Obj | undefined;
  const streams = Array.isArray(end.streams) ? end.streams.length : 0;
  return {
    gbps: num(recv, 'bits_per_second', 'tcp') / 1e9,
    seconds: num(recv, 'seconds', 'tcp'),
    retransmits: typeof sent?.retransmits === 'number' ? sent.retransmits : 0,
    streams,
  };
}

/** Parses the `-J` output of a UDP client run. Throws {@link IperfParseError}. */
export function parseIperfUdp(text: string): UdpResult {
  const o = parse(text, 'udp');
  const end = o.end as Obj;
  // iperf3 >= 3.11 has sum_received (the receiver's bytes); older versions only "sum".
  const recv = (end.sum_received ?? end.sum) as Obj | undefined;
  const sum = (end.sum ?? end.sum_received) as Obj | undefined;
  if (!recv || !sum || typeof sum.lost_percent !== 'number') throw new IperfParseError('iperf3 udp: no end.sum with lost_percent (is this a TCP report?)');
  const lossPct = num(sum, 'lost_percent', 'udp');
  return {
    gbps: num(recv, 'bits_per_second', 'udp') / 1e9,
    seconds: num(recv, 'seconds', 'udp'),
    loss: Math.min(1, lossPct / 100),
    jitterMs: typeof sum.jitter_ms === 'number' ? sum.jitter_ms : 0,
    packets: typeof sum.packets === 'number' ? sum.packets : 0,
  };
}

/** The iperf3 client argv for one kind of run against `server` (TCP port `port`). */
export function iperfClientArgv(kind: 'tcp1' | 'tcp8' | 'udp', server: string, port: number, seconds: number, udpRate: string): string[] {
  const base = ['iperf3', '-c', server, '-p', String(port), '-t', String(seconds), '-J', '--connect-timeout', '3000'];
  if (kind === 'tcp8') return [...base, '-P', '8'];
  // 1200-byte datagrams fit every mode's MTU (WireGuard 1420, VXLAN 1450) without fragmentation.
  if (kind === 'udp') return [...base, '-u', '-b', udpRate, '-l', '1200'];
  return base;
}
