/**
 * The control-plane half of the report: runs the per-area benchmark scripts (`bench/*.ts`, the
 * `bench:*` npm scripts) with `--json` as child processes and collects their objects. A failed or
 * timed-out script is reported as `{ "error": ... }`; it does not stop the others.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');

/** How much of the control plane to run: full (the issue's set), quick (CI), minimal (the lab test), none. */
export type ControlPlaneSet = 'full' | 'quick' | 'minimal' | 'none';

/** One benchmark script run: report key, script file in `bench/`, its arguments, a time limit. */
export interface ControlJob {
  readonly key: string;
  readonly script: string;
  readonly args: readonly string[];
  readonly timeoutMs: number;
}

/** The jobs of a set. Pure. The agent RSS measurement is separate (see agent-rss.ts). */
export function controlJobs(set: ControlPlaneSet): ControlJob[] {
  if (set === 'none') return [];
  if (set === 'minimal') {
    return [
      { key: 'gossip_100', script: 'gossip.ts', args: ['--nodes', '100'], timeoutMs: 60_000 },
      { key: 'reconcile_100_fake', script: 'reconcile.ts', args: ['--peers', '100', '--backend', 'fake', '--runs', '3'], timeoutMs: 60_000 },
    ];
  }
  const quick = set === 'quick';
  const gossip = (quick ? [100, 1000] : [100, 1000, 10_000]).map((n) => ({ key: `gossip_${n}`, script: 'gossip.ts', args: ['--nodes', String(n)], timeoutMs: n >= 10_000 ? 900_000 : 300_000 }));
  return [
    ...gossip,
    { key: 'reconcile_1000', script: 'reconcile.ts', args: ['--peers', '1000', '--runs', quick ? '3' : '7'], timeoutMs: 300_000 },
    { key: 'cni_add', script: 'cni.ts', args: ['--adds', quick ? '20' : '100'], timeoutMs: 300_000 },
    { key: 'dns', script: 'dns.ts', args: quick ? ['--seconds', '2', '--rounds', '1'] : [], timeoutMs: 600_000 },
  ];
}

/** The last line of `stdout` that parses as a JSON object, or undefined. Pure. */
export function lastJsonObject(stdout: string): Record<string, unknown> | undefined {
  const lines = stdout.trim().split('\n').reverse();
  for (const l of lines) {
    const t = l.trim();
    if (!t.startsWith('{')) continue;
    try {
      const j = JSON.parse(t) as unknown;
      if (j && typeof j === 'object' && !Array.isArray(j)) return j as Record<string, unknown>;
    } catch {
      /* not this line */
    }
  }
  return undefined;
}

/** Runs one job with `node` (the same Node 24); resolves its JSON object, or `{ error }` with stderr's tail. */
export function runJob(job: ControlJob, nodeBin = process.execPath): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(nodeBin, [join(BENCH_DIR, job.script), '--json', ...job.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { if (out.length < 1_000_000) out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000); });
    // SIGTERM lets the scripts run their own clean-up (namespaces, servers) before exiting.
    const timer = setTimeout(() => child.kill('SIGTERM'), job.timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const wall_ms = Math.round(performance.now() - t0);
      const j = lastJsonObject(out);
      if (code === 0 && j) resolve({ ...j, wall_ms_total: wall_ms });
      else resolve({ error: `${job.script} ${job.args.join(' ')}: ${signal ? `killed by ${signal} after ${job.timeoutMs} ms` : `exit ${code}`}${j ? '' : ', no JSON'}: ${err.trim().split('\n').slice(-3).join(' | ').slice(0, 500)}` });
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: `${job.script}: ${e.message}` });
    });
  });
}

/** Runs the jobs of `set` one after another (they measure time; running them together would skew each other). */
export async function runControlPlane(set: ControlPlaneSet, progress: (msg: string) => void = () => {}, nodeBin?: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const job of controlJobs(set)) {
    progress(`bench: control plane ${job.key} (${job.script} ${job.args.join(' ')})`);
    out[job.key] = await runJob(job, nodeBin);
  }
  return out;
}
