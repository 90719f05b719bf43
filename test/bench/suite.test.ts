import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IperfParseError, iperfClientArgv, parseIperfTcp, parseIperfUdp } from '../../bench/suite/iperf.ts';
import { StatsError, pairedRatios, percentile, summarize } from '../../bench/suite/stats.ts';
import { ProcStatError, busyCores, parseProcStat } from '../../bench/suite/cpu.ts';
import { aggregate, checkWeftMtus, DatapathBenchError, FIGURES, manualMtu, pairedSummary, parseLinkMtu, parsePidStatTicks, type ModeResult, type RepeatFigures } from '../../bench/suite/datapath.ts';
import { compareReports, flatten, renderComparison } from '../../bench/suite/compare.ts';
import { chartSpec, ratioToPlain, renderChart, renderMarkdown, weftOverManual, type BenchReport } from '../../bench/suite/report.ts';
import { controlJobs, lastJsonObject } from '../../bench/suite/control.ts';
import { syntheticBlock, syntheticNodeInfo } from '../../bench/suite/peer-feeder.ts';
import { parseProcCpuSeconds, parseVmStatus, smapsBinaryMb } from '../../bench/suite/agent-rss.ts';
import { timestampDir } from '../../bench/suite/run.ts';

const fixture = (name: string): string => readFileSync(join(import.meta.dirname, 'fixtures', name), 'utf8');

describe('iperf3 JSON (fixtures captured from iperf 3.12 on loopback)', () => {
  it('reads a 1-stream TCP run from the receiver side', () => {
    const r = parseIperfTcp(fixture('iperf3-tcp1.json'));
    const raw = JSON.parse(fixture('iperf3-tcp1.json'));
    expect(r.gbps).toBeCloseTo(raw.end.sum_received.bits_per_second / 1e9, 9);
    expect(r.streams).toBe(1);
    expect(r.seconds).toBeGreaterThan(0.9);
  });
  it('reads an 8-stream TCP run', () => {
    const r = parseIperfTcp(fixture('iperf3-tcp8.json'));
    expect(r.streams).toBe(8);
    expect(r.gbps).toBeGreaterThan(0);
  });
  it('reads UDP throughput as received and loss as a fraction', () => {
    const r = parseIperfUdp(fixture('iperf3-udp.json'));
    expect(r.gbps).toBeCloseTo(0.345458744, 6);
    expect(r.loss).toBeCloseTo(0.3075250610894118, 9);
    expect(r.packets).toBe(51973);
  });
  it('turns an iperf3 error report into IperfParseError with its message', () => {
    expect(() => parseIperfTcp(fixture('iperf3-error.json'))).toThrow(/unable to connect to server/);
    expect(() => parseIperfUdp(fixture('iperf3-error.json'))).toThrow(IperfParseError);
  });
  it('rejects the wrong kind, non-JSON and hostile values', () => {
    expect(() => parseIperfTcp(fixture('iperf3-udp.json'))).not.toThrow(); // UDP has sum_received too, but:
    expect(() => parseIperfUdp(fixture('iperf3-tcp1.json'))).toThrow(/lost_percent/);
    expect(() => parseIperfTcp('iperf3: error - unable to connect')).toThrow(/not JSON/);
    expect(() => parseIperfTcp('[1,2]')).toThrow(/not a JSON object/);
    expect(() => parseIperfTcp('{"end":{"sum_received":{"bits_per_second":-5,"seconds":1}}}')).toThrow(/bits_per_second/);
    expect(() => parseIperfTcp('{"end":{"sum_received":{"bits_per_second":"1e9","seconds":1}}}')).toThrow(IperfParseError);
  });
  it('builds client argv per kind', () => {
    expect(iperfClientArgv('tcp8', '10.244.2.2', 5201, 2, '1G')).toContain('-P');
    expect(iperfClientArgv('udp', '10.244.2.2', 5201, 2, '500M')).toEqual(expect.arrayContaining(['-u', '-b', '500M', '-l', '1200']));
    expect(iperfClientArgv('tcp1', '10.244.2.2', 5201, 2, '1G')).not.toContain('-u');
  });
});

