import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { expandIPv6, isDnsLabel, normalizeZone, reverseName, reverseZonesOf, toDnsLabel, fnv1a32Hex } from '../../src/dns/names.ts';

describe('toDnsLabel', () => {
  it.each([
    ['web', 'web'],
    ['Web-1', 'web-1'],
    ['db.primary', 'db-primary'],
    ['my_pod', 'my-pod'],
    ['-lead-trail-', 'lead-trail'],
    ['..x..', 'x'],
    ['café', 'caf'],
    ['___', undefined],
    ['', undefined],
    ['...', undefined],
  ])('%j -> %j', (input, want) => {
    expect(toDnsLabel(input)).toBe(want);
  });

  it('hashes names longer than 63 characters into a stable 63-character label', () => {
    const long = `a${'b'.repeat(99)}`;
    const label = toDnsLabel(long)!;
    expect(label).toHaveLength(63);
    expect(label).toBe(`${long.slice(0, 54)}-${fnv1a32Hex(long)}`);
    expect(toDnsLabel(long)).toBe(label);
    // Same 54-character prefix, different names: different labels.
    expect(toDnsLabel(`${long}x`)).not.toBe(label);
  });

  it('always yields a valid label or undefined (property)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300, unit: 'binary' }), (s) => {
      const l = toDnsLabel(s);
      if (l !== undefined) expect(isDnsLabel(l)).toBe(true);
      else expect(/[a-z0-9]/i.test(s)).toBe(false);
    }));
  });

  it('keeps names that already are valid labels unchanged (property)', () => {
    fc.assert(fc.property(fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/), (s) => {
      expect(toDnsLabel(s)).toBe(s);
    }));
  });
});

describe('zones and reverse names', () => {
  it('normalises zones and rejects bad ones', () => {
    expect(normalizeZone('Weft.Local.')).toBe('weft.local');
    expect(() => normalizeZone('')).toThrow(/invalid zone/);
    expect(() => normalizeZone('a..b')).toThrow(/invalid zone/);
    expect(() => normalizeZone('bad_zone')).toThrow(/invalid zone/);
    expect(() => normalizeZone(`${'a'.repeat(60)}.${'b'.repeat(60)}.c`)).toThrow(/invalid zone/);
  });

  it('builds reverse names for IPv4 and IPv6', () => {
    expect(reverseName('10.244.3.7')).toBe('7.3.244.10.in-addr.arpa');
    expect(reverseName('fd00::1')).toBe(`1.${'0.'.repeat(27)}0.0.d.f.ip6.arpa`);
    expect(reverseName('not-an-ip')).toBeUndefined();
    expect(expandIPv6('::ffff:10.0.0.1')).toBe('00000000000000000000ffff0a000001');
    expect(expandIPv6('1:2:3:4:5:6:7:8')).toBe('00010002000300040005000600070008');
  });

  it('maps pod CIDRs to octet/nibble-aligned reverse zones', () => {
    expect(reverseZonesOf('10.244.3.0/24')).toEqual(['3.244.10.in-addr.arpa']);
    expect(reverseZonesOf('10.244.0.0/16')).toEqual(['244.10.in-addr.arpa']);
    expect(reverseZonesOf('10.244.2.0/23')).toEqual(['2.244.10.in-addr.arpa', '3.244.10.in-addr.arpa']);
    expect(reverseZonesOf('fd00:10:244:1::/64')).toEqual(['1.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa']);
    expect(reverseZonesOf('fd00::/63')).toHaveLength(2);
    expect(reverseZonesOf('10.0.0.0/9')).toHaveLength(128);
    expect(reverseZonesOf('10.0.0.0/17', 64)).toEqual([]);
    expect(reverseZonesOf('garbage')).toEqual([]);
  });
});
