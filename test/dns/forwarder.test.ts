import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseResolvConf, selectUpstreams } from '../../src/dns/forwarder.ts';
import { SourceRateLimiter } from '../../src/dns/ratelimit.ts';

describe('parseResolvConf', () => {
  it('keeps valid nameservers in order, once, and ignores everything else', () => {
    const text = [
      '# generated', 'search default.svc.cluster.local svc.cluster.local', 'nameserver 10.96.0.10',
      'nameserver   192.0.2.53  ', 'nameserver 10.96.0.10', 'nameserver not-an-ip', 'nameserver fe80::1%eth0',
      ';nameserver 192.0.2.99', 'nameserver 2001:db8::53 # trailing comment', 'options ndots:5 timeout:1', 'nameserver',
    ].join('\n');
    expect(parseResolvConf(text).nameservers).toEqual(['10.96.0.10', '192.0.2.53', 'fe80::1%eth0', '2001:db8::53']);
  });

  it('never throws on arbitrary text', () => {
    fc.assert(fc.property(fc.string({ maxLength: 500 }), (s) => {
      expect(Array.isArray(parseResolvConf(s).nameservers)).toBe(true);
    }));
  });
});

describe('selectUpstreams', () => {
  const ns = ['127.0.0.53', '10.244.3.1', '192.0.2.53', '::1', '2001:db8::1'];
  it('skips our own listen addresses on the same port only', () => {
    expect(selectUpstreams(ns, 53, [{ address: '10.244.3.1', port: 53 }], []).map((u) => u.address))
      .toEqual(['127.0.0.53', '192.0.2.53', '::1', '2001:db8::1']);
    expect(selectUpstreams(ns, 53, [{ address: '10.244.3.1', port: 5353 }], []).map((u) => u.address)).toEqual(ns);
    expect(selectUpstreams(['2001:0db8:0:0::1'], 53, [{ address: '2001:db8::1', port: 53 }], [])).toEqual([]);
  });

  it('skips loopback and local addresses when we listen on a wildcard', () => {
    expect(selectUpstreams(ns, 53, [{ address: '0.0.0.0', port: 53 }], ['192.0.2.53']).map((u) => u.address))
      .toEqual(['10.244.3.1', '2001:db8::1']);
    expect(selectUpstreams(ns, 53, [{ address: '::', port: 53 }], []).map((u) => u.address))
      .toEqual(['10.244.3.1', '192.0.2.53', '2001:db8::1']);
  });
});

describe('SourceRateLimiter', () => {
  it('allows a burst, then the sustained rate', () => {
    const rl = new SourceRateLimiter({ qps: 10, burst: 3 });
    expect([0, 0, 0, 0].map(() => rl.allow('a', 0))).toEqual([true, true, true, false]);
    expect(rl.allow('b', 0)).toBe(true);
    expect(rl.allow('a', 50)).toBe(false);
    expect(rl.allow('a', 100)).toBe(true);
    expect(rl.allow('a', 100)).toBe(false);
    expect([rl.allow('a', 10_000), rl.allow('a', 10_000), rl.allow('a', 10_000), rl.allow('a', 10_000)]).toEqual([true, true, true, false]);
  });

  it('keeps memory bounded under a flood of sources', () => {
    const rl = new SourceRateLimiter({ qps: 1, burst: 1, maxSources: 100 });
    for (let i = 0; i < 10_000; i++) rl.allow(`198.18.${i >> 8}.${i & 255}`, i);
    expect(rl.size).toBe(100);
  });

  it('never lets a source exceed burst + rate * time (property)', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 300 }), (gaps) => {
      const rl = new SourceRateLimiter({ qps: 100, burst: 5 });
      let t = 0;
      let allowed = 0;
      for (const g of gaps) {
        t += g;
        if (rl.allow('x', t)) allowed++;
      }
      expect(allowed).toBeLessThanOrEqual(5 + Math.floor(t * 0.1) + 1);
    }));
  });

  it('rejects nonsense limits', () => {
    expect(() => new SourceRateLimiter({ qps: 0, burst: 1 })).toThrow(/ratelimit/);
  });
});

describe('SourceAcl', () => {
  it('matches IPv4, IPv4-mapped and IPv6 sources against CIDRs', async () => {
    const { SourceAcl } = await import('../../src/dns/acl.ts');
    const acl = new SourceAcl(['10.244.0.0/16', '127.0.0.0/8', 'fd00:10::/32', '192.0.2.7/32']);
    for (const ip of ['10.244.3.5', '127.0.0.1', '::ffff:10.244.0.1', 'fd00:10:0:1::5', '192.0.2.7']) expect(acl.allows(ip), ip).toBe(true);
    for (const ip of ['10.245.0.1', '192.0.2.8', 'fd00:11::1', '::1', 'garbage', undefined]) expect(acl.allows(ip), String(ip)).toBe(false);
    expect(new SourceAcl(['0.0.0.0/0']).allows('198.18.0.1')).toBe(true);
    expect(new SourceAcl([]).allows('127.0.0.1')).toBe(false);
    for (const bad of ['10.0.0.0/33', '10.0.0.0', 'x/8', '::/129', '10.0.0.0/8/1']) expect(() => new SourceAcl([bad]), bad).toThrow(/dns acl: invalid CIDR/);
  });
});
