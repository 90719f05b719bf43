/**
 * `weft bench compare A B`: the change of every figure from report A to report B, and whether a
 * ratio regressed by more than a threshold. Pure apart from {@link loadReport}.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RATIO_FIGURES, ratioToPlain, weftOverManual } from './report.ts';
import type { ModeResult } from './datapath.ts';

/** Figures where a larger value is better; for all others (loss, latency, CPU) smaller is better. */
const HIGHER_IS_BETTER = /(_gbps$|^ratio|per_s$|qps)/;
/** CPU per Gbit ends in `_gbps` but is a cost. */
const COST = /cpu_per_gbps$/;

/** One compared figure. `change` is (B - A) / A, null when A is 0 or either side is missing. */
export interface FigureChange {
  readonly figure: string;
  readonly a: number | null;
  readonly b: number | null;
  readonly change: number | null;
  /** True for ratio figures whose drop exceeds the threshold. */
  readonly regression: boolean;
}

/** A report file that cannot be read or is not a weft bench report. */
export class CompareError extends Error {
  override name = 'CompareError';
}

interface ReportLike {
  readonly modes?: readonly ModeResult[];
  readonly control_plane?: Record<string, unknown>;
  readonly summary?: { readonly weft_vs_manual?: Partial<Record<string, unknown>> | null };
}

/**
 * Flattens a report to `name -> number`: per-mode medians, ratios to plain, weft/manual (ratio of
 * the medians, `ratio.weft_to_manual.*`), the paired weft/manual ratios (`ratio.weft_vs_manual.*`
 * = median of the per-pair ratios, with `summary.weft_vs_manual_min|_max.*` beside it), numeric
 * control-plane leaves.
 */
export function flatten(r: ReportLike): Map<string, number> {
  const out = new Map<string, number>();
  const modes = r.modes ?? [];
  for (const m of modes) {
    for (const [k, v] of Object.entries(m)) {
      if (typeof v === 'number' && !k.endsWith('mtu') && k !== 'repeats' && !k.endsWith('_min') && !k.endsWith('_max')) out.set(`${m.mode}.${k}`, v);
    }
    if (m.mode !== 'plain') {
      for (const k of RATIO_FIGURES) {
        const x = ratioToPlain(modes, m.mode, k);
        if (x !== null) out.set(`ratio.${m.mode}_to_plain.${k}`, x);
      }
    }
  }
  for (const k of RATIO_FIGURES) {
    const x = weftOverManual(modes, k);
    if (x !== null) out.set(`ratio.weft_to_manual.${k}`, x);
    const p = r.summary?.weft_vs_manual?.[k] as { median?: unknown; min?: unknown; max?: unknown } | null | undefined;
    if (p && typeof p.median === 'number' && Number.isFinite(p.median)) {
      out.set(`ratio.weft_vs_manual.${k}`, p.median);
      for (const b of ['min', 'max'] as const) {
        const v = p[b];
        if (typeof v === 'number' && Number.isFinite(v)) out.set(`summary.weft_vs_manual_${b}.${k}`, v);
      }
    }
  }
  // The CPU cost ratios (lower is better): shown, never a ratio regression.
  for (const k of ['wg_cpu_per_gbps', 'wg_and_control_cpu_per_gbps']) {
    const c = r.summary?.weft_vs_manual?.[k] as { median?: unknown } | null | undefined;
    if (c && typeof c.median === 'number' && Number.isFinite(c.median)) out.set(`summary.weft_vs_manual.${k}`, c.median);
  }
  const walk = (prefix: string, v: unknown, depth: number): void => {
    if (depth > 4) return;
    if (typeof v === 'number' && Number.isFinite(v)) out.set(prefix, v);
    else if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k, x] of Object.entries(v)) walk(`${prefix}.${k}`, x, depth + 1);
  };
  walk('control_plane', r.control_plane ?? {}, 0);
  return out;
}

/**
 * Every figure present in A or B with its relative change. A ratio figure (`ratio.*`) is a
 * regression when it dropped by more than `failPct` percent; with `failPct` undefined nothing is.
 */
export function compareReports(a: ReportLike, b: ReportLike, failPct?: number): FigureChange[] {
  if (failPct !== undefined && !(failPct >= 0 && failPct <= 100)) throw new CompareError(`compare: --fail-on-regression must be 0..100, got ${failPct}`);
  const fa = flatten(a);
  const fb = flatten(b);
  const names = [...new Set([...fa.keys(), ...fb.keys()])].sort();
  return names.map((figure) => {
    const x = fa.get(figure) ?? null;
    const y = fb.get(figure) ?? null;
    const change = x !== null && y !== null && x !== 0 ? (y - x) / Math.abs(x) : null;
    const regression = failPct !== undefined && figure.startsWith('ratio.') && change !== null && change < -failPct / 100;
    return { figure, a: x, b: y, change, regression };
  });
}

/** The comparison as aligned text lines, a `!` marking regressions and `+`/`-` telling better or worse. */
export function renderComparison(rows: readonly FigureChange[]): string {
  const w = Math.max(6, ...rows.map((r) => r.figure.length));
  const n = (x: number | null): string => (x === null ? 'n/a' : Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(4));
  const lines = [`${'figure'.padEnd(w)}  ${'A'.padStart(10)}  ${'B'.padStart(10)}  change`];
  for (const r of rows) {
    const better = r.change === null || r.change === 0 ? '' : (r.change > 0) === (HIGHER_IS_BETTER.test(r.figure.split('.').at(-1)!) && !COST.test(r.figure)) || (r.figure.startsWith('ratio.') && r.change > 0) ? ' (better)' : ' (worse)';
    const ch = r.change === null ? 'n/a' : `${r.change >= 0 ? '+' : ''}${(r.change * 100).toFixed(1)}%${better}`;
    lines.push(`${r.figure.padEnd(w)}  ${n(r.a).padStart(10)}  ${n(r.b).padStart(10)}  ${ch}${r.regression ? '  ! REGRESSION' : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Reads a report: a `report.json` file or a results directory holding one. */
export async function loadReport(path: string): Promise<ReportLike> {
  let file = path;
  try {
    if ((await stat(path)).isDirectory()) file = join(path, 'report.json');
    const j = JSON.parse(await readFile(file, 'utf8')) as unknown;
    if (!j || typeof j !== 'object' || !Array.isArray((j as ReportLike).modes)) throw new Error('no "modes" array');
    return j as ReportLike;
  } catch (err) {
    throw new CompareError(`compare: ${file}: ${(err as Error).message}`, { cause: err });
  }
}
