/**
 * Tokens over real mesh members on loopback: a member runs the token service (join listener + API
 * routes on a unix socket), a new node redeems a token with `joinAndPrepare` (the `weft join` core),
 * starts its own mesh member with the granted key and its own identity, and is seen by the seed; then
 * `node remove` makes every member drop it from the plan input, and it cannot rejoin with its identity.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Keyring, createMesh, generateIdentity, identityFromSeed, type Mesh } from '../../mesh/index.ts';
import { ApiServer } from '../../src/api/server.ts';
import { ApiClient, ApiClientError } from '../../src/api/client.ts';
import { parseConfig } from '../../src/config.ts';
import { joinAndPrepare, readStoredAdmission } from '../../src/cli/join.ts';
import { renderTokens } from '../../src/cli/token.ts';
import { readSecretFile } from '../../src/agent/secrets.ts';
import { startTokenService, type TokenService } from '../../src/token/service.ts';
import { JoinError } from '../../src/token/join-client.ts';
import { revokedNodes, withoutRevoked, type TokenListing } from '../../src/token/store.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

const silent = pino({ level: 'silent' });

async function until(what: string, fn: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('tokens over real mesh members (loopback)', () => {
  it('create via API, join, gossip, list, remove, refuse rejoin', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wtk-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const meshKey = new Uint8Array(32).fill(11);
    const seedId = generateIdentity();
    const seedMesh: Mesh = createMesh({ name: 'seed-a', identity: seedId, keyring: new Keyring(meshKey), bindAddr: '127.0.0.1', bindPort: 0, logger: silent });
    cleanups.push(() => seedMesh.stop());
    await seedMesh.start([]);
    const api = new ApiServer({ logger: silent });
    const socket = join(dir, 'weft.sock');
    await api.listenUnix(socket);
    cleanups.push(() => api.close());
    const svc: TokenService = await startTokenService({ name: 'seed-a', mesh: seedMesh, identitySeed: seedId.seed, meshKey, api, logger: silent, listenAddr: '127.0.0.1', joinPort: 0, confirmWindowMs: 300 });
    cleanups.push(() => svc.close());
    expect(svc.joinPort).toBe(0);
    // With the listener off and no --seeds, the agent has nothing to embed: a clear error.
    const client = new ApiClient({ socketPath: socket });
    await expect(client.post('/v1/token/create', { ttl: '1h' })).rejects.toThrow(/no seed address/);
    // Start a listener (port 0 = any) in a second service over the same mesh, as the agent does with --join-port.
    const svc2 = await startTokenService({ name: 'seed-a', mesh: seedMesh, identitySeed: seedId.seed, meshKey, api, logger: silent, listenAddr: '127.0.0.1', joinPort: 0, confirmWindowMs: 300 });
    cleanups.push(() => svc2.close());
    const { JoinServer } = await import('../../src/token/join-server.ts');
    const listener = new JoinServer({ admitter: svc2.admitter, identity: seedId, logger: silent, clock: Date.now });
    cleanups.push(() => listener.close());
    const joinPort = await listener.listen('127.0.0.1', 0);

    await expect(client.post('/v1/token/create', { ttl: 'soon' })).rejects.toThrow(ApiClientError);
    await expect(client.post('/v1/token/create', { ttl: '1h', uses: 0, seeds: [`127.0.0.1:${joinPort}`] })).rejects.toThrow(/uses/);
    const created = await client.post<{ token: string; id: string; expiresAt: number }>('/v1/token/create', { ttl: '1h', uses: 1, seeds: [`127.0.0.1:${joinPort}`], description: 'edge' });
    expect(created.token).toMatch(/^weft1\./);

    // The joiner: `weft join` core with agent flags.
    const stateDir = join(dir, 'joiner');
    const config = parseConfig({ name: 'edge-1', stateDir, runDir: join(dir, 'run') }, {});
    const lines: string[] = [];
    const prepared = await joinAndPrepare(config, created.token, (l) => lines.push(l));
    expect(prepared.joined).toBe(true);
    expect(lines[0]).toMatch(/admitted by seed-a/);
    expect(prepared.config.meshKeyFile).toBe(join(stateDir, 'mesh.key'));
    expect(Buffer.from((await readSecretFile(prepared.config.meshKeyFile!))!).equals(Buffer.from(meshKey))).toBe(true);
    expect((await stat(join(stateDir, 'admission.json'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(stateDir, 'mesh.key'))).mode & 0o777).toBe(0o600);
    const seedPort = seedMesh.snapshot().members[0]!.port;
    expect(prepared.config.seeds).toEqual([{ host: '127.0.0.1', port: seedPort }]);
    // The admission file holds no token secret.
    expect(await readFile(join(stateDir, 'admission.json'), 'utf8')).not.toContain(created.token.split('.')[2]);

    // A restart of `weft join` with the spent token does not redeem again.
    const again = await joinAndPrepare(config, created.token);
    expect(again.joined).toBe(false);

    // The joiner's mesh member: its own identity, the granted key, the granted seeds.
    const idSeed = (await readSecretFile(join(stateDir, 'identity.key')))!;
    const edge = createMesh({ name: 'edge-1', identity: identityFromSeed(idSeed), keyring: new Keyring((await readSecretFile(prepared.config.meshKeyFile!))!), bindAddr: '127.0.0.1', bindPort: 0, logger: silent });
    cleanups.push(() => edge.stop());
    await edge.start(prepared.config.seeds.map((s) => `${s.host}:${s.port}`));
    await until('the seed sees edge-1 alive', () => seedMesh.snapshot().members.some((m) => m.name === 'edge-1' && m.state === 'alive'));

    const list = await client.get<{ tokens: TokenListing[] }>('/v1/token/list');
    expect(list.tokens).toMatchObject([{ id: created.id, status: 'spent', usesLeft: 0, redeemedBy: ['edge-1'], issuedBy: 'seed-a', description: 'edge' }]);
    expect(renderTokens(list.tokens, Date.now())).toMatch(new RegExp(`${created.id}\\s+spent\\s+in \\d+m\\s+0/1\\s+seed-a\\s+edge-1\\s+edge`));
    // The joiner learns the tokens too (any member can verify them).
    await until('edge-1 sees the token entries', () => edge.snapshot().members.some((m) => m.entries.has(`token/${created.id}`)));

    // A second token, revoked through the API, is refused.
    const t2 = await client.post<{ token: string; id: string }>('/v1/token/create', { ttl: '10m', uses: 2, seeds: [`127.0.0.1:${joinPort}`] });
    await client.post('/v1/token/revoke', { id: t2.id });
    await expect(client.post('/v1/token/revoke', { id: 'nope' })).rejects.toThrow(/8 characters/);
    const c2 = parseConfig({ name: 'edge-2', stateDir: join(dir, 'j2'), runDir: join(dir, 'run2') }, {});
    await expect(joinAndPrepare(c2, t2.token)).rejects.toMatchObject({ code: 'revoked' });

    // Remove edge-1: every member drops it from the plan input; it cannot rejoin with its identity.
    const removed = await client.post<{ name: string; identityKey: string }>('/v1/node/remove', { name: 'edge-1', reason: 'test' });
    expect(removed.identityKey).toBe(Buffer.from(identityFromSeed(idSeed).publicKey).toString('base64'));
    expect(withoutRevoked(seedMesh.snapshot()).members.map((m) => m.name)).toEqual(['seed-a']);
    await until('edge-1 learns its revocation', () => revokedNodes(edge.snapshot()).has('edge-1'));
    const t3 = await client.post<{ token: string }>('/v1/token/create', { ttl: '10m', uses: 1, seeds: [`127.0.0.1:${joinPort}`] });
    await rm(join(stateDir, 'admission.json'));
    const err = await joinAndPrepare(config, t3.token).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JoinError);
    expect(err).toMatchObject({ code: 'node-revoked' });
    expect(await readStoredAdmission(stateDir, 'edge-1', removed.identityKey)).toBeUndefined();
  });
});