describe('statistics', () => {
  it.each([
    [[3], 3, 3, 3],
    [[1, 2, 3], 2, 1, 3],
    [[4, 1, 3, 2], 2.5, 1, 4],
    [[5, NaN, 1], 3, 1, 5],
  ])('summarize(%j) -> median %d min %d max %d', (v, med, min, max) => {
    expect(summarize(v)).toEqual({ median: med, min, max, n: v.filter(Number.isFinite).length });
  });
  it('refuses to summarize nothing', () => {
    expect(() => summarize([])).toThrow(StatsError);
    expect(() => summarize([NaN, Infinity])).toThrow(StatsError);
  });
  it('percentiles by nearest rank', () => {
    const v = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentile(v, 50)).toBe(50);
    expect(percentile(v, 99)).toBe(99);
    expect(percentile(v, 100)).toBe(100);
    expect(percentile(v, 0)).toBe(1);
    expect(() => percentile(v, 101)).toThrow(StatsError);
  });
  it('min <= median <= max, and the median is order-independent (property)', () => {
    fc.assert(fc.property(fc.array(fc.double({ noNaN: true, min: -1e9, max: 1e9 }), { minLength: 1, maxLength: 50 }), (v) => {
      const s = summarize(v);
      expect(s.min).toBeLessThanOrEqual(s.median);
      expect(s.median).toBeLessThanOrEqual(s.max);
      expect(summarize([...v].reverse()).median).toBe(s.median);
      expect(percentile(v, 50)).toBeGreaterThanOrEqual(s.min);
    }));
  });
  it('aggregates repeats per figure, with null for a figure no repeat produced', () => {
    const row = (x: number): RepeatFigures => ({ tcp1_gbps: x, tcp8_gbps: 2 * x, udp_gbps: NaN, udp_loss: 0.1, rr_p50_us: 50, rr_p99_us: 90, cpu_per_gbps: 1, cpu_excess_per_gbps: 0.5, wg_cpu_per_gbps: NaN, control_cpu_per_gbps: NaN });
    const r = aggregate('plain', 1500, [row(1), row(3), row(2)], ['x']);
    expect(r).toMatchObject({ mode: 'plain', repeats: 3, tcp1_gbps: 2, tcp1_gbps_min: 1, tcp1_gbps_max: 3, tcp8_gbps: 4, udp_gbps: null, udp_gbps_min: null, errors: ['x'] });
    for (const f of FIGURES) expect(r).toHaveProperty(`${f}_max`);
  });
});

describe('paired weft / manual ratios', () => {
  it('takes the ratio per pair, skipping pairs with a failed side', () => {
    const r = pairedRatios([1, 2, NaN, 3, 4], [2, 2, 1, 0, 4]);
    expect(r.ratios).toEqual([0.5, 1, 1]);
    expect(r).toMatchObject({ median: 1, min: 0.5, max: 1, n: 3 });
    expect(() => pairedRatios([1], [1, 2])).toThrow(/differ in length/);
    expect(() => pairedRatios([NaN], [1])).toThrow(StatsError);
  });
  it('a common factor (host load drift) cancels in each pair (property)', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.double({ min: 0.1, max: 10, noNaN: true }), fc.double({ min: 0.2, max: 1, noNaN: true })), { minLength: 1, maxLength: 20 }), fc.double({ min: 0.5, max: 1.5, noNaN: true }), (pairs, k) => {
      // Both sides of pair i run at the host speed pairs[i][1]; weft is k times manual.
      const manual = pairs.map(([x, load]) => x * load);
      const weft = manual.map((m) => m * k);
      const r = pairedRatios(weft, manual);
      expect(r.min).toBeCloseTo(k, 9);
      expect(r.max).toBeCloseTo(k, 9);
    }));
  });
  it('summarizes rows pair by pair per throughput figure', () => {
    const row = (t1: number, t8: number, udp: number, wg = NaN, ctl = NaN): RepeatFigures => ({ tcp1_gbps: t1, tcp8_gbps: t8, udp_gbps: udp, udp_loss: 0, rr_p50_us: 1, rr_p99_us: 2, cpu_per_gbps: 1, cpu_excess_per_gbps: 0, wg_cpu_per_gbps: wg, control_cpu_per_gbps: ctl });
    const s = pairedSummary([row(0.3, 0.4, NaN, 5.1, 0.1), row(0.2, 0.4, NaN, 5.5, 0.1), row(0.33, 0.2, NaN, 4.9, 0.1)], [row(0.3, 0.5, 1, 5), row(0.25, 0.4, 1, 5), row(0.3, 0.2, 1, 5)], { weft: 1440, manual: 1440 }, { weft: 1440, manual: 1440 });
    expect(s.method).toBe('paired-interleaved');
    expect(s.pairs).toBe(3);
    expect(s.tcp1_gbps?.median).toBeCloseTo(1);
    expect(s.tcp1_gbps?.min).toBeCloseTo(0.8);
    expect(s.tcp1_gbps?.max).toBeCloseTo(1.1);
    expect(s.tcp8_gbps).toMatchObject({ median: 1, min: 0.8, max: 1, n: 3 });
    expect(s.udp_gbps).toBeNull();
    expect(s.wg_cpu_per_gbps?.median).toBeCloseTo(1.02);
    expect(s.wg_cpu_per_gbps?.max).toBeCloseTo(1.1);
    expect(s.wg_and_control_cpu_per_gbps?.median).toBeCloseTo(1.04);
    expect(s.wg_and_control_cpu_per_gbps?.min).toBeCloseTo(1);
    expect(pairedSummary([row(1, 1, 1)], [row(1, 1, 1)], { weft: 1440, manual: 1440 }, { weft: 1440, manual: 1440 }).wg_cpu_per_gbps).toBeNull();
  });
  it('reads utime + stime from /proc/<pid>/stat, also with a command name holding ") "', () => {
    const line = (comm: string) => `4242 (${comm}) S 1 4242 4242 0 -1 4194560 1234 0 0 0 317 45 0 0 20 0 9 0 123456 1525916 1300 18446744073709551615\n`;
    expect(parsePidStatTicks(line('wireguard-go'))).toBe(362);
    expect(parsePidStatTicks(line('we) ird (x'))).toBe(362);
    expect(() => parsePidStatTicks('4242 (x) S 1')).toThrow(DatapathBenchError);
  });
});

