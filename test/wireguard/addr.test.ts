import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalCIDR, canonicalEndpoint, formatIP, normalizeUpdate, parseIP } from '../../src/wireguard/addr.ts';
import { WgInputError } from '../../src/wireguard/errors.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';

describe('address canonicalization', () => {
  it.each([
    ['10.1.2.3/24', '10.1.2.0/24'],
    ['10.1.2.3', '10.1.2.3/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['FD00:0:0:0::1/64', 'fd00::/64'],
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128'],
    ['::ffff:192.0.2.1/128', '::ffff:c000:201/128'],
    ['::/0', '::/0'],
    ['1:0:0:2:0:0:0:3/128', '1:0:0:2::3/128'],
  ])('canonicalCIDR(%s) = %s', (i, o) => expect(canonicalCIDR(i)).toBe(o));

  it.each(['10.0.0.0/33', '10.0.0/8', 'fd00::/129', '10.0.0.0/08x', 'x', '', '10.0.0.0/-1', 'fe80::1%eth0/64'])('rejects CIDR %s', (s) =>
    expect(() => canonicalCIDR(s)).toThrow(WgInputError),
  );

  it.each([
    ['192.0.2.1:51820', '192.0.2.1:51820'],
    ['[2001:DB8::0:1]:1', '[2001:db8::1]:1'],
  ])('canonicalEndpoint(%s) = %s', (i, o) => expect(canonicalEndpoint(i)).toBe(o));

  it.each(['192.0.2.1', '192.0.2.1:0', '192.0.2.1:65536', '2001:db8::1:80', '[2001:db8::1]', 'host:80', '[192.0.2.1]:80'])(
    'rejects endpoint %s',
    (s) => expect(() => canonicalEndpoint(s)).toThrow(WgInputError),
  );

  it('formats IPv6 like the URL parser (RFC 5952) for any address', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
        const text = formatIP(b);
        expect(parseIP(text)!.bytes).toEqual(b);
        expect(new URL(`http://[${text}]/`).hostname).toBe(`[${text}]`);
      }),
    );
  });
});

describe('normalizeUpdate', () => {
  it('canonicalizes and de-duplicates, and treats replace without a list as clear', () => {
    const k = generateKeyPair().publicKey;
    expect(
      normalizeUpdate('wg0', { peers: [{ publicKey: k, allowedIPs: ['10.0.0.1/24', '10.0.0.0/24'], endpoint: '[::1]:5' }] }),
    ).toEqual({ peers: [{ publicKey: k, allowedIPs: ['10.0.0.0/24'], endpoint: '[::1]:5' }] });
    expect(normalizeUpdate('wg0', { peers: [{ publicKey: k, replaceAllowedIPs: true }] })).toEqual({
      peers: [{ publicKey: k, replaceAllowedIPs: true, allowedIPs: [] }],
    });
  });

  it('rejects values that would inject UAPI lines', () => {
    const k = generateKeyPair().publicKey;
    expect(() => normalizeUpdate('wg0', { peers: [{ publicKey: k, endpoint: '192.0.2.1:5\nremove=true' }] })).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0', { peers: [{ publicKey: k, allowedIPs: ['10.0.0.0/8\nreplace_peers=true'] }] })).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0', { peers: [{ publicKey: `${k}\nremove=true` }] })).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0\n', {})).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0', { listenPort: '1\nx' as unknown as number })).toThrow(WgInputError);
  });

  it('rejects bad names, ports, marks and duplicate keys', () => {
    const k = generateKeyPair().publicKey;
    expect(() => normalizeUpdate('a'.repeat(16), {})).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0', { listenPort: 1.5 })).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0', { fwmark: -1 })).toThrow(WgInputError);
    expect(() => normalizeUpdate('wg0', { peers: [{ publicKey: k }, { publicKey: k }] })).toThrow(/named twice/);
    expect(() => normalizeUpdate('wg0', { peers: [{ publicKey: k, allowedIPs: Array(5000).fill('10.0.0.0/8') }] })).toThrow(/max/);
  });
});
