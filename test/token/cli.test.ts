import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { pino } from 'pino';
import { generateIdentity } from '../../mesh/crypto.ts';
import type { MeshHandle } from '../../mesh/api.ts';
import { ApiServer } from '../../src/api/server.ts';
import { registerTokenCommands } from '../../src/cli/token.ts';
import { startTokenService } from '../../src/token/service.ts';
import { parseToken } from '../../src/token/token.ts';
import { FakeMember } from './fake-mesh.ts';

let dir = '';
let socket = '';
let api: ApiServer;
let mesh: FakeMember;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wtk-cli-'));
  socket = join(dir, 'weft.sock');
  const id = generateIdentity();
  mesh = new FakeMember('seed-a', Buffer.from(id.publicKey).toString('base64'), Date.now);
  api = new ApiServer({ logger: pino({ level: 'silent' }) });
  await api.listenUnix(socket);
  await startTokenService({ name: 'seed-a', mesh: mesh as unknown as MeshHandle, identitySeed: id.seed, meshKey: new Uint8Array(32).fill(1), api, logger: pino({ level: 'silent' }), listenAddr: '192.0.2.1', joinPort: 0 });
});
afterAll(async () => {
  await api.close();
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  process.exitCode = undefined;
  vi.restoreAllMocks();
});

async function run(...args: string[]): Promise<{ out: string; err: string; code: number | undefined }> {
  let out = '';
  let err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  const program = new Command().exitOverride();
  registerTokenCommands(program);
  process.exitCode = undefined;
  await program.parseAsync(['node', 'weft', ...args]);
  const code = process.exitCode as number | undefined;
  vi.restoreAllMocks();
  return { out, err, code };
}

describe('weft token / node CLI against an agent API', () => {
  it('create prints a token that parses; list shows it; revoke revokes it', async () => {
    const c = await run('token', 'create', '--ttl', '2h', '--uses', '3', '--seeds', '192.0.2.1:7947,198.18.0.9:7947', '--description', 'edge', '--socket', socket);
    expect(c.code).toBeUndefined();
    const t = parseToken(c.out.trim());
    expect(t.uses).toBe(3);
    expect(t.seeds).toEqual(['192.0.2.1:7947', '198.18.0.9:7947']);
    expect(c.err).toMatch(new RegExp(`token ${t.id} expires`));
    const l = await run('token', 'list', '--socket', socket);
    expect(l.out).toMatch(new RegExp(`${t.id}\\s+valid\\s+in [12]h\\d+m\\s+3/3\\s+seed-a\\s+-\\s+edge`));
    const r = await run('token', 'revoke', t.id, '--socket', socket);
    expect(r.out).toBe(`token ${t.id} revoked\n`);
    const j = await run('token', 'list', '--json', '--socket', socket);
    expect(JSON.parse(j.out)).toMatchObject([{ id: t.id, status: 'revoked' }]);
  });

  it('errors: bad uses (2), refused by the agent (1), agent unreachable (3)', async () => {
    expect((await run('token', 'create', '--uses', 'many', '--socket', socket)).code).toBe(2);
    const noSeeds = await run('token', 'create', '--socket', socket);
    expect(noSeeds.code).toBe(1);
    expect(noSeeds.err).toMatch(/no seed address to embed/);
    const badTtl = await run('token', 'create', '--ttl', '90d', '--seeds', '192.0.2.1:7947', '--socket', socket);
    expect(badTtl.code).toBe(1);
    const unknown = await run('token', 'revoke', 'zzzzzzzz', '--socket', socket);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/no token zzzzzzzz/);
    const down = await run('token', 'list', '--socket', join(dir, 'nope.sock'));
    expect(down.code).toBe(3);
  });

  it('node remove publishes a revocation', async () => {
    const r = await run('node', 'remove', 'edge-9', '--reason', 'decommissioned', '--socket', socket);
    expect(r.out).toMatch(/node edge-9 removed \(not currently a member/);
    const e = mesh.snapshot().members[0]!.entries.get('node-revoked/edge-9');
    expect(JSON.parse(Buffer.from(e!.payload).toString())).toMatchObject({ name: 'edge-9', by: 'seed-a', reason: 'decommissioned' });
    expect((await run('node', 'remove', 'seed-a', '--socket', socket)).code).toBe(1);
  });
});
