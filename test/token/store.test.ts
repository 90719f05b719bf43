import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { generateIdentity } from '../../mesh/crypto.ts';
import { Admitter, TokenOpError } from '../../src/token/admit.ts';
import {
  collectTokens,
  compareClaims,
  listTokens,
  revokedNodes,
  tokenClaimWrite,
  tokenEntryWrite,
  tokenStatus,
  withoutRevoked,
  type TokenClaim,
} from '../../src/token/store.ts';
import { parseToken, tokenVerifier } from '../../src/token/token.ts';
import { FakeMember, sync } from './fake-mesh.ts';

const meshKey = new Uint8Array(32).fill(3);
const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const key = (n: number) => b64(new Uint8Array(32).fill(n));

function seed(name: string, now: () => number, opts: { sleep?: (ms: number) => Promise<void>; addr?: string } = {}) {
  const id = generateIdentity();
  const mesh = new FakeMember(name, b64(id.publicKey), now, opts.addr);
  const admitter = new Admitter({
    mesh,
    self: { name, identity: id },
    meshKey,
    clock: () => mesh.now(),
    sleep: opts.sleep ?? (async () => {}),
    confirmWindowMs: 10,
    joinAddresses: () => ['192.0.2.1:7947'],
  });
  return { mesh, admitter, id };
}

describe('token store', () => {
  it('publishes only the verifier, lists, and revokes', () => {
    let t = 1_000_000;
    const a = seed('a', () => t);
    const { token, id, expiresAt } = a.admitter.create({ ttlMs: 3600_000, uses: 2, description: 'edge box' });
    const parsed = parseToken(token);
    expect(parsed.id).toBe(id);
    expect(parsed.expiresAt).toBe(expiresAt);
    expect(parsed.seeds).toEqual(['192.0.2.1:7947']);
    // The secret never appears in the mesh; its verifier does.
    const raw = [...a.mesh.view.get('a')!.entries.values()].map((e) => Buffer.from(e.payload).toString()).join('\n');
    expect(raw).not.toContain(parsed.secret);
    expect(raw).toContain(b64(tokenVerifier(id, parsed.secret)));
    expect(a.admitter.list()).toMatchObject([{ id, uses: 2, usesLeft: 2, status: 'valid', issuedBy: 'a', description: 'edge box' }]);
    a.admitter.revoke(id);
    expect(a.admitter.list()[0]!.status).toBe('revoked');
    expect(() => a.admitter.revoke('zzzzzzzz')).toThrow(TokenOpError);
    t = expiresAt;
    expect(tokenStatus(collectTokens(a.mesh.snapshot()).get(id)!, t)).toBe('revoked');
  });

  it.each([
    ['ttl too short', { ttlMs: 10, uses: 1 }],
    ['ttl too long', { ttlMs: 31 * 24 * 3600_000, uses: 1 }],
    ['uses 0', { ttlMs: 60_000, uses: 0 }],
    ['bad seed', { ttlMs: 60_000, uses: 1, seeds: ['nope'] }],
  ])('refuses to create a token: %s', (_n, req) => {
    const a = seed('a', () => 1_000_000);
    expect(() => a.admitter.create(req)).toThrow(TokenOpError);
  });

  it('drops malformed and mis-owned entries', () => {
    const t = 1_000_000;
    const a = new FakeMember('a', key(1), () => t);
    const enc = new TextEncoder();
    a.setLocal('token/abcd1234', enc.encode('{not json'));
    a.setLocal('token/abcd1235', enc.encode(JSON.stringify({ format: 1, id: 'abcd1235', verifier: key(2), createdAt: 1, expiresAt: 2e6, uses: 1, issuedBy: 'someone-else' })));
    a.setLocal('token/abcd1236', enc.encode(JSON.stringify({ format: 1, id: 'abcd1299', verifier: key(2), createdAt: 1, expiresAt: 2e6, uses: 1, issuedBy: 'a' })));
    a.setLocal('token/abcd1237', enc.encode(JSON.stringify({ format: 1, id: 'abcd1237', verifier: key(2), createdAt: 1, expiresAt: 2e6, uses: 1, issuedBy: 'a' })));
    expect([...collectTokens(a.snapshot()).keys()]).toEqual(['abcd1237']);
  });

  it('spent accounting: the first `uses` claims win, in claim order', () => {
    const t = 1_000_000;
    const a = new FakeMember('a', key(1), () => t);
    const w = tokenEntryWrite({ format: 1, id: 'abcd1234', verifier: key(2), createdAt: t, expiresAt: t + 60_000, uses: 2, issuedBy: 'a' }, t);
    a.setLocal(w.key, w.payload, w.ttlMs);
    for (const [joiner, at] of [['x', t + 5], ['y', t + 3], ['z', t + 4]] as const) {
      const c = tokenClaimWrite({ format: 1, id: 'abcd1234', joiner, identityKey: key(5), claimedAt: at, seed: 'a' }, t + 60_000);
      a.setLocal(c.key, c.payload, c.ttlMs);
    }
    const s = collectTokens(a.snapshot()).get('abcd1234')!;
    expect(s.winners.map((c) => c.joiner)).toEqual(['y', 'z']);
    expect(s.usesLeft).toBe(0);
    expect(tokenStatus(s, t)).toBe('spent');
    expect(listTokens(a.snapshot(), t)[0]).toMatchObject({ redeemedBy: ['y', 'z'], usesLeft: 0, status: 'spent' });
  });

  it('claim order is a total order independent of input order (property)', () => {
    const claim = fc.record({ claimedAt: fc.integer({ min: 0, max: 5 }), seed: fc.constantFrom('a', 'b', 'c'), joiner: fc.constantFrom('x', 'y', 'z') }).map((c) => ({ format: 1 as const, id: 'abcd1234', identityKey: key(1), ...c }));
    fc.assert(
      fc.property(fc.array(claim, { maxLength: 10 }), (cs: TokenClaim[]) => {
        const s1 = [...cs].sort(compareClaims);
        const s2 = [...cs].reverse().sort(compareClaims);
        expect(s1.map((c) => `${c.claimedAt}${c.seed}${c.joiner}`)).toEqual(s2.map((c) => `${c.claimedAt}${c.seed}${c.joiner}`));
      }),
    );
  });
});

