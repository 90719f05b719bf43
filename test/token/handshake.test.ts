import { afterEach, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { pino } from 'pino';
import { generateIdentity } from '../../mesh/crypto.ts';
import { Admitter } from '../../src/token/admit.ts';
import { JoinError, joinMesh } from '../../src/token/join-client.ts';
import { JoinServer, SourceRateLimiter } from '../../src/token/join-server.ts';
import { makeRequest, openRequest, sealRequest, verifyAdmission, HandshakeError } from '../../src/token/handshake.ts';
import { formatToken, parseToken, randomTokenSecret } from '../../src/token/token.ts';
import nacl from 'tweetnacl';
import { FakeMember, sync } from './fake-mesh.ts';

const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const servers: JoinServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

interface Seed {
  server: JoinServer;
  admitter: Admitter;
  mesh: FakeMember;
  port: number;
  audit: Record<string, unknown>[];
  setNow(t: number): void;
}

async function startSeed(opts: { meshKey?: Uint8Array | (() => Uint8Array); limiter?: SourceRateLimiter; name?: string; joinAddrs?: () => string[]; clusterCIDRs?: string[] } = {}): Promise<Seed> {
  let now = Date.now();
  const meshKey = opts.meshKey ?? new Uint8Array(32).fill(5);
  const identity = generateIdentity();
  const name = opts.name ?? 'seed-a';
  const mesh = new FakeMember(name, b64(identity.publicKey), () => now, '192.0.2.1');
  const audit: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void audit.push(JSON.parse(s) as Record<string, unknown>) });
  let port = 0;
  const admitter = new Admitter({ mesh, self: { name, identity }, meshKey, clock: () => now, sleep: async () => {}, joinAddresses: opts.joinAddrs ?? (() => [`127.0.0.1:${port}`]), ...(opts.clusterCIDRs ? { clusterCIDRs: opts.clusterCIDRs } : {}) });
  const server = new JoinServer({ admitter, identity, logger, clock: () => now, rateLimiter: opts.limiter });
  servers.push(server);
  port = await server.listen('127.0.0.1', 0);
  return { server, admitter, mesh, port, audit: audit, setNow: (t) => (now = t) };
}

const joiner = () => {
  const identity = generateIdentity();
  return { name: `joiner-${Math.random().toString(36).slice(2, 8)}`, identity, identityKey: b64(identity.publicKey) };
};

async function refusal(p: Promise<unknown>): Promise<JoinError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(JoinError);
    return err as JoinError;
  }
  throw new Error('join unexpectedly succeeded');
}

const audits = (s: Seed) => s.audit.filter((l) => l.audit === true);

