/**
 * Datapath reconcile benchmark: `npm run bench:reconcile -- --peers N [--json] [--backend auto|userspace|fake] [--runs R]`.
 *
 * Prints `{"peers","backend","first_apply_ms","noop_ms","one_change_ms","writes_one_change", ...}`.
 * - first_apply_ms: the first reconcile, from no interface to N peers, address, MTU and routes
 *   (for userspace this includes starting wireguard-go).
 * - noop_ms: median of R resyncs of the same desired state: a full device read and diff
 *   (noop_writes, their total writes, must be 0).
 * - one_change_ms: median of R applies that each change one peer's endpoint, diffed against the
 *   reconciler's trusted model of the device (writes_one_change: writes of one of them; 1 = one peer).
 * - one_change_with_read_ms: the same change by a reconciler with trustMs 0 (reads the device first).
 *
 * Backend: userspace (wireguard-go in a throwaway network + mount namespace, real rtnetlink) when
 * running as root with wireguard-go, ip and unshare available, else the in-memory fake. The
 * benchmark re-executes itself inside the namespace and removes it afterwards.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import type { NodeInfo, RemoteNode } from '../src/model.ts';
import { planDatapath } from '../src/plan/datapath.ts';
import { DatapathReconciler } from '../src/datapath/reconciler.ts';
import type { RtNetlink } from '../src/datapath/rtnetlink.ts';
import { FakeRtNetlink, linkFakes } from '../src/datapath/rtnetlink-fake.ts';
import type { WireGuardBackend } from '../src/wireguard/backend.ts';
import { FakeWireGuardBackend } from '../src/wireguard/fake.ts';
import { generateKeyPair } from '../src/wireguard/keys.ts';

const { values } = parseArgs({
  options: {
    peers: { type: 'string', default: '1000' },
    runs: { type: 'string', default: '7' },
    backend: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
    inner: { type: 'boolean', default: false },
    'state-dir': { type: 'string' },
  },
});
const peers = Number(values.peers);
const runs = Number(values.runs);
if (!Number.isInteger(peers) || peers < 1 || peers > 60_000) throw new Error('bench: --peers must be an integer in 1..60000');
if (!Number.isInteger(runs) || runs < 1 || runs > 1000) throw new Error('bench: --runs must be an integer in 1..1000');
if (!['auto', 'userspace', 'fake'].includes(values.backend!)) throw new Error('bench: --backend must be auto, userspace or fake');

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Deterministic key material: one keypair per peer from a counter (benchmark only). */
function keys(i: number): { privateKey: string; publicKey: string } {
  return generateKeyPair((n) => {
    const b = new Uint8Array(n);
    for (let j = 0; j < n; j++) b[j] = (i * 7919 + j * 31 + 17) & 0xff;
    b[0] = i & 0xff;
    b[1] = (i >> 8) & 0xff;
    b[2] = (i >> 16) & 0xff;
    return b;
  });
}

