/**
 * The whole benchmark: datapath modes, then the control plane, then the report files in
 * `bench/results/<timestamp>/`. Called by `weft bench` (src/cli/bench.ts).
 */
import { cpus, loadavg, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureAgentRss } from './agent-rss.ts';
import { runControlPlane, type ControlPlaneSet } from './control.ts';
import { MODES, chooseBackend, runDatapath, type Mode } from './datapath.ts';
import { writeReport, type BenchReport } from './report.ts';

/** Default output root: `bench/results` of this checkout (gitignored). */
export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

/** Options of {@link runBench}; see `weft bench --help` for each. */
export interface BenchOptions {
  readonly quick: boolean;
  readonly repeat: number;
  readonly seconds: number;
  readonly modes: readonly Mode[];
  readonly controlPlane: ControlPlaneSet;
  /** Measure a real agent's RSS with this many synthetic peers (0 = skip). */
  readonly rssPeers: number;
  readonly udpRate: string;
  readonly backend: 'auto' | 'kernel' | 'userspace';
  readonly outDir?: string;
  /** Namespace name prefix base of the datapath modes (default `wbn`), so parallel runs can be told apart. */
  readonly prefixBase?: string;
  readonly progress?: (msg: string) => void;
}

/** The defaults: `--quick` shortens every run so the whole benchmark stays under 2 minutes. */
export function defaultOptions(quick: boolean): BenchOptions {
  return { quick, repeat: quick ? 1 : 3, seconds: quick ? 2 : 10, modes: MODES, controlPlane: quick ? 'quick' : 'full', rssPeers: quick ? 100 : 1000, udpRate: '1G', backend: 'auto' };
}

/** A UTC timestamp usable as a directory name: 2026-11-23T13-05-00Z. Pure. */
export function timestampDir(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

/** Runs the benchmark and writes the report; resolves the report and the directory it went to. */
export async function runBench(opts: BenchOptions): Promise<{ report: BenchReport; dir: string }> {
  const progress = opts.progress ?? (() => {});
  const started = new Date();
  const load0 = loadavg()[0]!;
  const backend = opts.backend === 'auto' ? await chooseBackend() : opts.backend;
  const { modes, weftVsManual } = await runDatapath({
    modes: opts.modes, repeat: opts.repeat, seconds: opts.seconds, rrRounds: opts.quick ? 500 : 5000, udpRate: opts.udpRate, backend, progress,
    ...(opts.prefixBase ? { prefixBase: opts.prefixBase } : {}),
  });
  const control_plane = await runControlPlane(opts.controlPlane, progress);
  if (opts.rssPeers > 0) {
    progress(`bench: agent RSS with ${opts.rssPeers} peers`);
    control_plane.agent_rss = await measureAgentRss({ peers: opts.rssPeers, backend, progress }).catch((err: Error) => ({ error: err.message }));
  }
  const report: BenchReport = {
    version: 1,
    backend,
    backend_note: backend === 'userspace' ? 'wireguard-go: this host has no WireGuard kernel module; weft and wireguard-manual both use it' : 'kernel WireGuard module',
    started_at: started.toISOString(),
    quick: opts.quick,
    repeat: opts.repeat,
    host: { cpus: cpus().length, loadavg_1m_start: load0, loadavg_1m_end: loadavg()[0]!, kernel: release() },
    modes,
    control_plane,
    summary: { weft_vs_manual: weftVsManual },
  };
  const dir = opts.outDir ?? join(RESULTS_DIR, timestampDir(started));
  await writeReport(dir, report);
  return { report, dir };
}
