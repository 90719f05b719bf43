/**
 * `weft bench [--quick] [--json] [--repeat N] ...`: the datapath and control-plane benchmark of
 * issue 8 (bench/suite/), report files in bench/results/<timestamp>/; and
 * `weft bench compare A B [--fail-on-regression PCT]`. Wiring and option validation only.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { MODES, type Mode } from '../../bench/suite/datapath.ts';
import type { ControlPlaneSet } from '../../bench/suite/control.ts';
// run.ts and compare.ts pull in vega/vega-lite (report.ts): loaded on demand in the actions, so
// every other command (above all `weft agent`) neither parses nor keeps them (the bundle splits
// dynamic imports into chunks; see deploy/build.ts).

function intIn(lo: number, hi: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new InvalidArgumentError(`must be an integer in ${lo}..${hi}`);
    return n;
  };
}

function modeList(v: string): Mode[] {
  const list = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of list) if (!(MODES as readonly string[]).includes(m)) throw new InvalidArgumentError(`unknown mode ${m} (modes: ${MODES.join(', ')})`);
  if (list.length === 0) throw new InvalidArgumentError('no mode given');
  return list as Mode[];
}

function choice<T extends string>(allowed: readonly T[]): (v: string) => T {
  return (v) => {
    if (!(allowed as readonly string[]).includes(v)) throw new InvalidArgumentError(`must be one of ${allowed.join(', ')}`);
    return v as T;
  };
}

/** Registers `bench` and `bench compare` on `program`. */
export function registerBenchCommand(program: Command): void {
  const bench = program
    .command('bench')
    .description('benchmark pod-to-pod traffic (plain, vxlan, weft, wireguard-manual) and the control plane; writes bench/results/<timestamp>/')
    .option('--quick', 'short runs (whole benchmark under 2 minutes, for CI): 1 repeat, 2 s per run, smaller control-plane set', false)
    .option('--json', 'print the report as one JSON object on stdout', false)
    .option('--repeat <n>', 'repeats of every measurement (default 3, quick 1)', intIn(1, 50))
    .option('--seconds <s>', 'iperf3 seconds per run (default 10, quick 2)', intIn(1, 600))
    .option('--modes <list>', `comma-separated datapath modes (default all: ${MODES.join(',')})`, modeList)
    .option('--control-plane <set>', 'control-plane benchmarks: full, quick, minimal (gossip 100 + reconcile 100 on the fake backend), none', choice(['full', 'quick', 'minimal', 'none'] as const))
    .option('--rss-peers <n>', 'synthetic peers for the agent RSS measurement (0 = skip; default 1000)', intIn(0, 2048))
    .option('--udp-rate <rate>', 'iperf3 UDP offered rate (-b), e.g. 1G or 500M', '1G')
    .option('--backend <b>', 'WireGuard backend of the encrypted modes: auto, kernel, userspace', choice(['auto', 'kernel', 'userspace'] as const), 'auto')
    .option('--out <dir>', 'report directory (default bench/results/<timestamp>)')
    .action(async (o: { quick: boolean; json: boolean; repeat?: number; seconds?: number; modes?: Mode[]; controlPlane?: ControlPlaneSet; rssPeers?: number; udpRate: string; backend: 'auto' | 'kernel' | 'userspace'; out?: string }) => {
      if (!/^\d+(\.\d+)?[KMG]?$/.test(o.udpRate)) throw new InvalidArgumentError('--udp-rate: a number with an optional K, M or G suffix');
      const { defaultOptions, runBench } = await import('../../bench/suite/run.ts');
      const d = defaultOptions(o.quick);
      const { report, dir } = await runBench({
        ...d,
        repeat: o.repeat ?? d.repeat,
        seconds: o.seconds ?? d.seconds,
        modes: o.modes ?? d.modes,
        controlPlane: o.controlPlane ?? d.controlPlane,
        rssPeers: o.rssPeers ?? d.rssPeers,
        udpRate: o.udpRate,
        backend: o.backend,
        outDir: o.out,
        progress: (m) => process.stderr.write(`${m}\n`),
      });
      if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else process.stdout.write(await readFile(join(dir, 'report.md'), 'utf8'));
      process.stderr.write(`bench: report in ${dir}/ (report.json, report.md, throughput.svg)\n`);
    });

  bench
    .command('compare <a> <b>')
    .description('change of every figure from report A to report B (report.json files or result directories)')
    .option('--fail-on-regression <pct>', 'exit 1 when a ratio (to plain, weft/manual) drops by more than PCT percent', (v) => {
      const n = Number(v);
      if (!(n >= 0 && n <= 100)) throw new InvalidArgumentError('must be a number in 0..100');
      return n;
    })
    .action(async (a: string, b: string, o: { failOnRegression?: number }) => {
      const { compareReports, loadReport, renderComparison } = await import('../../bench/suite/compare.ts');
      const rows = compareReports(await loadReport(a), await loadReport(b), o.failOnRegression);
      process.stdout.write(renderComparison(rows));
      const bad = rows.filter((r) => r.regression);
      if (bad.length > 0) {
        process.stderr.write(`bench compare: ${bad.length} ratio(s) dropped by more than ${o.failOnRegression}%: ${bad.map((r) => r.figure).join(', ')}\n`);
        process.exitCode = 1;
      }
    });
}
