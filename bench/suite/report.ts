/**
 * The benchmark report: the JSON object (`{"backend","modes","control_plane",...}`), the Markdown
 * table (every mode's throughput as a ratio to plain routing), and the SVG bar chart drawn with
 * Vega-Lite (compiled to Vega, rendered headless with `view.toSVG()`). Rendering is pure apart
 * from {@link writeReport}, which writes the three files.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ModeResult, WeftVsManual } from './datapath.ts';

/** The whole report as `--json` prints it and `report.json` holds it. */
export interface BenchReport {
  readonly version: 1;
  /** WireGuard backend of the encrypted modes: `userspace` = wireguard-go. */
  readonly backend: 'kernel' | 'userspace';
  readonly backend_note: string;
  readonly started_at: string;
  readonly quick: boolean;
  readonly repeat: number;
  readonly host: { readonly cpus: number; readonly loadavg_1m_start: number; readonly loadavg_1m_end: number; readonly kernel: string };
  readonly modes: readonly ModeResult[];
  readonly control_plane: Record<string, unknown>;
  /**
   * Figures derived across modes. `weft_vs_manual`: weft over hand-configured WireGuard from paired,
   * interleaved runs (median, min, max of the per-pair ratios); null when the two did not both run.
   * Absent in reports written before it existed.
   */
  readonly summary?: { readonly weft_vs_manual: WeftVsManual | null };
}

/** Throughput figures whose ratio to plain routing the table shows. */
export const RATIO_FIGURES = ['tcp1_gbps', 'tcp8_gbps', 'udp_gbps'] as const;

/** `mode[figure] / plain[figure]`, or null when either is missing or plain is 0. Pure. */
export function ratioToPlain(modes: readonly ModeResult[], mode: string, figure: string): number | null {
  const plain = modes.find((m) => m.mode === 'plain')?.[figure];
  const v = modes.find((m) => m.mode === mode)?.[figure];
  return typeof plain === 'number' && typeof v === 'number' && plain > 0 ? v / plain : null;
}

/** weft's throughput over hand-configured WireGuard on the same backend (target >= 0.97); null when either is missing. */
export function weftOverManual(modes: readonly ModeResult[], figure: string): number | null {
  const w = modes.find((m) => m.mode === 'weft')?.[figure];
  const m = modes.find((x) => x.mode === 'wireguard-manual')?.[figure];
  return typeof w === 'number' && typeof m === 'number' && m > 0 ? w / m : null;
}

const f = (x: unknown, digits = 2): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const range = (m: ModeResult, k: string, digits = 2): string => `${f(m[k], digits)} (${f(m[`${k}_min`], digits)}-${f(m[`${k}_max`], digits)})`;

