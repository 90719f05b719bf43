import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const MAIN = join(resolve(import.meta.dirname, '..', '..'), 'src', 'main.ts');
const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 });

describe('weft CLI', () => {
  it.each([
    [['agent', '--mesh-port', 'abc'], {}, /^weft agent: config: --mesh-port \/ WEFT_MESH_PORT: "abc" is not an integer\n$/],
    [['agent'], { WEFT_CLUSTER_CIDR: '10.0.0.1/8' }, /^weft agent: config: --cluster-cidr \/ WEFT_CLUSTER_CIDR: .*did you mean 10\.0\.0\.0\/8\?\)\n$/],
    [['agent', '--backend', 'ebpf'], {}, /^weft agent: config: --backend .* is not one of auto, kernel, userspace\n$/],
  ] as [string[], Record<string, string>, RegExp][])('%j %j exits 2 with one line', (args, env, msg) => {
    const r = run(args, env);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).toBe('');
  });

  it('weft agent without a mesh key fails with a clear line and exit 1', () => {
    const r = run(['agent', '--state-dir', '/nonexistent-weft-test/state', '--run-dir', '/nonexistent-weft-test/run'], { WEFT_LISTEN_ADDR: '127.0.0.1' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('weft status exits 3 when the agent is unreachable', () => {
    const r = run(['status', '--socket', '/nonexistent-weft-test/weft.sock']);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/^weft status: api: cannot reach the agent at \/nonexistent-weft-test\/weft\.sock/);
  });

  it('lists the agent flags with their env vars in --help', () => {
    const r = run(['agent', '--help']);
    expect(r.status).toBe(0);
    for (const f of ['--seeds', '--listen-addr', '--pod-cidr', '--mesh-key-file', '--metrics-addr', 'WEFT_CLUSTER_CIDR', '--uninstall']) expect(r.stdout).toContain(f);
  });
});