function node(i: number): NodeInfo {
  const a = (i >> 8) & 0xff;
  const b = i & 0xff;
  return {
    format: 1,
    name: `node-${i}`,
    wgPublicKey: keys(i).publicKey,
    listenPort: 51820,
    endpoints: [`198.18.${a}.${b}:51820`],
    meshIP: `10.${a + 1}.${b}.1`,
    podCIDRs: [`10.${a + 1}.${b}.0/24`],
    claimedAt: i,
    keepalive: 0,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number) => Math.round(x * 100) / 100;

async function measure(wg: WireGuardBackend, rt: RtNetlink): Promise<Record<string, unknown>> {
  const self = node(0);
  const selfKeys = keys(0);
  const remotes: RemoteNode[] = Array.from({ length: peers }, (_, i) => ({ info: node(i + 1), pods: [], state: 'alive' }));
  const config = { ifname: 'weftb0', listenPort: 51820, clusterCIDRs: ['10.0.0.0/8'], mtu: 'auto' as const, underlayMTU: 1500, underlayFamilies: [4 as const] };
  const tp = performance.now();
  const desired = planDatapath(self, remotes, config);
  const planMs = performance.now() - tp;
  const mk = (trustMs: number) => new DatapathReconciler({ wg, rt, logger: pino({ level: 'silent' }), privateKey: selfKeys.privateKey, resyncMs: 60_000, trustMs });
  const rec = mk(60_000);

  const first = await rec.apply(desired);
  if (!first.ok) throw new Error(`bench: first apply failed: ${first.errors.map((e) => e.message).join('; ')}`);
  const check = (res: { ok: boolean; errors: readonly { message: string }[] }, what: string) => {
    if (!res.ok) throw new Error(`bench: ${what} failed: ${res.errors.map((e) => e.message).join('; ')}`);
  };
  // No-op resync: reads the whole device, diffs, writes nothing.
  const noop: number[] = [];
  let noopWrites = 0;
  let noopStages: Readonly<Record<string, number>> = {};
  for (let r = 0; r < runs; r++) {
    const res = (await rec.resync())!;
    check(res, 'no-op resync');
    noop.push(res.durationMs);
    noopWrites += res.writes;
    noopStages = res.stageMs ?? {};
  }
  // One-peer change through apply (diffed against the trusted model of the device).
  const changeOf = (r: number) => {
    const k = (r * 7919) % peers;
    return { ...desired, peers: desired.peers.map((p, i) => (i === k ? { ...p, endpoint: `198.19.${r & 0xff}.1:${1000 + r}` } : p)) };
  };
  const change: number[] = [];
  let writesOneChange = -1;
  for (let r = 0; r < runs; r++) {
    const res = await rec.apply(changeOf(r));
    check(res, 'one-peer change');
    change.push(res.durationMs);
    if (writesOneChange < 0) writesOneChange = res.writes;
  }
  // The same change with a real device read first (what a change costs without the model).
  const recRead = mk(0);
  check(await recRead.apply(desired), 'adopting reconciler');
  const changeRead: number[] = [];
  let writesChangeRead = -1;
  for (let r = 0; r < runs; r++) {
    const res = await recRead.apply(changeOf(r + runs));
    check(res, 'one-peer change with read');
    changeRead.push(res.durationMs);
    if (writesChangeRead < 0) writesChangeRead = res.writes;
  }
  await recRead.stop();
  await rec.uninstall('weftb0');
  return {
    peers,
    backend: wg.kind,
    first_apply_ms: round(first.durationMs),
    noop_ms: round(median(noop)),
    one_change_ms: round(median(change)),
    writes_one_change: writesOneChange,
    noop_writes: noopWrites,
    one_change_with_read_ms: round(median(changeRead)),
    writes_one_change_with_read: writesChangeRead,
    first_writes: first.writes,
    plan_ms: round(planMs),
    noop_stage_ms: Object.fromEntries(Object.entries(noopStages).map(([k, v]) => [k, round(v)])),
    runs,
  };
}

async function inner(): Promise<void> {
  const { UserspaceWireGuardBackend } = await import('../src/wireguard/userspace.ts');
  const { LinuxRtNetlink } = await import('../src/datapath/rtnetlink-linux.ts');
  const wg = new UserspaceWireGuardBackend({ logger: pino({ level: 'silent' }), stateDir: values['state-dir']! });
  const rt = new LinuxRtNetlink();
  try {
    process.stdout.write(`${JSON.stringify(await measure(wg, rt))}\n`);
  } finally {
    await wg.close();
    await rt.close();
  }
}

/** Runs the measurement in a throwaway namespace; removes the namespace, its links and any wireguard-go it started. */
function outerUserspace(): Record<string, unknown> {
  const ns = `wdp-b${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), `${ns}-`));
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const script = 'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0755,size=4m tmpfs /run/wireguard && exec "$0" "$@"';
    const out = execFileSync(
      'ip',
      ['netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, process.execPath, new URL(import.meta.url).pathname, '--inner', '--peers', String(peers), '--runs', String(runs), '--state-dir', stateDir],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20, timeout: 600_000 },
    );
    return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
  } finally {
    try {
      execFileSync('ip', ['-n', ns, 'link', 'del', 'weftb0'], { stdio: 'ignore' });
    } catch {
      // already removed by uninstall
    }
    for (const f of existsSync(stateDir) ? readdirSync(stateDir).filter((x) => x.endsWith('.pid')) : []) {
      try {
        const { pid } = JSON.parse(readFileSync(join(stateDir, f), 'utf8')) as { pid: number };
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('wireguard-go')) process.kill(pid, 'SIGKILL');
      } catch {
        // exited
      }
    }
    execFileSync('ip', ['netns', 'del', ns]);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (values.inner) return inner();
  const canUserspace = process.getuid?.() === 0 && has('wireguard-go') && has('ip') && has('unshare') && existsSync('/dev/net/tun');
  if (values.backend === 'userspace' && !canUserspace) throw new Error('bench: userspace backend needs root, wireguard-go, ip, unshare and /dev/net/tun');
  let result: Record<string, unknown>;
  if (values.backend !== 'fake' && canUserspace) {
    result = outerUserspace();
  } else {
    const fake = new FakeWireGuardBackend();
    const rt = new FakeRtNetlink();
    result = await measure(linkFakes(fake, rt), rt);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else for (const [k, v] of Object.entries(result)) process.stdout.write(`${k.padEnd(18)} ${v}\n`);
}

await main();
