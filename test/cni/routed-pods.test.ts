/**
 * Routed pod veths put one host route per pod (`/32`, `/128`, protocol boot, via the host veth) into
 * the main table, inside the cluster CIDR the datapath reconciler routes into WireGuard. The
 * reconciler must never take them: it only deletes routes with weft's protocol and only replaces
 * foreign routes with exactly its own destinations (the cluster CIDRs).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { diffRoutes } from '../../src/datapath/diff.ts';
import { RT_TABLE_MAIN, WEFT_FALLBACK_METRIC, WEFT_RT_PROTO, type RtRoute } from '../../src/datapath/rtnetlink.ts';

const RTPROT_KERNEL = 2;
const RTPROT_BOOT = 3;
const route = (dst: string, dev: string, protocol: number, extra: Partial<RtRoute> = {}): RtRoute => ({ dst, type: 'unicast', dev, protocol, table: RT_TABLE_MAIN, metric: 0, ...extra });

describe('datapath reconciler vs the CNI pod routes', () => {
  const desired = [{ dst: '10.244.0.0/16', dev: 'weft0' }, { dst: 'fd00::/48', dev: 'weft0' }];
  const weftOwn = [
    route('10.244.0.0/16', 'weft0', WEFT_RT_PROTO),
    route('fd00::/48', 'weft0', WEFT_RT_PROTO),
    { ...route('10.244.0.0/16', 'weft0', WEFT_RT_PROTO), type: 'blackhole' as const, dev: undefined, metric: WEFT_FALLBACK_METRIC },
    { ...route('fd00::/48', 'weft0', WEFT_RT_PROTO), type: 'blackhole' as const, dev: undefined, metric: WEFT_FALLBACK_METRIC },
  ];

  it('leaves pod host routes and the gateway device block route alone (no-op diff)', () => {
    const current = [
      ...weftOwn,
      route('10.244.3.0/24', 'weftgw0', RTPROT_KERNEL),
      route('fd00:0:0:3::/120', 'weftgw0', RTPROT_KERNEL),
      route('10.244.3.2/32', 'wv0123456789a', RTPROT_BOOT),
      route('fd00:0:0:3::2/128', 'wv0123456789a', RTPROT_BOOT),
    ];
    expect(diffRoutes(desired, current)).toEqual({ add: [], replace: [], del: [], replaceForeign: [] });
  });

  it('never deletes or replaces a boot-protocol /32 or /128 inside the cluster CIDR', () => {
    const podRoute = fc.oneof(
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })).map(([a, b]) => route(`10.244.${a}.${b}/32`, 'wv0000000000a', RTPROT_BOOT)),
      fc.integer({ min: 0, max: 0xffff }).map((x) => route(`fd00::${x.toString(16)}/128`, 'wv0000000000b', RTPROT_BOOT)),
    );
    fc.assert(
      fc.property(fc.array(podRoute, { maxLength: 50 }), (pods) => {
        const d = diffRoutes(desired, [...weftOwn, ...pods]);
        const touched = [...d.del, ...d.replace, ...d.replaceForeign].map((r) => r.dst);
        for (const p of pods) expect(touched).not.toContain(p.dst);
        expect(d.add).toEqual([]);
      }),
    );
  });
});