/** The Markdown report: datapath table with ratios to plain, weft vs manual WireGuard, control plane. Pure. */
export function renderMarkdown(r: BenchReport): string {
  const lines: string[] = [];
  lines.push(`# weft bench ${r.started_at}`, '');
  lines.push(`Backend of the encrypted modes: **${r.backend}** (${r.backend_note}). Repeats: ${r.repeat}${r.quick ? ' (quick)' : ''}. Host: ${r.host.cpus} CPUs, load ${r.host.loadavg_1m_start.toFixed(1)} -> ${r.host.loadavg_1m_end.toFixed(1)}, kernel ${r.host.kernel}. Medians, (min-max) over the repeats.`, '');
  lines.push('| mode | MTU | TCP 1 stream Gbit/s | ratio | TCP 8 streams Gbit/s | ratio | UDP Gbit/s | ratio | UDP loss | RR p50 us | RR p99 us | CPU s per Gbit |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const m of r.modes) {
    const ratio = (k: string): string => f(ratioToPlain(r.modes, m.mode, k), 3);
    lines.push(`| ${m.mode} | ${m.mtu || 'n/a'} | ${range(m, 'tcp1_gbps', 3)} | ${ratio('tcp1_gbps')} | ${range(m, 'tcp8_gbps', 3)} | ${ratio('tcp8_gbps')} | ${range(m, 'udp_gbps', 3)} | ${ratio('udp_gbps')} | ${f(typeof m.udp_loss === 'number' ? m.udp_loss * 100 : null, 1)}% | ${range(m, 'rr_p50_us', 0)} | ${range(m, 'rr_p99_us', 0)} | ${f(m.cpu_per_gbps, 3)} |`);
  }
  lines.push('');
  const wm = RATIO_FIGURES.map((k) => `${k} ${f(weftOverManual(r.modes, k), 3)}`).join(', ');
  lines.push(`weft / wireguard-manual (target >= 0.97), ratio of the medians: ${wm}`, '');
  const p = r.summary?.weft_vs_manual;
  if (p) {
    const pr = (k: (typeof RATIO_FIGURES)[number]): string => {
      const x = p[k];
      return x ? `${k} ${f(x.median, 3)} (${f(x.min, 3)}-${f(x.max, 3)}, ${x.n} pairs)` : `${k} n/a`;
    };
    lines.push(`weft / wireguard-manual, paired and interleaved (median (min-max) of the per-pair ratios; WireGuard MTU weft ${p.tunnel_mtu.weft}, manual ${p.tunnel_mtu.manual}): ${RATIO_FIGURES.map(pr).join(', ')}`, '');
    const c = p.wg_cpu_per_gbps;
    const cc = p.wg_and_control_cpu_per_gbps;
    const cr = (x: { median: number; min: number; max: number; n: number }): string => `${f(x.median, 3)} (${f(x.min, 3)}-${f(x.max, 3)}, ${x.n} pairs)`;
    if (c) lines.push(`CPU per Gbit, weft / manual per pair (a cost: lower is better): wireguard-go ${cr(c)}${cc ? `; with weft's agents added ${cr(cc)}` : ''}`, '');
  }
  const errs = r.modes.flatMap((m) => m.errors);
  if (errs.length > 0) lines.push('Errors:', '', ...errs.map((e) => `- ${e}`), '');
  lines.push('## Control plane', '', '| benchmark | result |', '|---|---|');
  for (const [k, v] of Object.entries(r.control_plane)) lines.push(`| ${k} | \`${JSON.stringify(v).replace(/\|/g, '\\|').slice(0, 400)}\` |`);
  lines.push('');
  return lines.join('\n');
}

/** The Vega-Lite spec of the chart: throughput per mode, grouped by run kind, with min-max error bars. Pure. */
export function chartSpec(r: BenchReport): TopLevelSpec {
  const kinds: Array<[string, string]> = [['tcp1_gbps', 'TCP 1 stream'], ['tcp8_gbps', 'TCP 8 streams'], ['udp_gbps', 'UDP']];
  const values = r.modes.flatMap((m) => kinds
    .filter(([k]) => typeof m[k] === 'number')
    .map(([k, label]) => ({ mode: m.mode, run: label, gbps: m[k] as number, min: (m[`${k}_min`] as number) ?? (m[k] as number), max: (m[`${k}_max`] as number) ?? (m[k] as number) })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `weft bench: pod-to-pod throughput (${r.backend} WireGuard)`, subtitle: `${r.started_at}, median of ${r.repeat}, min-max bars; load ${r.host.loadavg_1m_start.toFixed(1)}` },
    data: { values },
    width: 140,
    height: 260,
    facet: { column: { field: 'run', type: 'nominal', title: null, sort: kinds.map(([, l]) => l) } },
    spec: {
      layer: [
        { mark: 'bar', encoding: { x: { field: 'mode', type: 'nominal', sort: r.modes.map((m) => m.mode), title: null }, y: { field: 'gbps', type: 'quantitative', title: 'Gbit/s' }, color: { field: 'mode', type: 'nominal', legend: null } } },
        { mark: { type: 'rule' }, encoding: { x: { field: 'mode', type: 'nominal', sort: r.modes.map((m) => m.mode) }, y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } } },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  } as TopLevelSpec;
}

/** Renders the chart to an SVG document with Vega's headless renderer. */
export async function renderChart(r: BenchReport): Promise<string> {
  const spec = compile(chartSpec(r)).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes `report.json`, `report.md` and `throughput.svg` into `dir` (created). Returns the file paths. */
export async function writeReport(dir: string, r: BenchReport): Promise<{ json: string; markdown: string; svg: string }> {
  await mkdir(dir, { recursive: true });
  const paths = { json: join(dir, 'report.json'), markdown: join(dir, 'report.md'), svg: join(dir, 'throughput.svg') };
  await writeFile(paths.json, `${JSON.stringify(r, null, 2)}\n`);
  await writeFile(paths.markdown, renderMarkdown(r));
  await writeFile(paths.svg, await renderChart(r));
  return paths;
}