describe('admission (seed policy)', () => {
  const joinerKey = key(42);

  it('refuses unknown, expired, revoked and spent tokens with their own code', async () => {
    let t = 1_000_000;
    const a = seed('a', () => t);
    expect(await a.admitter.redeem('zzzzzzzz', { name: 'j', identityKey: joinerKey })).toMatchObject({ ok: false, code: 'unknown' });
    const one = a.admitter.create({ ttlMs: 60_000, uses: 1 });
    expect(await a.admitter.redeem(one.id, { name: 'j1', identityKey: joinerKey })).toMatchObject({ ok: true, admission: { name: 'j1', tokenId: one.id, admittedBy: 'a' } });
    expect(await a.admitter.redeem(one.id, { name: 'j2', identityKey: key(43) })).toMatchObject({ ok: false, code: 'spent' });
    const rev = a.admitter.create({ ttlMs: 60_000, uses: 1 });
    a.admitter.revoke(rev.id);
    expect(await a.admitter.redeem(rev.id, { name: 'j3', identityKey: key(44) })).toMatchObject({ ok: false, code: 'revoked' });
    const exp = a.admitter.create({ ttlMs: 60_000, uses: 1 });
    t += 61_000;
    expect(await a.admitter.redeem(exp.id, { name: 'j4', identityKey: key(45) })).toMatchObject({ ok: false, code: 'expired' });
  });

  it('refuses a name held by another identity, and a removed node with its old identity', async () => {
    const t = 1_000_000;
    const a = seed('a', () => t);
    const b = seed('b', () => t);
    sync(a.mesh, b.mesh);
    const tok = a.admitter.create({ ttlMs: 60_000, uses: 5 });
    expect(await a.admitter.redeem(tok.id, { name: 'b', identityKey: joinerKey })).toMatchObject({ ok: false, code: 'name-taken' });
    // Remove b; its records disappear from every member's plan input, and it cannot come back with its key.
    a.admitter.removeNode('b');
    sync(a.mesh, b.mesh);
    expect(withoutRevoked(a.mesh.snapshot()).members.map((m) => m.name)).toEqual(['a']);
    expect(revokedNodes(b.mesh.snapshot()).get('b')).toMatchObject({ identityKey: b.mesh.identityKey });
    expect(await a.admitter.redeem(tok.id, { name: 'b', identityKey: b.mesh.identityKey })).toMatchObject({ ok: false, code: 'node-revoked' });
    // Nor under another name with the same key, nor published under another name.
    expect(await a.admitter.redeem(tok.id, { name: 'b2', identityKey: b.mesh.identityKey })).toMatchObject({ ok: false, code: 'node-revoked' });
    const alias = new FakeMember('b-alias', b.mesh.identityKey, () => t);
    sync(a.mesh, alias);
    expect(withoutRevoked(a.mesh.snapshot()).members.map((m) => m.name)).toEqual(['a']);
    expect(() => a.admitter.removeNode('a')).toThrow(/itself/);
  });
});

