/**
 * The lab's host primitives on the real host: bare nodes (namespaces, mount namespaces, veths, a
 * bridge, processes, a wireguard-go tunnel) without agents. `down` must leave nothing behind, also
 * after a crashed `up`, and two labs with different prefixes must not disturb each other.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkRequirements, LabHost, LabRequirementError, LabStateError, NODE_MOUNTPOINTS, removeStaleLabs, systemRunner, uniquePrefix, type Runner } from '../../src/lab/host.ts';
import { hasTool, labPrerequisites } from './prerequisites.ts';

const ROOT = '/run/weft-lab';
const isRoot = process.getuid?.() === 0;
const canRun = !labPrerequisites({ tools: ['ip', 'unshare', 'nsenter'] }).skip;
const hasWgGo = hasTool('wireguard-go');
const WHY = 'needs root, ip, unshare and nsenter (network and mount namespaces)';

/** Everything on the host a lab with `prefix` could leave behind. */
function footprint(prefix: string): { netns: string[]; mounts: string[]; hostLinks: string[]; dirs: string[] } {
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${prefix}-`));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`${ROOT}/${prefix}`));
  const hostLinks = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string }>).map((l) => l.ifname).sort();
  const dirs = [`${ROOT}/${prefix}`].filter((d) => existsSync(d));
  return { netns, mounts, hostLinks, dirs };
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** A bare two-node lab: underlay netns with a bridge, two nodes wired to it, addresses. */
async function bareLab(h: LabHost, opts: { wg?: boolean } = {}): Promise<{ pids: number[] }> {
  const p = h.prefix;
  await h.init();
  await h.addNetns(`${p}-ul`);
  await h.addBridge('br0', `${p}-ul`);
  const pids: number[] = [];
  for (const i of [1, 2]) {
    const node = await h.addNode(`${p}-n${i}`);
    await h.addVeth({ name: `n${i}`, netns: `${p}-ul` }, { name: 'eth0', netns: node.netns });
    await h.exec({ netns: `${p}-ul` }, ['ip', 'link', 'set', `n${i}`, 'master', 'br0']);
    await h.addAddress(node.netns, 'eth0', `198.18.250.${i}/24`);
    pids.push(await h.spawn(node, ['sleep', '3600'], { logFile: `${node.logDir}/sleep.log`, label: `sleep:${i}` }));
  }
  if (opts.wg) {
    const n1 = h.node(`${p}-n1`);
    pids.push(await h.spawn(n1, ['wireguard-go', '-f', 'wgt0'], { logFile: `${n1.logDir}/wg.log`, label: 'wg' }));
    await waitUntil(() => existsSync(`/proc/${pids.at(-1)}`) && h.exec(n1, ['ip', 'link', 'show', 'wgt0'], { check: false }).then((r) => r.code === 0));
  }
  return { pids };
}

async function waitUntil(fn: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Unique prefixes per run, so two runs of this file on one host never touch each other's labs.
const P1 = canRun ? uniquePrefix('wlta') : 'wltax';
const P2 = canRun ? uniquePrefix('wltb') : 'wltbx';
const P3A = canRun ? uniquePrefix('wltc') : 'wltcx';
const P3B = canRun ? uniquePrefix('wltd') : 'wltdx';
const P4 = canRun ? uniquePrefix('wlte') : 'wltex';
if (canRun) await removeStaleLabs(/^wlt[a-e][a-z0-9]{3}$/);

const created: LabHost[] = [];
afterAll(async () => {
  for (const h of created) await new LabHost({ prefix: h.prefix }).down().catch(() => {});
});

function lab(prefix: string, runner?: Runner): LabHost {
  const h = new LabHost({ prefix, runner, termGraceMs: 1000 });
  created.push(h);
  return h;
}

describe('lab host primitives', () => {
  it.skipIf(!canRun)(`bare nodes: isolated mount namespaces, working underlay, and down leaves nothing behind (${WHY})`, async () => {
    const prefix = P1;
    await new LabHost({ prefix }).down();
    const before = footprint(prefix);
    const hostDirsBefore = Object.values(NODE_MOUNTPOINTS).filter((d) => existsSync(d));
    const h = lab(prefix);
    const { pids } = await bareLab(h, { wg: hasWgGo });

    // The underlay works between the two nodes.
    const ping = await h.exec({ netns: `${prefix}-n1` }, ['ping', '-c', '1', '-W', '2', '198.18.250.2'], { check: false });
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);

    // Each node has its own /var/lib/weft, /run/weft and a private tmpfs on /run/wireguard.
    const n1 = h.node(`${prefix}-n1`);
    const n2 = h.node(`${prefix}-n2`);
    await h.exec(n1, ['sh', '-c', 'echo one > /var/lib/weft/marker && echo r1 > /run/weft/marker']);
    expect(readFileSync(`${n1.stateDir}/marker`, 'utf8')).toBe('one\n');
    expect(readFileSync(`${n1.runDir}/marker`, 'utf8')).toBe('r1\n');
    expect(existsSync(`${n2.stateDir}/marker`)).toBe(false);
    const seen2 = await h.exec(n2, ['sh', '-c', 'ls /var/lib/weft /run/weft']);
    expect(seen2.stdout).not.toContain('marker');
    const wgFs = await h.exec(n1, ['sh', '-c', `grep " ${NODE_MOUNTPOINTS.wireguard} " /proc/self/mountinfo`]);
    expect(wgFs.stdout).toContain('tmpfs');
    // The host's mount namespace does not see the node's mounts.
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(`${NODE_MOUNTPOINTS.wireguard} rw`);
    if (hasWgGo) {
      const sock = await h.exec(n1, ['ls', NODE_MOUNTPOINTS.wireguard]);
      expect(sock.stdout).toContain('wgt0.sock');
      expect((await h.exec(n2, ['ls', NODE_MOUNTPOINTS.wireguard])).stdout).not.toContain('wgt0.sock');
    }
    // A namespace created after the node (a pod) is usable from inside the node's mount namespace.
    await h.addNetns(`${prefix}-n1-p1`);
    const inPod = await h.exec(n1, ['nsenter', `--net=/run/netns/${prefix}-n1-p1`, '--', 'ip', '-o', 'link', 'show']);
    expect(inPod.stdout).toContain('lo');
    expect(inPod.stdout).not.toContain('eth0');

    for (const pid of pids) expect(alive(pid)).toBe(true);
    // down from a fresh LabHost (as `weft lab down` runs), recording what it does and in which order.
    const events: string[] = [];
    const real = systemRunner();
    const recording: Runner = {
      ...real,
      run: (argv, opts) => {
        if (argv.includes('link') && argv.includes('del')) events.push(`del ${argv.at(-1)}`);
        return real.run(argv, opts);
      },
      kill: (pid, sig) => {
        events.push(`kill ${pid} ${sig}`);
        return real.kill(pid, sig);
      },
    };
    expect(await new LabHost({ prefix, runner: recording, termGraceMs: 1000 }).down()).toBeGreaterThan(10);
    if (hasWgGo) {
      const wgPid = pids.at(-1)!;
      const del = events.indexOf('del wgt0');
      expect(del).toBeGreaterThanOrEqual(0);
      const firstSignal = events.findIndex((e) => e.startsWith(`kill ${wgPid} `));
      // wireguard-go exits by itself once its interface is gone; if it is signalled, only afterwards.
      if (firstSignal >= 0) expect(firstSignal).toBeGreaterThan(del);
      // The sleep processes were signalled by PID.
      for (const pid of pids.slice(0, 2)) expect(events).toContain(`kill ${pid} SIGTERM`);
    }

    for (const pid of pids) expect(alive(pid)).toBe(false);
    const after = footprint(prefix);
    expect(after.netns).toEqual(before.netns);
    expect(after.mounts).toEqual([]);
    expect(after.dirs).toEqual([]);
    expect(after.hostLinks.filter((l) => !before.hostLinks.includes(l) && ['br0', 'eth0', 'n1', 'n2', 'wgt0'].includes(l))).toEqual([]);
    expect(Object.values(NODE_MOUNTPOINTS).filter((d) => existsSync(d) && !hostDirsBefore.includes(d) && !otherLabsUp(prefix))).toEqual([]);
    // Idempotent.
    expect(await h.down()).toBe(0);
  });

  it.skipIf(!canRun)('down after a crashed up: a failure at every stage, and a SIGKILLed up process', async () => {
    const prefix = P2;
    await new LabHost({ prefix }).down();
    const before = footprint(prefix);
    const real = systemRunner();
    // Fail the first command that matches, as if `up` died right there.
    const stages: Array<(argv: readonly string[]) => boolean> = [
      (a) => a.includes('netns') && a.includes('add') && a.at(-1) === `${prefix}-n2`,
      (a) => a[0] === 'unshare' && a.some((x) => x.includes(`${prefix}-n2`)),
      (a) => a.includes('veth'),
      (a) => a[0] === 'nsenter' && a.includes('sleep'),
    ];
    for (const [i, failAt] of stages.entries()) {
      const failing: Runner = {
        ...real,
        run: (argv, opts) => (failAt(argv) ? Promise.reject(new Error(`injected failure at stage ${i}`)) : real.run(argv, opts)),
        spawnDetached: (argv, opts) => (failAt(argv) ? Promise.reject(new Error(`injected failure at stage ${i}`)) : real.spawnDetached(argv, opts)),
      };
      const h = lab(prefix, failing);
      await expect(bareLab(h)).rejects.toThrow(/injected failure/);
      expect(h.exists()).toBe(true);
      // A fresh process (a new LabHost) cleans up from the state file alone.
      await new LabHost({ prefix, termGraceMs: 1000 }).down();
      const after = footprint(prefix);
      expect({ stage: i, ...after }).toEqual({ stage: i, ...before, hostLinks: after.hostLinks });
    }

    // A real crash: a process builds part of a lab, starts a process in it, and is SIGKILLed.
    const script = `/tmp/${prefix}-crash.ts`;
    writeFileSync(
      script,
      `import { LabHost } from ${JSON.stringify(new URL('../../src/lab/host.ts', import.meta.url).pathname)};
const h = new LabHost({ prefix: '${prefix}' });
await h.init();
await h.addNetns('${prefix}-ul');
const n = await h.addNode('${prefix}-n1');
await h.spawn(n, ['sleep', '3600'], { logFile: n.logDir + '/s.log', label: 'sleep' });
process.stdout.write('ready\\n');
setInterval(() => {}, 1000);
`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      child.on('exit', (code) => reject(new Error(`crash script exited early (${code})`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    rmSync(script, { force: true });
    const crashed = new LabHost({ prefix, termGraceMs: 1000 });
    const state = await crashed.load();
    const sleepPid = state!.objects.find((o) => o.kind === 'process')!;
    expect(sleepPid.kind === 'process' && alive(sleepPid.pid)).toBe(true);
    await crashed.down();
    expect(sleepPid.kind === 'process' && alive(sleepPid.pid)).toBe(false);
    expect(footprint(prefix).netns).toEqual(before.netns);
    expect(footprint(prefix).mounts).toEqual([]);
    expect(footprint(prefix).dirs).toEqual([]);
  });

  it.skipIf(!canRun)('two labs side by side: same inner names, and down of one leaves the other intact', async () => {
    const a = lab(P3A);
    const b = lab(P3B);
    await a.down();
    await b.down();
    const ra = await bareLab(a);
    const rb = await bareLab(b);
    // Both underlays work at the same time with the same inner names and addresses.
    for (const h of [a, b]) {
      const r = await h.exec({ netns: `${h.prefix}-n2` }, ['ping', '-c', '1', '-W', '2', '198.18.250.1'], { check: false });
      expect(r.code).toBe(0);
    }
    // `up` refuses to reuse a prefix that is up, and a namespace that another lab owns.
    await expect(new LabHost({ prefix: P3A }).init()).rejects.toThrow(LabStateError);
    await a.down();
    for (const pid of ra.pids) expect(alive(pid)).toBe(false);
    for (const pid of rb.pids) expect(alive(pid)).toBe(true);
    expect(footprint(P3A).netns).toEqual([]);
    expect(footprint(P3B).netns.sort()).toEqual([`${P3B}-n1`, `${P3B}-n2`, `${P3B}-ul`]);
    const r = await b.exec(b.node(`${P3B}-n1`), ['sh', '-c', 'ping -c 1 -W 2 198.18.250.2 >/dev/null && ls /run/weft /var/lib/weft'], { check: false });
    expect(r.code).toBe(0);
    await b.down();
    for (const pid of rb.pids) expect(alive(pid)).toBe(false);
    expect(footprint(P3B).netns).toEqual([]);
  });

  it('rejects bad prefixes and refuses a namespace it did not create', async () => {
    for (const bad of ['', 'A', '1ab', 'a-b', 'a/b', 'abcdefghijk', '../x']) expect(() => new LabHost({ prefix: bad })).toThrow(LabStateError);
    if (!canRun) return;
    const foreign = `${P4}-ul`;
    execFileSync('ip', ['netns', 'add', foreign]);
    const h = lab(P4);
    try {
      await h.init();
      await expect(h.addNetns(foreign)).rejects.toThrow(new RegExp(`not created by lab ${P4}`));
      await h.down();
      // down did not remove the namespace it did not create.
      expect(existsSync(`/run/netns/${foreign}`)).toBe(true);
    } finally {
      execFileSync('ip', ['netns', 'delete', foreign]);
    }
  });

  it('removes only stale labs: old, matching, and with no live process', async () => {
    const root = mkdtempSync(join(tmpdir(), 'wl-stale-'));
    try {
      const real = systemRunner();
      const write = (prefix: string, createdAt: string, pid: number) => {
        mkdirSync(join(root, prefix));
        const objects = [{ kind: 'process', pid, start: real.startTime(pid) ?? 'gone', label: 'x' }];
        writeFileSync(join(root, prefix, 'state.json'), JSON.stringify({ version: 1, prefix, createdAt, objects, meta: {} }));
      };
      const old = new Date(Date.now() - 3_600_000).toISOString();
      write('wlsold', old, 999_999_999);
      write('wlsnew', new Date().toISOString(), 999_999_999);
      write('wlslive', old, process.pid);
      write('other', old, 999_999_999);
      expect(await removeStaleLabs(/^wls/, { root })).toEqual(['wlsold']);
      expect(readdirSync(root).sort()).toEqual(['other', 'wlslive', 'wlsnew']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('names what is missing when requirements are not met', async () => {
    const fake = (missing: string[]): Runner => ({
      ...systemRunner(),
      run: async (argv) => ({ code: missing.includes(argv.at(-1)!) ? 1 : 0, stdout: '', stderr: '' }),
    });
    const kernel = existsSync('/sys/module/wireguard');
    if (!kernel) {
      await expect(checkRequirements(fake(['wireguard-go']), 'auto')).rejects.toThrow(/wireguard-go: not found.*no WireGuard kernel module/);
      await expect(checkRequirements(fake([]), 'kernel')).rejects.toThrow(/wireguard kernel module/);
    }
    await expect(checkRequirements(fake(['nsenter', 'unshare']), 'userspace')).rejects.toThrow(LabRequirementError);
    await expect(checkRequirements(fake(['nsenter']), 'userspace')).rejects.toThrow(/nsenter: not found on PATH \(install util-linux\)/);
    if (isRoot) expect((await checkRequirements(fake([]), 'userspace')).backend).toBe('userspace');
  });
});

function otherLabsUp(prefix: string): boolean {
  try {
    return execFileSync('ls', [ROOT], { encoding: 'utf8' }).split('\n').some((d) => d !== '' && d !== prefix);
  } catch {
    return false;
  }
}