describe('MTUs', () => {
  it('reads the MTU from ip -o link output', () => {
    expect(parseLinkMtu('7: weft0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1440 qdisc fq_codel state UNKNOWN mode DEFAULT group default qlen 500\\    link/none\n')).toBe(1440);
    expect(parseLinkMtu('2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP')).toBe(1500);
    expect(() => parseLinkMtu('Device "weft0" does not exist.')).toThrow(DatapathBenchError);
    expect(() => parseLinkMtu('x: mtu 99999999 y')).toThrow(DatapathBenchError);
  });
  it('weft: every pod must have its node\'s weft0 MTU', () => {
    expect(checkWeftMtus([{ node: 'n1', tunnel: 1440, pod: 1440 }, { node: 'n2', tunnel: 1440, pod: 1440 }])).toEqual({ tunnel: 1440, pod: 1440 });
    expect(() => checkWeftMtus([{ node: 'n1', tunnel: 1440, pod: 1440 }, { node: 'n2', tunnel: 1440, pod: 1400 }])).toThrow(/pod MTU 1400 differs from weft0 MTU 1440 on n2/);
    expect(() => checkWeftMtus([{ node: 'n1', tunnel: 1440, pod: 1440 }, { node: 'n2', tunnel: 1420, pod: 1420 }])).toThrow(/differ between nodes/);
    expect(() => checkWeftMtus([])).toThrow(DatapathBenchError);
  });
  it('hand-made modes derive their MTU from the underlay; WireGuard as weft plans it, or weft0\'s', () => {
    expect(manualMtu('plain', 1500)).toBe(1500);
    expect(manualMtu('vxlan', 1500)).toBe(1450);
    expect(manualMtu('wireguard-manual', 1500)).toBe(1440);
    expect(manualMtu('wireguard-manual', 9000)).toBe(8940);
    expect(manualMtu('wireguard-manual', 1500, 1400)).toBe(1400);
  });
});

describe('/proc/stat', () => {
  const text = 'cpu  100 5 50 800 10 1 4 0 0 0\ncpu0 50 2 25 400 5 0 2 0 0 0\nintr 1\n';
  it('parses the aggregate line', () => {
    expect(parseProcStat(text)).toEqual({ busy: 160, total: 970 });
    expect(() => parseProcStat('cpu0 1 2 3 4\n')).toThrow(ProcStatError);
    expect(() => parseProcStat('cpu  a b c d\n')).toThrow(ProcStatError);
  });
  it('busy cores between samples', () => {
    expect(busyCores({ busy: 0, total: 0 }, { busy: 50, total: 100 }, 2)).toBe(1);
    expect(busyCores({ busy: 5, total: 10 }, { busy: 5, total: 10 }, 2)).toBe(0);
  });
});