describe('join handshake over loopback', () => {
  it('admits a joiner: mesh key, signed admission, seeds, audit line; the secret never crosses the wire', async () => {
    const seed = await startSeed();
    const { token, id } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const j = joiner();
    const grant = await joinMesh({ token, ...j });
    expect(Buffer.from(grant.meshKey).equals(Buffer.from(new Uint8Array(32).fill(5)))).toBe(true);
    expect(grant.admission).toMatchObject({ name: j.name, identityKey: j.identityKey, tokenId: id, admittedBy: 'seed-a' });
    expect(verifyAdmission(grant.admissionJson, grant.admissionSig, grant.admitterKey)).toEqual(grant.admission);
    expect(verifyAdmission(grant.admissionJson.replace(j.name, 'evil'), grant.admissionSig, grant.admitterKey)).toBeUndefined();
    expect(grant.admitterKey).toBe(seed.mesh.identityKey);
    expect(grant.seeds).toEqual(['192.0.2.1:7946']);
    expect(audits(seed)).toMatchObject([{ event: 'join-accepted', tokenId: id, joiner: j.name, source: '127.0.0.1' }]);
    // The token (secret included) is nowhere in the logs; the admission is in the mesh.
    expect(JSON.stringify(seed.audit)).not.toContain(parseToken(token).secret);
    expect(seed.mesh.snapshot().members[0]!.entries.has(`admission/${j.name}`)).toBe(true);
  });

  it('a spent single-use token, captured and replayed after the join, gives nothing', async () => {
    const seed = await startSeed();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    await joinMesh({ token, ...joiner() });
    const e = await refusal(joinMesh({ token, ...joiner() }));
    expect(e.code).toBe('spent');
    expect(e.message).toMatch(/used up/);
    expect(audits(seed).at(-1)).toMatchObject({ event: 'join-refused', reason: 'spent' });
  });

  it('a revoked token is refused', async () => {
    const seed = await startSeed();
    const { token, id } = seed.admitter.create({ ttlMs: 60_000, uses: 3 });
    seed.admitter.revoke(id);
    const e = await refusal(joinMesh({ token, ...joiner() }));
    expect(e.code).toBe('revoked');
    expect(audits(seed).at(-1)).toMatchObject({ event: 'join-refused', reason: 'revoked', tokenId: id });
  });

  it('an expired token is refused by the joiner itself, and by the seed when the clocks disagree', async () => {
    const seed = await startSeed();
    const t0 = Date.now();
    const { token, expiresAt } = seed.admitter.create({ ttlMs: 5_000, uses: 1 });
    const local = await refusal(joinMesh({ token, ...joiner(), clock: () => expiresAt + 1 }));
    expect(local.code).toBe('expired');
    expect(audits(seed)).toHaveLength(0);
    seed.setNow(t0 + 10_000);
    const remote = await refusal(joinMesh({ token, ...joiner(), clock: () => t0 }));
    expect(remote.code).toBe('expired');
    expect(remote.message).toMatch(/the mesh refused the token: token \w+ expired/);
    expect(audits(seed).at(-1)).toMatchObject({ event: 'join-refused', reason: 'expired' });
  });

  it('a malformed or tampered token is refused before dialling', async () => {
    const seed = await startSeed();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const pos = token.length - 10;
    const tampered = token.slice(0, pos) + (token[pos] === 'A' ? 'B' : 'A') + token.slice(pos + 1);
    expect((await refusal(joinMesh({ token: tampered, ...joiner() }))).code).toBe('malformed');
    expect((await refusal(joinMesh({ token: 'hello', ...joiner() }))).code).toBe('malformed');
    expect(audits(seed)).toHaveLength(0);
  });

  it('a forged token (real id, guessed secret, valid checksum) is refused and audited; the real token still works', async () => {
    const seed = await startSeed();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const real = parseToken(token);
    const forged = formatToken({ ...real, secret: randomTokenSecret() });
    const e = await refusal(joinMesh({ token: forged, ...joiner() }));
    expect(e.code).toBe('forged');
    expect(audits(seed).at(-1)).toMatchObject({ event: 'join-refused', reason: 'forged' });
    await joinMesh({ token, ...joiner() });
  });

  it('an unknown token id is refused', async () => {
    const seed = await startSeed();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const unknown = formatToken({ ...parseToken(token), id: 'zzzzzzzz' });
    expect((await refusal(joinMesh({ token: unknown, ...joiner() }))).code).toBe('unknown');
  });

  it('a seed that is not the mesh (other mesh key) is not trusted; the next seed is tried', async () => {
    const real = await startSeed();
    const impostor = await startSeed({ meshKey: new Uint8Array(32).fill(6), name: 'impostor' });
    const { token } = real.admitter.create({ ttlMs: 60_000, uses: 1, seeds: [`127.0.0.1:${impostor.port}`] });
    // Only the impostor listed: the joiner refuses it (it cannot sign as the token's mesh authority).
    const e = await refusal(joinMesh({ token, ...joiner() }));
    expect(e.code).toBe('not-mesh');
    const both = real.admitter.create({ ttlMs: 60_000, uses: 1, seeds: [`127.0.0.1:${impostor.port}`, `127.0.0.1:${real.port}`] });
    const grant = await joinMesh({ token: both.token, ...joiner() });
    expect(grant.seed).toBe(`127.0.0.1:${real.port}`);
  });

  it('an unreachable seed is skipped, and none reachable is a clear error', async () => {
    const seed = await startSeed();
    const dead = await startSeed();
    const deadPort = dead.port;
    await dead.server.close();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 2, seeds: [`127.0.0.1:${deadPort}`] });
    const e = await refusal(joinMesh({ token, ...joiner() }));
    expect(e.code).toBe('unreachable');
    expect(e.message).toMatch(/cannot connect/);
  });

  it('joins are rate-limited per source', async () => {
    const seed = await startSeed({ limiter: new SourceRateLimiter({ burst: 2, refillMs: 3600_000 }) });
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 10 });
    await joinMesh({ token, ...joiner() });
    await joinMesh({ token, ...joiner() });
    const e = await refusal(joinMesh({ token, ...joiner() }));
    expect(e.code).toBe('rate-limited');
    expect(audits(seed).at(-1)).toMatchObject({ event: 'join-refused', reason: 'rate-limited' });
    expect(seed.server.stats).toMatchObject({ accepted: 2, rateLimited: 1 });
  });

  it('survives hostile input: garbage, oversized frames, half handshakes', async () => {
    const seed = await startSeed({ limiter: new SourceRateLimiter({ burst: 6, refillMs: 3600_000 }) });
    const send = (bytes: Buffer) =>
      new Promise<Buffer>((resolve) => {
        const s = connect({ host: '127.0.0.1', port: seed.port }, () => s.end(bytes));
        const chunks: Buffer[] = [];
        s.on('data', (c) => chunks.push(c));
        s.on('close', () => resolve(Buffer.concat(chunks)));
        s.on('error', () => resolve(Buffer.concat(chunks)));
      });
    await send(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    await send(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    const json = (o: unknown) => {
      const b = Buffer.from(JSON.stringify(o));
      const h = Buffer.alloc(4);
      h.writeUInt32BE(b.length);
      return Buffer.concat([h, b]);
    };
    await send(json({ t: 'hello', v: 2, id: 'abcd1234' }));
    await send(json({ t: 'admit', box: 'x' }));
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const id = parseToken(token).id;
    const half = await send(json({ t: 'hello', v: 1, id, eph: b64(new Uint8Array(32).fill(1)), nonce: b64(new Uint8Array(32).fill(2)) }));
    expect(half.length).toBeGreaterThan(0); // it got the challenge, then the connection ended
    expect(seed.server.stats.errors).toBeGreaterThanOrEqual(3);
    // Still serving, and the token is unspent; garbage counted against the source's rate.
    await joinMesh({ token, ...joiner() });
    expect((await refusal(joinMesh({ token, ...joiner() }))).code).toBe('rate-limited');
  });

  it('a joiner whose grant was lost can retry with the same identity; another identity with the same name cannot', async () => {
    const seed = await startSeed();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const j = joiner();
    const first = await joinMesh({ token, ...j });
    const retry = await joinMesh({ token, ...j });
    expect(retry.admission).toMatchObject({ name: j.name, identityKey: j.identityKey });
    expect(Buffer.from(retry.meshKey).equals(Buffer.from(first.meshKey))).toBe(true);
    const thief = { ...joiner(), name: j.name };
    expect((await refusal(joinMesh({ token, ...thief }))).code).toBe('spent');
  });
});

