/**
 * The token service's change events (what the Kubernetes Secret mirror writes through on): a create and a
 * revoke through the API, and a join admitted by this agent's listener, each fire once with the token id; a
 * refused join and a failed API call fire nothing; a throwing listener does not break the API.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { MeshHandle } from '../../mesh/api.ts';
import { generateIdentity } from '../../mesh/crypto.ts';
import { ApiClient } from '../../src/api/client.ts';
import { ApiServer } from '../../src/api/server.ts';
import { JoinError, joinMesh } from '../../src/token/join-client.ts';
import { startTokenService } from '../../src/token/service.ts';
import { FakeMember } from './fake-mesh.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

/** A seed's state dir, identity, fake mesh member and local API socket, all removed after the test. */
async function seedA() {
  const dir = await mkdtemp(join(tmpdir(), 'wtk2-events-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const identity = generateIdentity();
  const mesh = new FakeMember('seed-a', Buffer.from(identity.publicKey).toString('base64'), Date.now);
  const api = new ApiServer({ logger: pino({ level: 'silent' }) });
  await api.listenUnix(join(dir, 'weft.sock'));
  cleanups.push(() => api.close());
  return { dir, identity, mesh, api };
}

describe('token service change events', () => {
  it('fire on create, revoke and an admitted join, not on refusals', async () => {
    const { dir, identity, mesh, api } = await seedA();
    const svc = await startTokenService({ name: 'seed-a', mesh: mesh as unknown as MeshHandle, identitySeed: identity.seed, meshKey: new Uint8Array(32).fill(4), api, logger: pino({ level: 'silent' }), listenAddr: '127.0.0.1', joinPort: 0, confirmWindowMs: 0 });
    cleanups.push(() => svc.close());
    // joinPort 0 = no listener in the service; the events of an admitted join come from a listener, tested below.
    const events: string[] = [];
    svc.onTokensChanged((e) => events.push(`${e.kind}:${e.id}`));
    svc.onTokensChanged(() => {
      throw new Error('a broken listener');
    });
    const client = new ApiClient({ socketPath: join(dir, 'weft.sock') });
    const { id } = await client.post<{ id: string }>('/v1/token/create', { ttl: '1h', seeds: ['127.0.0.1:1'] });
    await client.post('/v1/token/revoke', { id });
    await expect(client.post('/v1/token/revoke', { id: 'zzzzzzzz' })).rejects.toThrow(/no token/);
    await expect(client.post('/v1/token/create', { ttl: '1h', uses: 0, seeds: ['127.0.0.1:1'] })).rejects.toThrow(/uses/);
    expect(events).toEqual([`created:${id}`, `revoked:${id}`]);
  });

  it('a join admitted by the listener fires "redeemed"; a refused one does not', async () => {
    const { dir, identity, mesh, api } = await seedA();
    // A real listener on an ephemeral loopback port: find a free one first (the service binds the given port).
    const { createServer } = await import('node:net');
    const probe = createServer();
    const port = await new Promise<number>((r) => probe.listen(0, '127.0.0.1', () => r((probe.address() as { port: number }).port)));
    await new Promise((r) => probe.close(r));
    const svc = await startTokenService({ name: 'seed-a', mesh: mesh as unknown as MeshHandle, identitySeed: identity.seed, meshKey: new Uint8Array(32).fill(4), api, logger: pino({ level: 'silent' }), listenAddr: '127.0.0.1', joinPort: port, confirmWindowMs: 0, clusterCIDRs: ['10.244.0.0/16'] });
    cleanups.push(() => svc.close());
    const events: string[] = [];
    svc.onTokensChanged((e) => events.push(`${e.kind}:${e.id}`));
    const { token, id } = svc.admitter.create({ ttlMs: 60_000, uses: 1 });
    const refused = await joinMesh({ token, name: 'edge-1', identity: generateIdentity(), podCIDRs: ['10.99.0.0/24'] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(JoinError);
    expect((refused as JoinError).code).toBe('cidr-outside');
    expect(events).toEqual([]);
    await joinMesh({ token, name: 'edge-1', identity: generateIdentity() });
    expect(events).toEqual([`redeemed:${id}`]);
  });
});
