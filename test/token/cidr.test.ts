/**
 * The seed refuses a joiner's fixed pod CIDR in the join handshake (issue 7): overlap with a block held
 * in the mesh, or outside the cluster CIDRs. Pure check (`podCidrRefusal`) and the Admitter's rule that a
 * refused CIDR does not spend the token, before and after the confirmation window.
 */
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { describe, expect, it } from 'vitest';
import { generateIdentity } from '../../mesh/crypto.ts';
import { Admitter } from '../../src/token/admit.ts';
import { parseJoinPodCidrs, podCidrRefusal } from '../../src/token/cidr.ts';
import { collectTokens, nodeRevocationWrite } from '../../src/token/store.ts';
import { cidrOverlaps, parseCidr } from '../../src/ipam/cidr.ts';
import { FakeMember, sync } from './fake-mesh.ts';

const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const enc = new TextEncoder();
const CLUSTER = ['10.244.0.0/16', 'fd00:244::/56'];

/** Publishes a valid node record holding `podCIDRs` on `m` (as its own agent would). */
function holdBlock(m: FakeMember, podCIDRs: string[], claimedAt: number): void {
  const meshIP = podCIDRs[0]!.includes(':') ? podCIDRs[0]!.replace('/', '').replace(/::.*$/, '::1') : podCIDRs[0]!.replace(/\.0\/\d+$/, '.1');
  m.setLocal('node', enc.encode(JSON.stringify({ format: 1, name: m.name, wgPublicKey: b64(nacl.box.keyPair().publicKey), listenPort: 51820, endpoints: ['192.0.2.9:51820'], meshIP, podCIDRs, claimedAt, keepalive: 0 })));
}

function mesh(): { seed: FakeMember; other: FakeMember; now: { t: number } } {
  const now = { t: 1_700_000_000_000 };
  const seed = new FakeMember('seed-a', b64(generateIdentity().publicKey), () => now.t);
  const other = new FakeMember('cloud1-b', b64(generateIdentity().publicKey), () => now.t);
  holdBlock(seed, ['10.244.1.0/24'], 100);
  holdBlock(other, ['10.244.2.0/24'], 200);
  sync(seed, other);
  return { seed, other, now };
}

describe('podCidrRefusal', () => {
  it('names both CIDRs and the holder for an overlap, equal or nested', () => {
    const { seed } = mesh();
    const snap = seed.snapshot();
    expect(podCidrRefusal(snap, 'edge', ['10.244.2.0/24'], CLUSTER)).toMatchObject({ code: 'cidr-overlap', mine: '10.244.2.0/24', theirs: '10.244.2.0/24', holder: 'cloud1-b', msg: 'pod CIDR 10.244.2.0/24 is already held by node cloud1-b' });
    expect(podCidrRefusal(snap, 'edge', ['10.244.0.0/22'], CLUSTER)).toMatchObject({ code: 'cidr-overlap', holder: 'seed-a', msg: 'pod CIDR 10.244.0.0/22 overlaps 10.244.1.0/24, already held by node seed-a' });
    // The seed's own block counts too, and a free block passes.
    expect(podCidrRefusal(snap, 'edge', ['10.244.1.128/25'], CLUSTER)?.code).toBe('cidr-overlap');
    expect(podCidrRefusal(snap, 'edge', ['10.244.3.0/24'], CLUSTER)).toBeUndefined();
    expect(podCidrRefusal(snap, 'edge', [], CLUSTER)).toBeUndefined();
  });

  it('refuses a CIDR outside the cluster CIDRs, or of a family the mesh has none of', () => {
    const { seed } = mesh();
    expect(podCidrRefusal(seed.snapshot(), 'edge', ['10.99.0.0/24'], CLUSTER)).toMatchObject({ code: 'cidr-outside', msg: "pod CIDR 10.99.0.0/24 is outside the mesh's cluster CIDR 10.244.0.0/16" });
    expect(podCidrRefusal(seed.snapshot(), 'edge', ['fd00:1::/64'], ['10.244.0.0/16'])).toMatchObject({ code: 'cidr-outside', msg: expect.stringContaining('no IPv6 cluster CIDR') });
    // No cluster CIDRs given: only the overlap check runs.
    expect(podCidrRefusal(seed.snapshot(), 'edge', ['10.99.0.0/24'], undefined)).toBeUndefined();
    expect(podCidrRefusal(seed.snapshot(), 'edge', ['10.244.2.0/24'], undefined)?.code).toBe('cidr-overlap');
  });

  it("skips the joiner's own name (a retry after a lost grant) and revoked nodes' blocks", () => {
    const { seed, other } = mesh();
    expect(podCidrRefusal(seed.snapshot(), 'cloud1-b', ['10.244.2.0/24'], CLUSTER)).toBeUndefined();
    const w = nodeRevocationWrite({ format: 1, name: 'cloud1-b', revokedAt: 1, by: 'seed-a', reason: 'test' });
    seed.setLocal(w.key, w.payload, w.ttlMs);
    expect(podCidrRefusal(seed.snapshot(), 'edge', ['10.244.2.0/24'], CLUSTER)).toBeUndefined();
    expect(other.name).toBe('cloud1-b');
  });

  it('rejects hostile shapes: too many, not strings, host bits, garbage', () => {
    expect(parseJoinPodCidrs(['10.244.3.0/24', 'fd00:244:0:1::/64'])).toEqual({ ok: true, cidrs: ['10.244.3.0/24', 'fd00:244:0:1::/64'] });
    for (const bad of [['a', 'b', 'c'], [1], ['10.244.3.1/24'], ['10.244.3.0/33'], ['x'.repeat(500)], '10.0.0.0/8', null, [{}]]) {
      expect(parseJoinPodCidrs(bad).ok, JSON.stringify(bad)).toBe(false);
    }
    const { seed } = mesh();
    expect(podCidrRefusal(seed.snapshot(), 'edge', ['10.244.3.1/24'], CLUSTER)?.code).toBe('bad-request');
  });

  it('property: an overlap refusal exactly when the CIDR overlaps a held block', () => {
    const block = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 18, max: 26 })).map(([b, len]) => {
      const v = ((10 << 24) | (244 << 16) | (b << 8)) & ((~0 << (32 - len)) >>> 0);
      return `${v >>> 24 & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${len}`;
    });
    const { seed } = mesh();
    const snap = seed.snapshot();
    fc.assert(
      fc.property(block, (c) => {
        const r = podCidrRefusal(snap, 'edge', [c], CLUSTER);
        const held = ['10.244.1.0/24', '10.244.2.0/24'].filter((h) => cidrOverlaps(parseCidr(h), parseCidr(c)));
        expect(r?.code === 'cidr-overlap').toBe(held.length > 0);
        if (r?.code === 'cidr-overlap') {
          expect(r.msg).toContain(c);
          expect(r.msg).toContain(r.theirs);
          expect(held).toContain(r.theirs);
        }
      }),
    );
  });
});

