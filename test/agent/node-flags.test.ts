import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../../src/agent/node-flags.ts';

const root = join(import.meta.dirname, '..', '..');

describe('AGENT_NODE_FLAGS', () => {
  it('are the flags of the image ENTRYPOINT, before the bundle', () => {
    const docker = readFileSync(join(root, 'deploy', 'Dockerfile'), 'utf8');
    const line = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(docker);
    expect(line, 'deploy/Dockerfile has an exec-form ENTRYPOINT').not.toBeNull();
    expect(JSON.parse(line![1]!)).toEqual(['node', ...AGENT_NODE_FLAGS, '/opt/weft/dist/weft.mjs']);
  });

  it('come with the environment of AGENT_ENV, set by the image too', () => {
    const docker = readFileSync(join(root, 'deploy', 'Dockerfile'), 'utf8');
    for (const [k, v] of Object.entries(AGENT_ENV)) expect(docker).toMatch(new RegExp(`^ENV ${k}=${v}$`, 'm'));
  });

  it('are accepted by this Node binary on the command line', () => {
    const out = execFileSync(process.execPath, [...AGENT_NODE_FLAGS, '-e', 'process.stdout.write(JSON.stringify(process.execArgv))'], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(expect.arrayContaining([...AGENT_NODE_FLAGS]));
  });
});
