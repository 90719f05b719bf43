import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../testing/member-process.ts', import.meta.url));
const N = 20;

interface Status {
  name: string;
  port: number;
  live: number;
  entries: number;
}

const children: ChildProcess[] = [];
afterAll(async () => {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
          setTimeout(() => {
            if (c.exitCode === null) c.kill('SIGKILL');
          }, 3000).unref();
        }),
    ),
  );
});

function launch(name: string, key: string, seeds: string[], latest: Map<string, Status>): Promise<Status> {
  const child = spawn(process.execPath, [SCRIPT, name, key, ...seeds], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    let first = true;
    rl.on('line', (line) => {
      try {
        const s = JSON.parse(line) as Status;
        latest.set(s.name, s);
        if (first) {
          first = false;
          resolve(s);
        }
      } catch {
        /* ignore non-status output */
      }
    });
    child.once('exit', (code) => { if (first) reject(new Error(`${name} exited ${code}: ${stderr}`)); });
  });
}

describe('real sockets', () => {
  it(`${N} OS processes on loopback converge on membership and entries`, async () => {
    const key = randomBytes(32).toString('hex');
    const latest = new Map<string, Status>();
    const seed = await launch('p0', key, [], latest);
    const seedAddr = `127.0.0.1:${seed.port}`;
    await Promise.all(Array.from({ length: N - 1 }, (_, i) => launch(`p${i + 1}`, key, [seedAddr], latest)));
    const deadline = Date.now() + 60_000;
    const done = (): boolean => latest.size === N && [...latest.values()].every((s) => s.live === N && s.entries === N);
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect([...latest.values()].map((s) => [s.name, s.live, s.entries]).filter(([, l, e]) => l !== N || e !== N)).toEqual([]);
    expect(latest.size).toBe(N);
  }, 90_000);
});
