/**
 * The kernel VM lane: boots Debian's generic kernel under qemu (TCG) with the host root shared
 * read-only over 9p, loads wireguard.ko in the guest, runs test/vm/guest/kernel.guest.ts (the
 * compliance suite against the kernel backend) there, and asserts on its vitest report, which
 * comes back base64-encoded on the serial console. Needs `test/vm/prepare.sh` to have run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const CACHE = process.env.WEFT_VM_CACHE ?? '/var/cache/weft-vm';
const REPO = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const INIT_REV = /^INIT_REV=(\d+)$/m.exec(readFileSync(`${REPO}/test/vm/prepare.sh`, 'utf8'))?.[1];
const prepared =
  existsSync(`${CACHE}/vmlinuz`) &&
  existsSync(`${CACHE}/initramfs.gz`) &&
  existsSync(`${CACHE}/ready`) &&
  readFileSync(`${CACHE}/ready`, 'utf8').trim().endsWith(` init-${INIT_REV}`);
const hasQemu = (process.env.PATH ?? '').split(':').some((d) => existsSync(`${d}/qemu-system-x86_64`));
const reason = !hasQemu ? 'qemu-system-x86_64 not installed' : `VM lane not prepared (or prepared by an older prepare.sh): run test/vm/prepare.sh (cache ${CACHE})`;

interface AssertionResult {
  fullName: string;
  title: string;
  status: string;
  failureMessages: string[];
}
interface Report {
  numTotalTests: number;
  numPassedTests: number;
  numFailedTests: number;
  testResults: { name: string; status: string; message: string; assertionResults: AssertionResult[] }[];
}

/** The lane takes about 100 s on an idle 2-core machine (about 60 s of it is vitest starting under TCG). */
const BOOT_DEADLINE_MS = 200_000;

describe.skipIf(!prepared || !hasQemu)(`kernel VM lane${!prepared || !hasQemu ? ` (skipped: ${reason})` : ''}`, () => {
  let qemu: ChildProcess | undefined;
  afterAll(() => {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
  });

  it('runs the WireGuard compliance suite against the real kernel module', async () => {
    const cmd = `cd ${REPO} && exec sh test/vm/guest/run.sh ${CACHE}`;
    const append = `console=ttyS0 quiet panic=-1 weft.repo=${Buffer.from(REPO).toString('base64')} weft.cmd=${Buffer.from(cmd).toString('base64')}`;
    expect(append.length).toBeLessThan(2000);
    qemu = spawn(
      'qemu-system-x86_64',
      [
        '-accel', 'tcg', '-cpu', 'max', '-smp', '2', '-m', '2048', '-nographic', '-no-reboot',
        '-kernel', `${CACHE}/vmlinuz`, '-initrd', `${CACHE}/initramfs.gz`,
        '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap',
        // The checkout on its own share: the guest hides the host's /tmp and /run under tmpfs.
        '-virtfs', `local,path=${REPO},mount_tag=weftrepo,security_model=passthrough,readonly=on,multidevs=remap`,
        '-append', append,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    qemu.stdout!.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      if (out.length > 8 * 1024 * 1024) out = out.slice(-4 * 1024 * 1024);
    });
    qemu.stderr!.on('data', (d: Buffer) => {
      out += d.toString('utf8');
    });
    const exited = new Promise<void>((resolve) => qemu!.once('exit', () => resolve()));
    const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), BOOT_DEADLINE_MS))]);
    if (timedOut) qemu.kill('SIGKILL');
    const console = out.replace(/\r/g, '');
    const tail = console.slice(-3000);
    expect(timedOut, `VM did not finish within ${BOOT_DEADLINE_MS} ms; console tail:\n${tail}`).toBe(false);
    expect(console, `guest failed before the tests ran; console tail:\n${tail}`).not.toMatch(/WEFT-VM-FATAL|WEFT-VM-ERROR/);
    expect(console).toMatch(/WEFT-VM-KERNEL \S+ wireguard=/);
    const m = /WEFT-VM-REPORT-BEGIN\n([A-Za-z0-9+/=]+)\nWEFT-VM-REPORT-END/.exec(console);
    expect(m, `no test report on the console; tail:\n${tail}`).not.toBeNull();
    const report = JSON.parse(Buffer.from(m![1]!, 'base64').toString('utf8')) as Report;
    const results = report.testResults.flatMap((f) => f.assertionResults);
    const failed = results.filter((r) => r.status !== 'passed');
    expect(failed.map((f) => `${f.fullName}: ${f.status} ${f.failureMessages.join(' ').slice(0, 400)}`)).toEqual([]);
    expect(report.testResults.every((f) => f.status === 'passed'), report.testResults.map((f) => f.message).join('\n')).toBe(true);
    // The whole compliance suite ran (not skipped) against the kernel backend.
    const compliance = results.filter((r) => r.fullName.includes('WireGuard backend compliance: kernel'));
    const expected = readFileSync(`${REPO}/test/wireguard/compliance.ts`, 'utf8').match(/^ {4}it\(/gm)?.length ?? 0;
    expect(expected).toBeGreaterThan(5);
    expect(compliance).toHaveLength(expected);
    expect(results.filter((r) => r.fullName.includes('kernel backend specifics')).length).toBeGreaterThanOrEqual(5);
    const times = [...console.matchAll(/WEFT-VM-(VITEST-START|VITEST-EXIT \d+) uptime=([\d.]+)/g)].map((x) => `${x[1]} at ${x[2]} s`);
    process.stdout.write(`kernel VM lane: ${results.length} guest tests passed; guest ${times.join(', ')}\n`);
  }, BOOT_DEADLINE_MS + 20_000);
});
