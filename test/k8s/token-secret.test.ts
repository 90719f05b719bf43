/**
 * The join-token Secret mirror (issue 7) through the REAL @kubernetes/client-node against the in-process
 * fake API server: write-through on create/revoke, periodic resync of other members' tokens, the 409 path,
 * concurrent writers converging, read-back after a whole-mesh restart (the restored token really admits a
 * joiner), pruning, the size bound, a missing Secret, and the API server down.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { generateIdentity } from '../../mesh/crypto.ts';
import { Admitter } from '../../src/token/admit.ts';
import { JoinServer } from '../../src/token/join-server.ts';
import { joinMesh } from '../../src/token/join-client.ts';
import { collectTokens, listTokens, tokenEntryWrite, tokenRevocationWrite } from '../../src/token/store.ts';
import { decodeMirror, mirrorKey, mirrorSealKey, parseMirrored } from '../../src/token/mirror.ts';
import { parseToken, tokenVerifier } from '../../src/token/token.ts';
import { Registry } from 'prom-client';
import { TokenSecretMirror, agentNamespace, registerTokenMirrorMetrics, secretTransport, startAgentTokenMirror, startTokenSecretMirror } from '../../src/k8s/token-secret.ts';
import type { Clock } from '../../src/k8s/clock.ts';
import { FakeApiServer } from './fake-apiserver.ts';
import { FakeMember, sync } from '../token/fake-mesh.ts';

const NS = 'weft';
const NAME = 'weft-join-tokens';
const MESH_KEY = new Uint8Array(32).fill(42);
const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const silent = pino({ level: 'silent' });

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

/** Virtual wall time (settable) with timers 1000x faster than real time. */
function testClock(start = 1_800_000_000_000): Clock & { t: number } {
  const c = {
    t: start,
    now: () => c.t,
    setTimer(fn: () => void, ms: number) {
      const h = setTimeout(fn, ms / 1000);
      return { cancel: () => clearTimeout(h) };
    },
  };
  return c;
}

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function fakeApi(opts: { precreate?: boolean } = {}): Promise<FakeApiServer> {
  const api = await FakeApiServer.start();
  cleanups.push(() => api.close());
  if (opts.precreate !== false) api.putSecret(NS, NAME, undefined, { metadata: { name: NAME, labels: { 'app.kubernetes.io/name': 'weft' } } });
  return api;
}

function member(name: string, clock: { now(): number }) {
  const identity = generateIdentity();
  const mesh = new FakeMember(name, b64(identity.publicKey), () => clock.now());
  const admitter = new Admitter({ mesh, self: { name, identity }, meshKey: MESH_KEY, clock: () => clock.now(), sleep: async () => {}, joinAddresses: () => ['192.0.2.1:7947'] });
  return { name, identity, mesh, admitter };
}

function mirrorFor(api: FakeApiServer, m: ReturnType<typeof member>, clock: Clock, extra: Partial<ConstructorParameters<typeof TokenSecretMirror>[0]> = {}): TokenSecretMirror {
  const mirror = new TokenSecretMirror({
    transport: secretTransport(api.kubeConfig(), NS, NAME),
    mesh: m.mesh,
    self: m.name,
    meshKeys: () => [MESH_KEY],
    logger: silent,
    clock,
    random: () => 0.5,
    backoff: { initialMs: 100, maxMs: 2000 },
    restoreDelayMs: 3_600_000,
    resyncMs: 3_600_000,
    ...extra,
  });
  cleanups.push(() => mirror.stop());
  return mirror;
}

const secretData = (api: FakeApiServer): Record<string, string> => ((api.getSecret(NS, NAME) as { data?: Record<string, string> } | undefined)?.data ?? {});
const tokenIn = (api: FakeApiServer, id: string) => {
  const v = secretData(api)[mirrorKey(id)];
  return v === undefined ? undefined : parseMirrored(mirrorKey(id), v);
};

