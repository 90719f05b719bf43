/**
 * `weft lab` through the real command line (`node src/main.ts lab ...`): up with blocks claimed
 * through the mesh, --json output, status, exec into a node and a pod (exit code passed through),
 * flag validation, and down leaving nothing behind.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

const { skip, why, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare'], wireguard: true, prefix: 'wlc' });
if (!skip) await removeStaleLabs(/^wlc[a-z0-9]{3}$/);

function weft(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 170_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

afterAll(async () => {
  await new LabHost({ prefix: PREFIX }).down();
}, 60_000);

describe.skipIf(skip)(`weft lab CLI${why}`, () => {
  it('rejects bad flags with one clear line', () => {
    const r = weft('lab', 'up', '--nodes', '0', '--prefix', PREFIX);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--nodes.*between 1 and 50/);
    const p = weft('lab', 'up', '--prefix', 'Bad-Prefix');
    expect(p.code).not.toBe(0);
    expect(p.stderr).toMatch(/prefix/);
    expect(existsSync(`/run/weft-lab/${PREFIX}`)).toBe(false);
    const s = weft('lab', 'status', '--prefix', PREFIX);
    expect(s.code).toBe(1);
    expect(s.stderr).toContain(`no lab with prefix ${PREFIX} is up`);
  });

  it('up (blocks claimed through the mesh) --json, status, exec, down', () => {
    const up = weft('lab', 'up', '--nodes', '2', '--pods-per-node', '1', '--prefix', PREFIX, '--claim-blocks', '--json');
    expect(up.code, up.stderr).toBe(0);
    const lab = JSON.parse(up.stdout) as {
      nodes: Array<{ name: string; netns: string; underlayIP: string; podCIDR: string; meshIP: string }>;
      pods: Array<{ netns: string; ip: string; podName: string; podNamespace: string; node: string }>;
    };
    expect(lab.nodes.map((n) => n.name)).toEqual([`${PREFIX}-n1`, `${PREFIX}-n2`]);
    expect(lab.nodes.map((n) => n.netns)).toEqual([`${PREFIX}-n1`, `${PREFIX}-n2`]);
    for (const n of lab.nodes) {
      expect(n.underlayIP).toMatch(/^198\.1[89]\.\d+\.\d+$/);
      expect(n.podCIDR).toMatch(/^10\.244\.\d+\.0\/24$/);
    }
    expect(lab.nodes[0]!.podCIDR).not.toBe(lab.nodes[1]!.podCIDR);
    expect(lab.pods.map((p) => p.netns)).toEqual([`${PREFIX}-n1-p1`, `${PREFIX}-n2-p1`]);
    expect(lab.pods.every((p) => p.podNamespace === 'default' && p.podName === p.netns)).toBe(true);
    const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of [...lab.nodes.map((x) => x.netns), ...lab.pods.map((x) => x.netns)]) expect(netns).toContain(n);

    const st = weft('lab', 'status', '--prefix', PREFIX, '--json');
    expect(st.code, st.stderr).toBe(0);
    const status = JSON.parse(st.stdout) as { nodes: Array<{ ready: boolean; peers: number; agentPid?: number }> };
    expect(status.nodes.every((n) => n.ready && n.peers === 1 && n.agentPid! > 0)).toBe(true);
    expect(weft('lab', 'status', '--prefix', PREFIX).stdout).toContain('UNDERLAY IP');

    // exec into a pod: its address comes from the CNI plugin; into a node: its own /run/weft.
    const [p1, p2] = lab.pods;
    const addr = weft('lab', 'exec', p1!.netns, '--', 'ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0');
    expect(addr.code, addr.stderr).toBe(0);
    expect(addr.stdout).toContain(`${p1!.ip}/`);
    const ping = weft('lab', 'exec', p1!.netns, '--', 'ping', '-c', '1', '-W', '3', p2!.ip);
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    const sock = weft('lab', 'exec', lab.nodes[0]!.name, '--', 'ls', '/run/weft');
    expect(sock.stdout).toContain('weft.sock');
    expect(weft('lab', 'exec', p1!.netns, '--', 'sh', '-c', 'exit 3').code).toBe(3);
    expect(weft('lab', 'exec', `${PREFIX}-n9`, '--', 'true').stderr).toContain('no node or pod');

    const down = weft('lab', 'down', '--prefix', PREFIX);
    expect(down.code, down.stderr).toBe(0);
    const after = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    expect(after).not.toContain(`${PREFIX}-`);
    expect(existsSync(`/run/weft-lab/${PREFIX}`)).toBe(false);
    expect(weft('lab', 'down', '--prefix', PREFIX).stderr).toContain('nothing to remove');
  });
});
