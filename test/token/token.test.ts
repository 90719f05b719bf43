import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import {
  TokenFormatError,
  authorityFingerprint,
  deriveAuthority,
  formatToken,
  parseToken,
  parseTokenId,
  randomTokenId,
  randomTokenSecret,
  tokenExpired,
  tokenVerifier,
  validateSeed,
  type JoinToken,
} from '../../src/token/token.ts';

const meshKey = new Uint8Array(32).fill(9);
const fp = authorityFingerprint(deriveAuthority(meshKey).publicKey);
const base: JoinToken = { id: 'abcd1234', secret: 'abcdefghijklmnopqrstuvwx', fingerprint: fp, expiresAt: 1_900_000_000_000, uses: 1, seeds: ['192.0.2.10:7947'] };

describe('token format', () => {
  it('round-trips the fields', () => {
    const s = formatToken(base);
    expect(s.startsWith('weft1.abcd1234.abcdefghijklmnopqrstuvwx.')).toBe(true);
    const t = parseToken(s);
    expect(t).toEqual({ ...base, fingerprint: fp });
  });

  it.each([
    ['IPv6 seed', ['[2001:DB8::1]:7947'], ['[2001:db8::1]:7947']],
    ['DNS seed', ['seed.example.com:7947'], ['seed.example.com:7947']],
    ['several seeds', ['192.0.2.1:1', '198.18.0.1:65535'], ['192.0.2.1:1', '198.18.0.1:65535']],
  ])('canonicalizes seeds: %s', (_n, seeds, want) => {
    expect(parseToken(formatToken({ ...base, seeds })).seeds).toEqual(want);
  });

  it.each([
    ['empty', '', /does not start with/],
    ['other prefix', 'weft2.abcd1234.abcdefghijklmnopqrstuvwx.AAAA', /does not start with/],
    ['missing part', 'weft1.abcd1234.abcdefghijklmnopqrstuvwx', /3 dot-separated parts/],
    ['extra part', 'weft1.a.b.c.d', /5 dot-separated parts/],
    ['bad id', 'weft1.ABCD1234.abcdefghijklmnopqrstuvwx.AAAA', /id is not/],
    ['short secret', 'weft1.abcd1234.abc.AAAA', /secret is not/],
    ['payload not base64url', 'weft1.abcd1234.abcdefghijklmnopqrstuvwx.AA+A', /not base64url/],
    ['truncated payload', 'weft1.abcd1234.abcdefghijklmnopqrstuvwx.AAAA', /too short/],
    ['too long', `weft1.${'a'.repeat(3000)}`, /longer than/],
  ])('refuses a malformed token: %s', (_n, s, re) => {
    expect(() => parseToken(s)).toThrow(TokenFormatError);
    expect(() => parseToken(s)).toThrow(re);
  });

  it('refuses a token whose payload was cut short (checksum)', () => {
    const s = formatToken(base);
    expect(() => parseToken(s.slice(0, -4))).toThrow(/checksum|canonical/);
  });

  it('refuses a token with the secret of another token (checksum)', () => {
    const s = formatToken(base).replace(base.secret, 'zzzzzzzzzzzzzzzzzzzzzzzz');
    expect(() => parseToken(s)).toThrow(/checksum mismatch/);
  });

  it('never echoes the secret in its errors', () => {
    const s = formatToken(base);
    try {
      parseToken(s.slice(0, -2) + (s.endsWith('AA') ? 'BB' : 'AA'));
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain(base.secret);
    }
  });

  it('property: any single changed character is refused', () => {
    const s = formatToken({ ...base, seeds: ['192.0.2.10:7947', '[2001:db8::7]:7947'], uses: 3 });
    const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+/=';
    fc.assert(
      fc.property(fc.integer({ min: 0, max: s.length - 1 }), fc.constantFrom(...chars), (pos, ch) => {
        fc.pre(s[pos] !== ch);
        const bad = s.slice(0, pos) + ch + s.slice(pos + 1);
        expect(() => parseToken(bad)).toThrow(TokenFormatError);
      }),
      { numRuns: 2000 },
    );
  });

  it('property: format/parse round-trips any valid token', () => {
    const seedArb = fc.oneof(
      fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `${h}:${p}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `[${h}]:${p}`),
    );
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 1, max: 0xffffffff }),
        fc.integer({ min: 1, max: 1000 }),
        fc.array(seedArb, { minLength: 1, maxLength: 8 }),
        (fingerprint, exp, uses, seeds) => {
          const t: JoinToken = { id: randomTokenId(), secret: randomTokenSecret(), fingerprint, expiresAt: exp * 1000, uses, seeds };
          const back = parseToken(formatToken(t));
          expect(back.id).toBe(t.id);
          expect(back.secret).toBe(t.secret);
          expect(Buffer.from(back.fingerprint).equals(Buffer.from(fingerprint))).toBe(true);
          expect(back.expiresAt).toBe(exp * 1000);
          expect(back.uses).toBe(uses);
          expect(back.seeds).toEqual(seeds.map(validateSeed));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('property: random strings never crash the parser (only TokenFormatError)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.uint8Array({ maxLength: 200 }).map((b) => `weft1.abcd1234.abcdefghijklmnopqrstuvwx.${Buffer.from(b).toString('base64url')}`)), (s) => {
        try {
          parseToken(s);
        } catch (err) {
          expect(err).toBeInstanceOf(TokenFormatError);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it.each([
    ['no port', '192.0.2.1'],
    ['port 0', '192.0.2.1:0'],
    ['port too big', '192.0.2.1:65536'],
    ['bracketed IPv4', '[192.0.2.1]:1'],
    ['bare IPv6', '2001:db8::1:7947'],
    ['bad host', 'bad_host!:1'],
  ])('refuses seed %s', (_n, seed) => {
    expect(() => formatToken({ ...base, seeds: [seed] })).toThrow(TokenFormatError);
  });

  it('refuses out-of-range fields at creation', () => {
    expect(() => formatToken({ ...base, uses: 0 })).toThrow(/uses/);
    expect(() => formatToken({ ...base, uses: 1001 })).toThrow(/uses/);
    expect(() => formatToken({ ...base, seeds: [] })).toThrow(/seed/);
    expect(() => formatToken({ ...base, seeds: Array(9).fill('192.0.2.1:1') })).toThrow(/seed/);
    expect(() => formatToken({ ...base, id: 'short' })).toThrow(/id/);
    expect(() => formatToken({ ...base, fingerprint: new Uint8Array(31) })).toThrow(/fingerprint/);
  });

  it('expiry check', () => {
    expect(tokenExpired(base, base.expiresAt - 1)).toBe(false);
    expect(tokenExpired(base, base.expiresAt)).toBe(true);
  });

  it('ids and secrets are uniform over [a-z0-9] and distinct', () => {
    const ids = new Set(Array.from({ length: 200 }, () => randomTokenId()));
    expect(ids.size).toBe(200);
    for (const id of ids) expect(id).toMatch(/^[a-z0-9]{8}$/);
    expect(randomTokenSecret()).toMatch(/^[a-z0-9]{24}$/);
    // A biased random source (all 255) is rejected and redrawn rather than skewing the alphabet.
    let calls = 0;
    const src = (n: number) => (++calls === 1 ? new Uint8Array(n).fill(255) : new Uint8Array(randomBytes(n)));
    expect(randomTokenId(src)).toMatch(/^[a-z0-9]{8}$/);
    expect(calls).toBeGreaterThan(1);
    expect(parseTokenId(' abcd1234 ')).toBe('abcd1234');
    expect(() => parseTokenId('abc')).toThrow(TokenFormatError);
  });

  it('the verifier and authority are deterministic and depend on every input', () => {
    expect(Buffer.from(tokenVerifier('abcd1234', base.secret)).equals(Buffer.from(tokenVerifier('abcd1234', base.secret)))).toBe(true);
    expect(Buffer.from(tokenVerifier('abcd1234', base.secret)).equals(Buffer.from(tokenVerifier('abcd1235', base.secret)))).toBe(false);
    const a = deriveAuthority(meshKey).publicKey;
    const b = deriveAuthority(new Uint8Array(32).fill(10)).publicKey;
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
    expect(Buffer.from(deriveAuthority(meshKey).publicKey).equals(Buffer.from(a))).toBe(true);
  });
});