describe('token Secret mirror (real client, fake API server)', () => {
  it('write-through: a created token appears, a revoke is mirrored; the Secret holds nothing that admits anyone', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    const mirror = mirrorFor(api, a, clock);
    mirror.start();
    await mirror.idle();
    const { token, id } = a.admitter.create({ ttlMs: 3600_000, uses: 2, description: 'edge box' });
    mirror.trigger('token-created');
    await mirror.idle();
    expect(tokenIn(api, id)).toMatchObject({ id, issuedBy: 'node-a', uses: 2, spent: 0, description: 'edge box', redeemedBy: [] });
    expect(tokenIn(api, id)!.revoked).toBeUndefined();
    // Neither the secret nor the verifier is in the Secret, in any encoding; the sealed verifier opens only with the mesh key.
    const parsed = parseToken(token);
    const verifier = tokenVerifier(id, parsed.secret);
    const blob = JSON.stringify(api.getSecret(NS, NAME)) + Object.values(secretData(api)).map((v) => Buffer.from(v, 'base64').toString('utf8')).join('');
    for (const needle of [parsed.secret, b64(verifier), Buffer.from(verifier).toString('hex'), token]) expect(blob).not.toContain(needle);
    expect(decodeMirror(secretData(api), [mirrorSealKey(new Uint8Array(32).fill(1))]).tokens.get(id)!.verifier).toBeUndefined();
    expect(Buffer.from(decodeMirror(secretData(api), [mirrorSealKey(MESH_KEY)]).tokens.get(id)!.verifier!).equals(Buffer.from(verifier))).toBe(true);
    // Labels and other metadata survive the replace.
    expect((api.getSecret(NS, NAME)!.metadata as { labels?: Record<string, string> }).labels).toEqual({ 'app.kubernetes.io/name': 'weft' });

    a.admitter.revoke(id);
    mirror.trigger('token-revoked');
    await mirror.idle();
    expect(tokenIn(api, id)!.revoked).toMatchObject({ by: 'node-a' });
    // Nothing changed: the next sync writes nothing.
    const puts = api.requests.filter((r) => r.method === 'PUT').length;
    expect(await mirror.syncNow()).toBe('unchanged');
    expect(api.requests.filter((r) => r.method === 'PUT').length).toBe(puts);
    expect(mirror.stats).toMatchObject({ errors: 0, conflicts: 0 });
  });

  it("periodic resync mirrors other members' tokens and their spent uses", async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    const b = member('node-b', clock);
    const mirror = mirrorFor(api, a, clock, { resyncMs: 2000 });
    mirror.start();
    await mirror.idle();
    const { id } = b.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const r = await b.admitter.redeem(id, { name: 'edge-1', identityKey: b64(generateIdentity().publicKey) });
    expect(r.ok).toBe(true);
    sync(a.mesh, b.mesh);
    // No trigger: the periodic resync (2 s virtual = 2 ms real) picks it up.
    await until('resync mirrors node-b token', () => tokenIn(api, id) !== undefined);
    expect(tokenIn(api, id)).toMatchObject({ issuedBy: 'node-b', spent: 1, redeemedBy: ['edge-1'] });
  });

  it('409: the Secret changed between read and write; the writer re-reads, merges and keeps both', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    const b = member('node-b', clock);
    const mirrorA = mirrorFor(api, a, clock);
    const mirrorB = mirrorFor(api, b, clock);
    const { id: idB } = b.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const { id: idA } = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    // Another writer changes the Secret right before node-a's PUT is applied (it read an older resourceVersion).
    api.beforeSecretWrite = () => {
      api.beforeSecretWrite = undefined;
      const enc = decodeMirror(secretData(api), [mirrorSealKey(MESH_KEY)]);
      expect(enc.tokens.size).toBe(0);
      api.putSecret(NS, NAME, { ...secretData(api), [mirrorKey('zzzzzzzz')]: 'not json' });
    };
    expect(await mirrorA.syncNow()).toBe('written');
    expect(mirrorA.stats.conflicts).toBe(1);
    expect(api.requests.filter((r) => r.method === 'PUT').map((r) => r.status)).toEqual([409, 200]);
    // The malformed key another writer left is dropped and counted; node-a's token is in.
    expect(secretData(api)[mirrorKey('zzzzzzzz')]).toBeUndefined();
    expect(mirrorA.stats.malformed).toBeGreaterThan(0);
    expect(tokenIn(api, idA)).toBeDefined();
    // Two writers that never gossiped converge on the union, then write nothing.
    await Promise.all([mirrorA.syncNow(), mirrorB.syncNow(), mirrorA.syncNow(), mirrorB.syncNow()]);
    expect(tokenIn(api, idA)).toBeDefined();
    expect(tokenIn(api, idB)).toBeDefined();
    expect(await mirrorA.syncNow()).toBe('unchanged');
    expect(await mirrorB.syncNow()).toBe('unchanged');
  });

  it('a writer that keeps losing gives up after the retry bound, counts it and retries later with backoff', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const mirror = mirrorFor(api, a, clock, { maxConflictRetries: 2 });
    let bumps = 0;
    api.beforeSecretWrite = () => {
      if (bumps++ < 3) api.putSecret(NS, NAME, secretData(api));
    };
    await expect(mirror.syncNow()).rejects.toThrow(/kept changing: 3 conflicting writes/);
    // Through the loop: the failure is counted and retried until it lands.
    mirror.start();
    await until('the mirror recovers', () => mirror.stats.writes > 0);
    expect(mirror.stats.conflicts).toBeGreaterThanOrEqual(3);
  });

  it('read-back after a whole-mesh restart re-publishes live tokens with their id, expiry, uses and issuer; the original token string still joins', async () => {
    const api = await fakeApi();
    const clock = testClock(Date.now());
    const a = member('node-a', clock);
    const live = a.admitter.create({ ttlMs: 3600_000, uses: 3, description: 'two left' });
    const revoked = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const spent = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const short = a.admitter.create({ ttlMs: 60_000, uses: 1 });
    expect((await a.admitter.redeem(live.id, { name: 'edge-0', identityKey: b64(generateIdentity().publicKey) })).ok).toBe(true);
    expect((await a.admitter.redeem(spent.id, { name: 'edge-9', identityKey: b64(generateIdentity().publicKey) })).ok).toBe(true);
    a.admitter.revoke(revoked.id);
    const before = listTokens(a.mesh.snapshot(), clock.now()).find((t) => t.id === live.id)!;
    await mirrorFor(api, a, clock).syncNow();
    expect(Object.keys(secretData(api))).toHaveLength(4);

    // The whole mesh restarts: a fresh member with no token state (same mesh key), some time later.
    clock.t += 120_000;
    const c = member('node-c', clock);
    const mirrorC = mirrorFor(api, c, clock);
    const plan = await mirrorC.restoreNow();
    expect(plan.restoredIds).toEqual([live.id]);
    expect(Object.fromEntries(plan.skipped)).toEqual({ [revoked.id]: 'revoked by node-a', [spent.id]: 'used up', [short.id]: 'expired' });
    expect(mirrorC.stats.restored).toBe(1);
    // Idempotent: what the mesh now knows (its own restored copy) is not published again.
    expect((await mirrorC.restoreNow()).restoredIds).toEqual([]);
    const after = listTokens(c.mesh.snapshot(), clock.now());
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ id: live.id, issuedBy: 'node-a', restoredBy: 'node-c', createdAt: before.createdAt, expiresAt: before.expiresAt, uses: 3, usesLeft: 2, status: 'valid', description: 'two left' });

    // The original token string is redeemed at the restarted mesh through a real handshake.
    const server = new JoinServer({ admitter: c.admitter, identity: c.identity, logger: silent, clock: () => clock.now() });
    cleanups.push(() => server.close());
    const port = await server.listen('127.0.0.1', 0);
    const identity = generateIdentity();
    const grant = await joinMesh({ token: { ...parseToken(live.token), seeds: [`127.0.0.1:${port}`] }, name: 'edge-1', identity });
    expect(grant.admission).toMatchObject({ name: 'edge-1', tokenId: live.id, admittedBy: 'node-c' });
    expect(collectTokens(c.mesh.snapshot()).get(live.id)!.usesLeft).toBe(1);
    // The Secret keeps counting: spent 2 of 3 after the next sync, and the restored copy is mirrored as the original.
    await mirrorC.syncNow();
    expect(tokenIn(api, live.id)).toMatchObject({ issuedBy: 'node-a', uses: 3, spent: 2 });
    expect(tokenIn(api, short.id)).toBeUndefined(); // pruned (expired)
  });

  it("the periodic resync re-publishes a token whose issuer left the mesh (its entries went with it)", async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    const b = member('node-b', clock);
    const { id } = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    sync(a.mesh, b.mesh);
    const mirrorB = mirrorFor(api, b, clock, { resyncMs: 2000 });
    await mirrorB.syncNow();
    expect(tokenIn(api, id)).toMatchObject({ issuedBy: 'node-a' });
    // node-a leaves: node-b no longer holds any of its entries; the read-back at start (an hour away) has not run.
    b.mesh.view.delete('node-a');
    expect(collectTokens(b.mesh.snapshot()).has(id)).toBe(false);
    mirrorB.start();
    await until('node-b re-publishes the token', () => collectTokens(b.mesh.snapshot()).get(id)?.entry.restoredBy === 'node-b');
    expect(listTokens(b.mesh.snapshot(), clock.now())[0]).toMatchObject({ id, issuedBy: 'node-a', status: 'valid', usesLeft: 1 });
  });

  it('read-back re-publishes a revocation the mesh lost for a token it still knows, and restores nothing the mesh has', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    const t = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    // Revoked by node-b, mirrored; then node-b restarts and its revocation entry is gone from the mesh.
    const w = tokenRevocationWrite({ format: 1, id: t.id, revokedAt: clock.now(), by: 'node-b' }, t.expiresAt);
    const b = member('node-b', clock);
    b.mesh.setLocal(w.key, w.payload, w.ttlMs);
    sync(a.mesh, b.mesh);
    await mirrorFor(api, a, clock).syncNow();
    expect(tokenIn(api, t.id)!.revoked).toMatchObject({ by: 'node-b' });
    const fresh = member('node-a', clock);
    fresh.mesh.view.get('node-a')!.entries.set(`token/${t.id}`, a.mesh.view.get('node-a')!.entries.get(`token/${t.id}`)!);
    expect(collectTokens(fresh.mesh.snapshot()).get(t.id)!.revoked).toBeUndefined();
    const plan = await mirrorFor(api, fresh, clock).restoreNow();
    expect(plan).toMatchObject({ restoredIds: [], revokedIds: [t.id] });
    expect(collectTokens(fresh.mesh.snapshot()).get(t.id)!.revoked).toMatchObject({ by: 'node-a' });
  });

  it('prunes expired tokens and bounds the size: used-up, then revoked, then soonest-expiring tokens are left out', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(a.admitter.create({ ttlMs: 3600_000 + i * 60_000, uses: 1 }).id);
    const doomed = a.admitter.create({ ttlMs: 10_000, uses: 1 }).id;
    const mirror = mirrorFor(api, a, clock);
    await mirror.syncNow();
    expect(tokenIn(api, doomed)).toBeDefined();
    clock.t += 11_000;
    await mirror.syncNow();
    expect(tokenIn(api, doomed)).toBeUndefined();
    expect(mirror.stats.pruned).toBe(1);

    // Room for about three tokens.
    const one = Object.entries(secretData(api))[0]!;
    const small = mirrorFor(api, a, clock, { maxBytes: 3 * (one[0].length + one[1].length) + 50 });
    a.admitter.revoke(ids[5]!);
    expect((await a.admitter.redeem(ids[4]!, { name: 'x', identityKey: b64(generateIdentity().publicKey) })).ok).toBe(true);
    api.putSecret(NS, NAME, {});
    await small.syncNow();
    const kept = Object.keys(secretData(api)).sort();
    // Dropped: ids[4] (used up), ids[5] (revoked), ids[0] (soonest to expire of the valid ones).
    expect(kept).toEqual([ids[1]!, ids[2]!, ids[3]!].map(mirrorKey).sort());
    expect(small.stats.droppedForSize).toBe(3);
    // Stable: the same bound gives the same content, no write.
    expect(await small.syncNow()).toBe('unchanged');
  });

  it('never exceeds what the API server accepts, with 1,400 large tokens', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    // Published directly (Admitter.create re-reads the whole token set each time, which is slow at this count).
    for (let i = 0; i < 1400; i++) {
      const id = `t${String(i).padStart(7, '0')}`;
      const w = tokenEntryWrite({ format: 1, id, verifier: b64(tokenVerifier(id, 'a'.repeat(24))), createdAt: clock.now(), expiresAt: clock.now() + 3600_000 + i, uses: 1000, issuedBy: 'node-a', description: 'x'.repeat(256) }, clock.now());
      a.mesh.setLocal(w.key, w.payload, w.ttlMs);
    }
    const mirror = mirrorFor(api, a, clock);
    expect(await mirror.syncNow()).toBe('written');
    const bytes = Object.entries(secretData(api)).reduce((n, [k, v]) => n + k.length + v.length, 0);
    expect(bytes).toBeLessThanOrEqual(900 * 1024);
    expect(mirror.stats.droppedForSize).toBeGreaterThan(0);
    expect(Object.keys(secretData(api)).length + mirror.stats.droppedForSize).toBe(1400);
  });

  it('a missing Secret is an error (retried) unless create is allowed; then it is created once', async () => {
    const api = await fakeApi({ precreate: false });
    const clock = testClock();
    const a = member('node-a', clock);
    const { id } = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    await expect(mirrorFor(api, a, clock).syncNow()).rejects.toMatchObject({ name: 'TokenSecretError', status: 404 });
    const creating = mirrorFor(api, a, clock, { createIfMissing: true });
    expect(await creating.syncNow()).toBe('created');
    expect(tokenIn(api, id)).toBeDefined();
    expect(await creating.syncNow()).toBe('unchanged');
  });

  it('API server down: no crash, failures counted and retried with backoff, written once it is back', async () => {
    const api = await fakeApi();
    const clock = testClock();
    const a = member('node-a', clock);
    await api.down();
    const lines: string[] = [];
    const mirror = mirrorFor(api, a, clock, { restoreDelayMs: 0, logger: pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) }) });
    const logged = () => lines.map((l) => JSON.parse(l) as { level: number; msg: string });
    mirror.start();
    const { id } = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    mirror.trigger('token-created');
    await until('several failed attempts', () => mirror.stats.errors >= 3);
    expect(mirror.stats.lastError).toMatch(/token secret/);
    expect(mirror.stats.restoredOnce).toBe(false);
    await api.up();
    await until('written after the API server is back', () => tokenIn(api, id) !== undefined);
    // The server stores the write before the client has read the answer: wait for the mirror's own view.
    await until('the mirror saw its write succeed', () => mirror.stats.writes > 0);
    expect(mirror.stats.restoredOnce).toBe(true);
    expect(mirror.stats.lastError).toBeUndefined();
    // One warning for the outage (later identical failures at debug), one line when it recovered.
    expect(logged().filter((l) => l.level === 40).map((l) => l.msg)).toEqual(['token secret sync failed; retrying with backoff']);
    expect(logged().filter((l) => l.msg === 'token secret sync recovered')).toHaveLength(1);
  });

  it('startTokenSecretMirror finds its namespace and Secret name from the environment', async () => {
    expect(agentNamespace({ POD_NAMESPACE: 'kube-weft' })).toBe('kube-weft');
    expect(agentNamespace({ WEFT_NAMESPACE: 'a', POD_NAMESPACE: 'b' })).toBe('a');
    expect(agentNamespace({}, () => 'from-sa\n')).toBe('from-sa');
    expect(agentNamespace({}, () => {
      throw new Error('no file');
    })).toBe('weft');
    const api = await FakeApiServer.start();
    cleanups.push(() => api.close());
    api.putSecret('other-ns', 'my-tokens', {});
    const clock = testClock();
    const a = member('node-a', clock);
    const { id } = a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const mirror = startTokenSecretMirror({ kubeConfig: api.kubeConfig(), env: { POD_NAMESPACE: 'other-ns' }, secretName: 'my-tokens', mesh: a.mesh, self: 'node-a', meshKeys: () => [MESH_KEY], logger: silent, clock, restoreDelayMs: 3_600_000 });
    cleanups.push(() => mirror.stop());
    await until('first sync', () => mirror.stats.writes === 1);
    expect(Object.keys((api.getSecret('other-ns', 'my-tokens') as unknown as { data: Record<string, string> }).data)).toEqual([mirrorKey(id)]);
  });

  it('the agent entry point is off without Kubernetes, and exports its counters as metrics', async () => {
    const clock = testClock();
    const a = member('node-a', clock);
    const base = { mesh: a.mesh, self: 'node-a', meshKeys: () => [MESH_KEY], logger: silent, clock };
    expect(startAgentTokenMirror({ ...base, kubeconfig: undefined, env: {} })).toBeUndefined();
    const api = await fakeApi();
    a.admitter.create({ ttlMs: 3600_000, uses: 1 });
    const mirror = mirrorFor(api, a, clock);
    await mirror.syncNow();
    await mirror.syncNow();
    const registry = new Registry();
    registerTokenMirrorMetrics(registry, mirror);
    const text = await registry.metrics();
    expect(text).toContain('weft_token_secret_syncs_total{result="written"} 1');
    expect(text).toContain('weft_token_secret_syncs_total{result="unchanged"} 1');
    expect(text).toContain('weft_token_secret_dropped_tokens 0');
  });
});