function mode(name: ModeResult['mode'], tcp1: number, extra: Record<string, unknown> = {}): ModeResult {
  return { mode: name, mtu: 1500, repeats: 1, errors: [], tcp1_gbps: tcp1, tcp1_gbps_min: tcp1, tcp1_gbps_max: tcp1, tcp8_gbps: 2 * tcp1, udp_gbps: tcp1 / 2, udp_loss: 0.01, rr_p50_us: 40, rr_p99_us: 100, cpu_per_gbps: 0.2, ...extra };
}

const report = (modes: ModeResult[], cp: Record<string, unknown> = {}): BenchReport => ({
  version: 1, backend: 'userspace', backend_note: 'wireguard-go', started_at: '2026-11-23T13:00:00.000Z', quick: true, repeat: 1,
  host: { cpus: 2, loadavg_1m_start: 10, loadavg_1m_end: 12, kernel: '6.18' }, modes, control_plane: cp,
});

describe('report', () => {
  const modes = [mode('plain', 10), mode('vxlan', 8), mode('weft', 0.98), mode('wireguard-manual', 1)];
  it('ratios to plain and weft over manual', () => {
    expect(ratioToPlain(modes, 'vxlan', 'tcp1_gbps')).toBeCloseTo(0.8);
    expect(ratioToPlain(modes, 'plain', 'tcp1_gbps')).toBe(1);
    expect(weftOverManual(modes, 'tcp1_gbps')).toBeCloseTo(0.98);
    expect(ratioToPlain([mode('vxlan', 1)], 'vxlan', 'tcp1_gbps')).toBeNull();
  });
  it('Markdown has a row per mode with its ratio and the backend', () => {
    const md = renderMarkdown(report(modes, { gossip_100: { converge_ms_max: 400 } }));
    expect(md).toMatch(/\| vxlan \| 1500 \| 8\.000 \(8\.000-8\.000\) \| 0\.800 \|/);
    expect(md).toContain('**userspace**');
    expect(md).toContain('weft / wireguard-manual (target >= 0.97), ratio of the medians: tcp1_gbps 0.980');
    expect(md).toContain('| gossip_100 |');
    expect(md).not.toContain('paired and interleaved');
  });
  it('Markdown shows the paired weft / manual ratios when the report has them', () => {
    const row = (x: number): RepeatFigures => ({ tcp1_gbps: x, tcp8_gbps: x, udp_gbps: x, udp_loss: 0, rr_p50_us: 1, rr_p99_us: 2, cpu_per_gbps: 1, cpu_excess_per_gbps: 0, wg_cpu_per_gbps: 5 / x, control_cpu_per_gbps: NaN });
    const summary = { weft_vs_manual: pairedSummary([row(0.97), row(0.9)], [row(1), row(1)], { weft: 1440, manual: 1440 }, { weft: 1440, manual: 1440 }) };
    const md = renderMarkdown({ ...report(modes), summary });
    expect(md).toContain('paired and interleaved');
    expect(md).toContain('WireGuard MTU weft 1440, manual 1440');
    expect(md).toContain('tcp1_gbps 0.935 (0.900-0.970, 2 pairs)');
    expect(md).toMatch(/CPU per Gbit, weft \/ manual per pair .*: wireguard-go 1\.071 \(1\.031-1\.111, 2 pairs\); with weft's agents added 1\.071/);
  });
  it('the chart spec holds every mode and run; Vega renders it to SVG', async () => {
    const r = report(modes);
    const spec = chartSpec(r) as unknown as { data: { values: Array<{ mode: string; run: string }> } };
    expect(spec.data.values).toHaveLength(12);
    const svg = await renderChart(r);
    expect(svg.startsWith('<svg')).toBe(true);
    for (const m of ['plain', 'vxlan', 'weft', 'wireguard-manual']) expect(svg).toContain(m);
  });
});

describe('compare', () => {
  const a = { modes: [mode('plain', 10), mode('weft', 1, { tunnel_mtu: 1440 }), mode('wireguard-manual', 1, { tunnel_mtu: 1440 })], control_plane: { gossip_100: { converge_ms_max: 400, error: undefined } } };
  it('flattens medians, ratios and numeric control-plane leaves', () => {
    const f = flatten(a);
    expect(f.get('weft.tcp1_gbps')).toBe(1);
    expect(f.get('ratio.weft_to_plain.tcp1_gbps')).toBeCloseTo(0.1);
    expect(f.get('ratio.weft_to_manual.tcp1_gbps')).toBe(1);
    expect(f.get('control_plane.gossip_100.converge_ms_max')).toBe(400);
    expect([...f.keys()].some((k) => k.endsWith('_min') || k.endsWith('mtu'))).toBe(false);
  });
  it('flags a ratio that dropped more than PCT, and only ratios', () => {
    const b = { modes: [mode('plain', 10), mode('weft', 0.9), mode('wireguard-manual', 1)], control_plane: { gossip_100: { converge_ms_max: 4000 } } };
    const rows = compareReports(a, b, 5);
    const bad = rows.filter((r) => r.regression).map((r) => r.figure);
    expect(bad).toEqual(['ratio.weft_to_manual.tcp1_gbps', 'ratio.weft_to_manual.tcp8_gbps', 'ratio.weft_to_manual.udp_gbps', 'ratio.weft_to_plain.tcp1_gbps', 'ratio.weft_to_plain.tcp8_gbps', 'ratio.weft_to_plain.udp_gbps']);
    expect(rows.find((r) => r.figure === 'control_plane.gossip_100.converge_ms_max')).toMatchObject({ change: 9, regression: false });
    expect(compareReports(a, b, 15).some((r) => r.regression)).toBe(false);
    expect(compareReports(a, b).some((r) => r.regression)).toBe(false);
    const text = renderComparison(rows);
    expect(text).toMatch(/ratio\.weft_to_manual\.tcp1_gbps\s+1\.000\s+0\.9000\s+-10\.0% \(worse\)\s+! REGRESSION/);
    expect(text).toMatch(/control_plane\.gossip_100\.converge_ms_max\s+400\s+4000\s+\+900\.0% \(worse\)/);
  });
  it('an improvement or an unchanged report is never a regression (property)', () => {
    fc.assert(fc.property(fc.double({ min: 0.01, max: 10, noNaN: true }), fc.double({ min: 1, max: 3, noNaN: true }), (x, k) => {
      const before = { modes: [mode('plain', 10), mode('weft', x)] };
      const after = { modes: [mode('plain', 10), mode('weft', Math.min(10, x * k))] };
      expect(compareReports(before, after, 0).some((r) => r.regression)).toBe(false);
      expect(compareReports(before, before, 0).some((r) => r.regression)).toBe(false);
    }));
  });
  it('reads the paired weft / manual ratios of the summary; a drop of their median is a regression', () => {
    const paired = (median: number) => ({ weft_vs_manual: { method: 'paired-interleaved', pairs: 3, tcp1_gbps: { median, min: median - 0.05, max: median + 0.02, n: 3, ratios: [] }, tcp8_gbps: null, udp_gbps: null, wg_cpu_per_gbps: { median: 2 - median, min: 1, max: 1.2, n: 3, ratios: [] }, wg_and_control_cpu_per_gbps: { median: 2.1 - median, min: 1, max: 1.3, n: 3, ratios: [] } } });
    const pa = { ...a, summary: paired(0.98) };
    const pb = { ...a, summary: paired(0.9) };
    const f = flatten(pa);
    expect(f.get('ratio.weft_vs_manual.tcp1_gbps')).toBe(0.98);
    expect(f.get('summary.weft_vs_manual_min.tcp1_gbps')).toBeCloseTo(0.93);
    expect(f.get('summary.weft_vs_manual_max.tcp1_gbps')).toBe(1);
    expect(f.has('ratio.weft_vs_manual.tcp8_gbps')).toBe(false);
    expect(f.get('summary.weft_vs_manual.wg_and_control_cpu_per_gbps')).toBeCloseTo(1.12);
    expect(compareReports(pa, pb, 5).filter((r) => r.regression).map((r) => r.figure)).toEqual(['ratio.weft_vs_manual.tcp1_gbps']);
    // Reports written before the summary existed still compare.
    expect(compareReports(a, pb, 5).find((r) => r.figure === 'ratio.weft_vs_manual.tcp1_gbps')).toMatchObject({ a: null, b: 0.9, regression: false });
    expect(renderComparison(compareReports(pa, pb))).toMatch(/summary\.weft_vs_manual_min\.tcp1_gbps\s+0\.9300\s+0\.8500\s+-8\.6% \(worse\)/);
    // The CPU cost ratio rose: worse, shown, but not a ratio regression.
    expect(renderComparison(compareReports(pa, pb))).toMatch(/summary\.weft_vs_manual\.wg_cpu_per_gbps\s+1\.020\s+1\.100\s+\+7\.8% \(worse\)\n/);
    expect(renderComparison(compareReports({ modes: [mode('weft', 1, { cpu_per_gbps: 2 })] }, { modes: [mode('weft', 1, { cpu_per_gbps: 1 })] }))).toMatch(/weft\.cpu_per_gbps\s+2\.000\s+1\.000\s+-50\.0% \(better\)/);
  });
  it('rejects a bad threshold', () => {
    expect(() => compareReports(a, a, -1)).toThrow(/0\.\.100/);
  });
});

describe('control plane and helpers', () => {
  it('quick drops 10,000-node gossip; minimal is small; none is empty', () => {
    expect(controlJobs('full').map((j) => j.key)).toEqual(['gossip_100', 'gossip_1000', 'gossip_10000', 'reconcile_1000', 'cni_add', 'dns']);
    expect(controlJobs('quick').map((j) => j.key)).not.toContain('gossip_10000');
    expect(controlJobs('minimal')).toHaveLength(2);
    expect(controlJobs('none')).toEqual([]);
  });
  it('takes the last JSON object line of a script output', () => {
    expect(lastJsonObject('note\n{"a":1}\n{"b":2}\ntrailer\n')).toEqual({ b: 2 });
    expect(lastJsonObject('[1]\n{broken\n')).toBeUndefined();
  });
  it('synthetic peers get distinct /24 blocks inside 10.100.0.0/13 with the mesh IP inside', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2048; i++) {
      const b = syntheticBlock(i);
      expect(seen.has(b.podCIDR)).toBe(false);
      seen.add(b.podCIDR);
      const [, second, third] = /^10\.(\d+)\.(\d+)\.0\/24$/.exec(b.podCIDR)!.map(Number);
      // Clear of the lab's node blocks (10.244.0.0/16), inside SYNTHETIC_CLUSTER_CIDR (10.0.0.0/8).
      expect(second).toBeGreaterThanOrEqual(100);
      expect(second).toBeLessThan(108);
      expect(third).toBeLessThanOrEqual(255);
      expect(b.meshIP).toBe(`10.${second}.${third}.1`);
    }
    expect(() => syntheticBlock(2048)).toThrow(RangeError);
    expect(syntheticNodeInfo(3, 'k', 5)).toMatchObject({ format: 1, name: 'rss-3', keepalive: 0, endpoints: ['192.0.2.4:51820'] });
  });
  it('reads VmRSS/VmHWM', () => {
    expect(parseVmStatus('Name:\tnode\nVmHWM:\t  81920 kB\nVmRSS:\t   61440 kB\n')).toEqual({ rss_mb: 60, hwm_mb: 80 });
    expect(() => parseVmStatus('Name: x\n')).toThrow(/VmRSS|VmHWM/);
    expect(parseVmStatus('VmHWM:\t 2048 kB\nVmRSS:\t 1024 kB\nRssAnon:\t 512 kB\nRssFile:\t 512 kB\n')).toEqual({ rss_mb: 1, hwm_mb: 2, anon_mb: 0.5, file_mb: 0.5 });
    // utime 250 + stime 50 ticks; the command name holds a space and a parenthesis.
    expect(parseProcCpuSeconds('4242 (node a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3')).toBe(3);
    expect(() => parseProcCpuSeconds('1 (x) S')).toThrow(/utime/);
  });
  it('sums the resident pages of the node binary mappings in smaps', () => {
    const smaps = [
      '00400000-00b3e000 r--p 00000000 08:01 123 /opt/node/bin/node',
      'Size:              11512 kB',
      'Rss:                1024 kB',
      '00f42000-0372f000 r-xp 00b42000 08:01 123 /opt/node/bin/node',
      'Rss:                2048 kB',
      '7f0000000000-7f0000100000 rw-p 00000000 00:00 0 ',
      'Rss:                4096 kB',
      '7f0000200000-7f0000300000 r-xp 00000000 08:01 9 /usr/lib/libc.so.6',
      'Rss:                 512 kB',
      '7f0000400000-7f0000500000 r--p 00000000 08:01 9 /opt/node/bin/node-other',
      'Rss:                 512 kB',
    ].join('\n');
    expect(smapsBinaryMb(smaps, '/opt/node/bin/node')).toBe(3);
    expect(smapsBinaryMb(smaps, '/nonexistent')).toBe(0);
  });
  it('timestamps are directory names', () => {
    expect(timestampDir(new Date('2026-11-23T13:05:09.123Z'))).toBe('2026-11-23T13-05-09Z');
  });
});
