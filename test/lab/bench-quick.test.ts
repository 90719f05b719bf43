/**
 * `weft bench --quick --repeat 1` end to end, as CI runs it, with the smallest control-plane set
 * (`--control-plane minimal`, `--rss-peers 20`) to keep the test short: every datapath mode must
 * produce positive throughput and latency figures, the report files must exist, and no namespace
 * of the benchmark may be left behind. Speed is not asserted (the bench measures it; tests do not).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeStaleLabs } from '../../src/lab/host.ts';

const REPO = resolve(import.meta.dirname, '..', '..');
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const isRoot = process.getuid?.() === 0;
const missing = ['iperf3', 'wireguard-go', 'wg', 'ip', 'nsenter', 'unshare'].filter((c) => !has(c));
const skip = !isRoot || missing.length > 0 || !existsSync('/dev/net/tun');
const out = mkdtempSync(join(tmpdir(), 'wbn-quick-'));

const wbnNetns = (): string[] => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => /^wbn/.test(n));

afterAll(() => rmSync(out, { recursive: true, force: true }));

describe.skipIf(skip)(`weft bench --quick (needs root, /dev/net/tun and ${missing.join(', ') || 'iperf3, wireguard-go, wg'})`, () => {
  it('every mode produces positive figures and the report files exist', async () => {
    // Labs left by a crashed earlier run of this test (old, no live process) only.
    await removeStaleLabs(/^wbn/);
    const before = new Set(wbnNetns());
    const child = spawn(process.execPath, [join(REPO, 'src/main.ts'), 'bench', '--quick', '--repeat', '1', '--control-plane', 'minimal', '--rss-peers', '20', '--json', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code, stderr).toBe(0);
    const report = JSON.parse(stdout.trim().split('\n').at(-1)!) as { backend: string; modes: Array<Record<string, unknown>>; control_plane: Record<string, Record<string, unknown>> };
    expect(['kernel', 'userspace']).toContain(report.backend);
    expect(report.modes.map((m) => m.mode)).toEqual(['plain', 'vxlan', 'weft', 'wireguard-manual']);
    for (const m of report.modes) {
      expect(m.errors, `${m.mode}: ${JSON.stringify(m.errors)}`).toEqual([]);
      for (const f of ['tcp1_gbps', 'tcp8_gbps', 'udp_gbps', 'rr_p50_us', 'rr_p99_us', 'cpu_per_gbps']) {
        expect(typeof m[f] === 'number' && (m[f] as number) > 0, `${m.mode}.${f} = ${m[f]}`).toBe(true);
      }
      expect(m.udp_loss as number).toBeGreaterThanOrEqual(0);
      expect(m.udp_loss as number).toBeLessThanOrEqual(1);
    }
    expect(report.control_plane.gossip_100?.converge_ms_max, JSON.stringify(report.control_plane.gossip_100)).toBeGreaterThan(0);
    expect(report.control_plane.reconcile_100_fake?.first_apply_ms, JSON.stringify(report.control_plane.reconcile_100_fake)).toBeGreaterThan(0);
    expect(report.control_plane.agent_rss?.peers, JSON.stringify(report.control_plane.agent_rss)).toBe(20);
    expect(report.control_plane.agent_rss?.rss_mb as number).toBeGreaterThan(0);
    expect(JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'))).toEqual(report);
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('| weft |');
    expect(readFileSync(join(out, 'throughput.svg'), 'utf8')).toMatch(/^<svg[\s\S]*wireguard-manual[\s\S]*<\/svg>$/);
    // Everything the run created is gone (namespaces of other runs may come and go meanwhile).
    expect(wbnNetns().filter((n) => !before.has(n))).toEqual([]);
  }, 300_000);
});