describe('redemption race (pure simulation, two seeds, one single-use token)', () => {
  /**
   * Two joiners redeem the same single-use token at seeds A and B at the same moment. If gossip carries
   * the claims within the confirmation window, exactly one is admitted; if a partition outlasts the window,
   * both may be handed the mesh key, and once the partition heals every member agrees on one winner and
   * treats the other admission as revoked (its records are dropped everywhere).
   */
  it('property: at most `uses` admissions stand after convergence, and every member agrees', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 2, max: 3 }),
        async (dA, dB, gossipInWindow, uses, nSeeds) => {
          const base = 1_000_000;
          const clocks = [base + dA, base + dB, base + 1];
          const members: ReturnType<typeof seed>[] = [];
          // The window lets both redemptions publish their claims before any gossip runs (a true race).
          const sleep = async () => {
            await new Promise((r) => setImmediate(r));
            if (gossipInWindow) for (let i = 0; i < members.length; i++) for (let j = i + 1; j < members.length; j++) sync(members[i]!.mesh, members[j]!.mesh);
          };
          for (let i = 0; i < nSeeds; i++) members.push(seed(`s${i}`, () => clocks[i]!, { sleep }));
          const tok = members[0]!.admitter.create({ ttlMs: 60_000, uses });
          for (let i = 1; i < nSeeds; i++) sync(members[0]!.mesh, members[i]!.mesh);
          const results = await Promise.all(members.map((m, i) => m.admitter.redeem(tok.id, { name: `joiner${i}`, identityKey: key(100 + i) })));
          const admitted = results.flatMap((r) => (r.ok ? [r.admission.name] : []));
          for (const r of results) if (!r.ok) expect(r.code).toBe('spent');
          if (gossipInWindow) expect(admitted.length).toBe(Math.min(uses, nSeeds));
          else expect(admitted.length).toBeGreaterThanOrEqual(1);
          // Heal: full anti-entropy.
          for (let i = 0; i < nSeeds; i++) for (let j = 0; j < nSeeds; j++) if (i !== j) sync(members[i]!.mesh, members[j]!.mesh);
          const views = members.map((m) => revokedNodes(m.mesh.snapshot()));
          const standing = admitted.filter((n) => !views[0]!.has(n));
          expect(standing.length).toBe(Math.min(uses, admitted.length));
          for (const v of views) expect([...v.keys()].sort()).toEqual([...views[0]!.keys()].sort());
          const winners = collectTokens(members[1]!.mesh.snapshot()).get(tok.id)!.winners.map((c) => c.joiner);
          expect(standing.sort()).toEqual(winners.filter((w) => admitted.includes(w)).sort());
          // The token is now spent everywhere (single-use: any further redemption fails).
          if (uses === 1) for (const m of members) expect(tokenStatus(collectTokens(m.mesh.snapshot()).get(tok.id)!, base + 2)).toBe('spent');
        },
      ),
      { numRuns: 150 },
    );
  });

  it('earliest claim wins; equal times break on the lower seed name', async () => {
    const mk = async (tA: number, tB: number) => {
      const members: ReturnType<typeof seed>[] = [];
      const sleep = async () => {
        await new Promise((r) => setImmediate(r));
        sync(members[0]!.mesh, members[1]!.mesh);
      };
      members.push(seed('seed-a', () => tA, { sleep }), seed('seed-b', () => tB, { sleep }));
      const tok = members[0]!.admitter.create({ ttlMs: 60_000, uses: 1 });
      sync(members[0]!.mesh, members[1]!.mesh);
      const [ra, rb] = await Promise.all([members[0]!.admitter.redeem(tok.id, { name: 'x', identityKey: key(7) }), members[1]!.admitter.redeem(tok.id, { name: 'y', identityKey: key(8) })]);
      return [ra.ok, rb.ok];
    };
    expect(await mk(1_000_005, 1_000_002)).toEqual([false, true]);
    expect(await mk(1_000_002, 1_000_005)).toEqual([true, false]);
    expect(await mk(1_000_002, 1_000_002)).toEqual([true, false]);
  });

  it('a partition longer than the window admits both; after healing the later claim is revoked everywhere', async () => {
    const a = seed('seed-a', () => 1_000_001);
    const b = seed('seed-b', () => 1_000_002);
    const tok = a.admitter.create({ ttlMs: 60_000, uses: 1 });
    sync(a.mesh, b.mesh);
    const [ra, rb] = await Promise.all([a.admitter.redeem(tok.id, { name: 'x', identityKey: key(7) }), b.admitter.redeem(tok.id, { name: 'y', identityKey: key(8) })]);
    expect([ra.ok, rb.ok]).toEqual([true, true]);
    expect(revokedNodes(b.mesh.snapshot()).size).toBe(0);
    sync(a.mesh, b.mesh);
    for (const m of [a.mesh, b.mesh]) {
      expect([...revokedNodes(m.snapshot())]).toEqual([['y', { identityKey: key(8), reason: `token ${tok.id} was redeemed first by another joiner` }]]);
    }
  });
});
