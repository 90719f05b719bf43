/**
 * `weft lab demo` (what `npm run lab` runs) end to end through the real command line: every check
 * it prints passes, it shows `weft status` of a node, and it removes its lab afterwards.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const { skip, why, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'ping', 'curl', 'iperf3', 'tcpdump'], wireguard: true, prefix: 'wld' });
if (!skip) await removeStaleLabs(/^wld[a-z0-9]{3}$/);

afterAll(async () => {
  await new LabHost({ prefix: PREFIX }).down();
}, 60_000);

describe.skipIf(skip)(`weft lab demo${why}`, () => {
  it('pings, curls and transfers across nodes, sees only WireGuard UDP on the underlay, prints weft status, cleans up', () => {
    const r = spawnSync(process.execPath, [MAIN, 'lab', 'demo', '--prefix', PREFIX], { encoding: 'utf8', timeout: 170_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const checks = r.stdout.split('\n').filter((l) => /^(ok|FAIL) /.test(l));
    expect(checks.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(checks.map((l) => l.split(/\s+/)[1])).toEqual(['ping', 'ping', 'curl', 'TCP', 'the', '`weft']);
    expect(r.stdout).toMatch(/pod address in an IP header: 0/);
    expect(r.stdout).toMatch(/anything else:\s+0/);
    expect(r.stdout).toContain(`node:          ${PREFIX}-n1`);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(`${PREFIX}-`);
    expect(existsSync(`/run/weft-lab/${PREFIX}`)).toBe(false);
  });
});