describe('Admitter: a refused pod CIDR does not spend the token', () => {
  function admitter(seed: FakeMember, now: { t: number }, sleep: (ms: number) => Promise<void> = async () => {}) {
    return new Admitter({ mesh: seed, self: { name: seed.name, identity: generateIdentity() }, meshKey: new Uint8Array(32).fill(7), clock: () => now.t, sleep, joinAddresses: () => ['192.0.2.1:7947'], clusterCIDRs: CLUSTER });
  }
  const joiner = (name: string, podCIDRs?: string[]) => ({ name, identityKey: b64(generateIdentity().publicKey), ...(podCIDRs ? { podCIDRs } : {}) });

  it('refuses before claiming: no claim entry, uses left unchanged, the same token then admits a free block', async () => {
    const { seed, now } = mesh();
    const a = admitter(seed, now);
    const { id } = a.create({ ttlMs: 3600_000, uses: 1 });
    const r = await a.redeem(id, joiner('edge-1', ['10.244.2.0/24']));
    expect(r).toMatchObject({ ok: false, code: 'cidr-overlap', detail: { mine: '10.244.2.0/24', theirs: '10.244.2.0/24', holder: 'cloud1-b' } });
    expect(!r.ok && r.msg).toMatch(/10\.244\.2\.0\/24 is already held by node cloud1-b; the token was not spent/);
    const outside = await a.redeem(id, joiner('edge-1', ['10.245.0.0/24']));
    expect(outside).toMatchObject({ ok: false, code: 'cidr-outside' });
    const st = collectTokens(seed.snapshot()).get(id)!;
    expect(st.claims).toEqual([]);
    expect(st.usesLeft).toBe(1);
    expect([...seed.view.get('seed-a')!.entries.keys()].some((k) => k.startsWith('token-claim/'))).toBe(false);
    const ok = await a.redeem(id, joiner('edge-1', ['10.244.3.0/24']));
    expect(ok.ok).toBe(true);
    expect(collectTokens(seed.snapshot()).get(id)!.usesLeft).toBe(0);
  });

  it('a block claimed elsewhere during the confirmation window: refused, and the claim is withdrawn so the use is given back', async () => {
    const { seed, other, now } = mesh();
    const late = new FakeMember('cloud2-c', b64(generateIdentity().publicKey), () => now.t);
    const a = admitter(seed, now, async () => {
      // During the window another node's record claiming the same block arrives by gossip.
      holdBlock(late, ['10.244.7.0/24'], 300);
      sync(late, seed);
    });
    const { id } = a.create({ ttlMs: 3600_000, uses: 1 });
    const r = await a.redeem(id, joiner('edge-2', ['10.244.7.0/24']));
    expect(r).toMatchObject({ ok: false, code: 'cidr-overlap', detail: { holder: 'cloud2-c' } });
    const st = collectTokens(seed.snapshot()).get(id)!;
    expect(st.claims).toEqual([]);
    expect(st.usesLeft).toBe(1);
    // The withdrawal is a tombstone, so it replicates: the other member agrees the use is free.
    sync(seed, other);
    expect(collectTokens(other.snapshot()).get(id)!.usesLeft).toBe(1);
  });

  it('a joiner without --pod-cidr is not checked (it claims a free block through the mesh)', async () => {
    const { seed, now } = mesh();
    const a = admitter(seed, now);
    const { id } = a.create({ ttlMs: 3600_000, uses: 1 });
    expect((await a.redeem(id, joiner('edge-3'))).ok).toBe(true);
  });
});
