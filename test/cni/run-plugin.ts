/** Spawns the plugin (or a given command) as a runtime does: env, stdin, stdout/stderr captured. */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const PLUGIN = resolve(import.meta.dirname, '../../src/cni/plugin.ts');

/** What one invocation produced. */
export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | undefined;
}

/** Runs `cmd` (default: the plugin source under this Node) with only `env` + PATH. */
export function runPlugin(env: Record<string, string>, stdin: string, cmd: string[] = [process.execPath, PLUGIN], basePath = process.env.PATH ?? ''): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { env: { PATH: basePath, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => {
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      res({ code, stdout, stderr, json });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
  });
}

