import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blockConflict, blockLost, formatBlockConflict } from '../../src/agent/records.ts';
import { cidrOverlaps, parseCidr } from '../../src/ipam/cidr.ts';
import type { NodeInfo, RemoteNode } from '../../src/model.ts';

const key = 'A'.repeat(43) + '=';
function remote(name: string, podCIDRs: string[], claimedAt: number): RemoteNode {
  const info: NodeInfo = { format: 1, name, wgPublicKey: key, listenPort: 51820, endpoints: [], meshIP: '10.244.0.1', podCIDRs, claimedAt, keepalive: 0 };
  return { info, pods: [], state: 'alive' };
}

describe('blockConflict (cross-cloud pod CIDR overlap)', () => {
  it('names this node CIDR, the overlapping older block and its holder', () => {
    const claim = { podCIDRs: ['10.244.1.0/24'], claimedAt: 100 };
    const c = blockConflict('m', claim, [remote('other', ['10.244.0.0/23'], 50)]);
    expect(c).toEqual({ mine: '10.244.1.0/24', theirs: '10.244.0.0/23', holder: 'other' });
    expect(formatBlockConflict(c!)).toBe('pod CIDR 10.244.1.0/24 overlaps 10.244.0.0/23, already held by node other');
    const same = blockConflict('m', claim, [remote('other', ['10.244.1.0/24'], 50)]);
    expect(formatBlockConflict(same!)).toBe('pod CIDR 10.244.1.0/24 is already held by node other');
    // A younger overlapping claim loses to this node, so this node has no conflict.
    expect(blockConflict('m', claim, [remote('other', ['10.244.0.0/23'], 150)])).toBeUndefined();
    expect(blockConflict('m', claim, [remote('other', ['10.245.0.0/16'], 1)])).toBeUndefined();
  });

  it('a wider block held by a node of the other cloud conflicts with every narrower block inside it', () => {
    const c = blockConflict('joiner', { podCIDRs: ['10.244.200.0/24'], claimedAt: 10 }, [remote('cloud1', ['10.244.0.0/16'], 5)]);
    expect(c).toEqual({ mine: '10.244.200.0/24', theirs: '10.244.0.0/16', holder: 'cloud1' });
  });

  it('property: reports a conflict exactly when an older overlapping claim exists, and the line names both CIDRs and the holder', () => {
    const block = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 16, max: 26 })).map(([b, len]) => {
      const base = (10 << 24) | (244 << 16) | (b << 8);
      const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
      const v = (base & mask) >>> 0;
      return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${len}`;
    });
    fc.assert(
      fc.property(block, block, fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 1000 }), (mine, theirs, tMine, tTheirs) => {
        const c = blockConflict('m', { podCIDRs: [mine], claimedAt: tMine }, [remote('z', [theirs], tTheirs)]);
        const overlap = cidrOverlaps(parseCidr(mine), parseCidr(theirs));
        const older = tTheirs < tMine; // ties go to the lower name, and 'm' < 'z'
        expect(c !== undefined).toBe(overlap && older);
        expect(blockLost('m', { podCIDRs: [mine], claimedAt: tMine }, [remote('z', [theirs], tTheirs)])).toBe(c?.holder);
        if (c) {
          const line = formatBlockConflict(c);
          expect(line).toContain(mine);
          expect(line).toContain(theirs);
          expect(line).toContain('node z');
        }
      }),
    );
  });
});
