/**
 * `npm run bench:cni -- --json`: CNI ADD latency as a container runtime sees it, including process
 * start of the packaged plugin (launcher + bundled runtime, built into a temp dir), against the
 * real agent-side handler and API server, with real network namespaces (`wcni-bench-*`, removed at
 * the end). Prints `{"adds","p50_ms","p99_ms"}`. Targets: p50 <= 100 ms, p99 <= 250 ms. Needs root.
 *
 * Flags: --adds N (default 100, at most 250: one /24 block), --json.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { ApiServer } from '../src/api/server.ts';
import { createCniHandler } from '../src/cni/handler.ts';
import { createIprouteNetnsOps } from '../src/cni/netns.ts';
import { PodIpam } from '../src/ipam/pods.ts';

const ROOT = resolve(import.meta.dirname, '..');
const PREFIX = 'wcni-bench';
const NODE_NS = `${PREFIX}-node`;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

function runOnce(cmd: string, env: Record<string, string>, stdin: string, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr, ms: performance.now() - t0 }));
    child.stdin.end(stdin);
  });
}

const netns = (args: string[]) => execFileSync('ip', ['netns', ...args], { stdio: 'pipe' });

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean', default: false }, adds: { type: 'string', default: '100' } } });
  const adds = Number(values.adds);
  if (!Number.isInteger(adds) || adds < 1 || adds > 250) throw new Error('--adds must be an integer in 1..250');
  if (process.getuid?.() !== 0) throw new Error('bench:cni needs root (it creates network namespaces)');

  const dir = await mkdtemp(join(tmpdir(), `${PREFIX}-`));
  const created: string[] = [];
  let api: ApiServer | undefined;
  const cleanup = async () => {
    await api?.close().catch(() => {});
    for (const n of created.reverse()) {
      try {
        netns(['del', n]);
      } catch {
        /* already gone */
      }
    }
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // Package exactly as deployed: launcher + weft-runtime/{node,weft-cni.mjs}.
    execFileSync(process.execPath, [join(ROOT, 'deploy/build.ts'), '--outdir', join(dir, 'dist')], { stdio: 'pipe' });
    const bin = join(dir, 'cni-bin');
    await mkdir(join(bin, 'weft-runtime'), { recursive: true });
    await copyFile(join(dir, 'dist', 'weft-cni'), join(bin, 'weft-cni'));
    await chmod(join(bin, 'weft-cni'), 0o755);
    await copyFile(join(dir, 'dist', 'weft-cni.mjs'), join(bin, 'weft-runtime', 'weft-cni.mjs'));
    await copyFile(process.execPath, join(bin, 'weft-runtime', 'node'));
    await chmod(join(bin, 'weft-runtime', 'node'), 0o755);

    try {
      netns(['del', NODE_NS]);
    } catch {
      /* not left over */
    }
    netns(['add', NODE_NS]);
    created.push(NODE_NS);

    const logger = pino({ level: 'silent' });
    const ipam = await PodIpam.open({ stateDir: join(dir, 'state'), blocks: ['10.244.200.0/24'], logger });
    const handler = createCniHandler({ ipam, netns: createIprouteNetnsOps({ hostNetns: `/var/run/netns/${NODE_NS}` }), logger, stateDir: join(dir, 'state') });
    await handler.ensureGateway();
    const agentMs: number[] = [];
    api = new ApiServer({ logger, onRequest: (_m, path, _s, seconds) => path === '/v1/cni/add' && agentMs.push(seconds * 1000) });
    for (const r of handler.routes()) api.route(r.method, r.path, r.handler);
    const sock = join(dir, 'weft.sock');
    await api.listenUnix(sock);

    const conf = JSON.stringify({ cniVersion: '1.1.0', name: 'weft', type: 'weft-cni', socket: sock, stateDir: join(dir, 'state') });
    const times: number[] = [];
    // One warm-up ADD (page cache for the runtime binary), not counted.
    for (let i = 0; i <= adds; i++) {
      const pod = `${PREFIX}-p${i}`;
      try {
        netns(['del', pod]);
      } catch {
        /* not left over */
      }
      netns(['add', pod]);
      created.push(pod);
      const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: `bench-${i}`, CNI_NETNS: `/var/run/netns/${pod}`, CNI_IFNAME: 'eth0', CNI_PATH: bin, CNI_ARGS: `K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p${i}` };
      const r = await runOnce(join(bin, 'weft-cni'), env, conf);
      if (r.code !== 0) throw new Error(`ADD ${i} failed (exit ${r.code}): ${r.stdout.trim()} ${r.stderr.trim()}`);
      if (i > 0) times.push(r.ms);
    }
    // Reference under the same host load: start-up of the bare runtime (`node -e 0`), the floor
    // under any Node-based plugin. Printed in the human summary only.
    const bare: number[] = [];
    for (let i = 0; i < 20; i++) bare.push((await runOnce(join(bin, 'weft-runtime', 'node'), { PATH: '/usr/bin:/bin' }, '', ['-e', '0'])).ms);
    bare.sort((a, b) => a - b);
    times.sort((a, b) => a - b);
    agentMs.shift(); // the warm-up
    agentMs.sort((a, b) => a - b);
    const out = { adds, p50_ms: Number(percentile(times, 50).toFixed(1)), p99_ms: Number(percentile(times, 99).toFixed(1)) };
    if (values.json) console.log(JSON.stringify(out));
    else console.log(`CNI ADD latency over ${adds} ADDs (packaged plugin, real namespaces): p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms, min ${times[0]!.toFixed(1)} ms, max ${times.at(-1)!.toFixed(1)} ms; agent-side handling p50 ${percentile(agentMs, 50).toFixed(1)} ms, p99 ${percentile(agentMs, 99).toFixed(1)} ms; bare \`node -e 0\` p50 ${percentile(bare, 50).toFixed(1)} ms (host load ${loadavg()[0]!.toFixed(1)})`);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main().catch((err: unknown) => {
  console.error(`bench:cni: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