describe('pod CIDRs in the handshake', () => {
  it('an overlapping --pod-cidr is refused by the seed with both CIDRs and the holder, audited, and the token is not spent', async () => {
    const seed = await startSeed({ clusterCIDRs: ['10.244.0.0/16'] });
    const holder = new FakeMember('cloud1-b', b64(generateIdentity().publicKey), () => Date.now());
    holder.setLocal('node', Buffer.from(JSON.stringify({ format: 1, name: 'cloud1-b', wgPublicKey: b64(nacl.box.keyPair().publicKey), listenPort: 51820, endpoints: ['192.0.2.9:51820'], meshIP: '10.244.0.1', podCIDRs: ['10.244.0.0/23'], claimedAt: 5, keepalive: 0 })));
    sync(holder, seed.mesh);
    const { token, id } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const j = joiner();
    const e = await refusal(joinMesh({ token, ...j, podCIDRs: ['10.244.1.0/24'] }));
    expect(e.code).toBe('cidr-overlap');
    expect(e.message).toContain('pod CIDR 10.244.1.0/24 overlaps 10.244.0.0/23, already held by node cloud1-b');
    expect(e.message).toContain('the token was not spent');
    expect(audits(seed).at(-1)).toMatchObject({ event: 'join-refused', reason: 'cidr-overlap', tokenId: id, joiner: j.name, mine: '10.244.1.0/24', theirs: '10.244.0.0/23', holder: 'cloud1-b' });
    const outside = await refusal(joinMesh({ token, ...j, podCIDRs: ['192.168.0.0/24'] }));
    expect(outside.code).toBe('cidr-outside');
    expect(outside.message).toMatch(/192\.168\.0\.0\/24 is outside the mesh's cluster CIDR 10\.244\.0\.0\/16/);
    // Not spent: the same single-use token admits the joiner with a free block.
    const grant = await joinMesh({ token, ...j, podCIDRs: ['10.244.2.0/24'] });
    expect(grant.admission.name).toBe(j.name);
    expect(seed.admitter.list()[0]).toMatchObject({ id, usesLeft: 0, redeemedBy: [j.name] });
  });

  it('a malformed pod CIDR list inside the sealed request is a bad request, not a crash', async () => {
    const seed = await startSeed();
    const { token } = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    const e = await refusal(joinMesh({ token, ...joiner(), podCIDRs: ['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24'] }));
    expect(e.code).toBe('bad-request');
    expect(e.message).toMatch(/at most 2/);
    expect((await joinMesh({ token, ...joiner() })).admission).toBeDefined();
  });
});

describe('identity proof', () => {
  it('the seed refuses a request for an identity key the joiner does not hold', () => {
    const th = new Uint8Array(32).fill(1);
    const key = new Uint8Array(32).fill(2);
    const mine = generateIdentity();
    const other = generateIdentity();
    const honest = makeRequest(th, 'edge', mine);
    expect(openRequest(key, sealRequest(key, honest), th)).toEqual(honest);
    const stolen = { ...honest, identityKey: b64(other.publicKey) };
    expect(() => openRequest(key, sealRequest(key, stolen), th)).toThrow(HandshakeError);
    // A proof from another session (other transcript) does not verify either.
    expect(() => openRequest(key, sealRequest(key, honest), new Uint8Array(32).fill(9))).toThrow(/does not hold/);
    // Wrong session key: the box does not open (forged token).
    expect(openRequest(new Uint8Array(32).fill(3), sealRequest(key, honest), th)).toBeUndefined();
  });

  it('mesh-key rotation: joiners get the current key; tokens issued under the previous key still authenticate', async () => {
    const k1 = new Uint8Array(32).fill(21);
    const k2 = new Uint8Array(32).fill(22);
    let current = k1;
    const seed = await startSeed({ meshKey: () => current });
    const old = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    current = k2;
    const fresh = seed.admitter.create({ ttlMs: 60_000, uses: 1 });
    expect(parseToken(fresh.token).fingerprint).not.toEqual(parseToken(old.token).fingerprint);
    const g1 = await joinMesh({ token: old.token, ...joiner() });
    expect(Buffer.from(g1.meshKey).equals(Buffer.from(k2))).toBe(true);
    const g2 = await joinMesh({ token: fresh.token, ...joiner() });
    expect(Buffer.from(g2.meshKey).equals(Buffer.from(k2))).toBe(true);
    // A seed that only ever held k2 cannot answer for a token naming k1's authority.
    const other = await startSeed({ meshKey: k2, name: 'seed-b' });
    current = k1;
    const underK1 = seed.admitter.create({ ttlMs: 60_000, uses: 1, seeds: [`127.0.0.1:${other.port}`] });
    expect((await refusal(joinMesh({ token: underK1.token, ...joiner() }))).code).toBe('not-mesh');
  });
});
