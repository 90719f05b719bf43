import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MemberState } from '../../mesh/api.ts';
import { chooseRelay } from '../../src/relay/choose.ts';
import type { RelayOffer } from '../../src/relay/records.ts';
import { planSessions, wantedPairs, type HeldSession } from '../../src/relay/sessions.ts';

const offer: RelayOffer = { host: '198.18.0.2', family: 4, ports: [51900, 51999] };

function inputs(states: Record<string, MemberState>, offers: string[], wants: Record<string, string[]>) {
  return { states: new Map(Object.entries(states)), offers: new Map(offers.map((o) => [o, offer])), wants: new Map(Object.entries(wants)) };
}

describe('wantedPairs', () => {
  it('serves a pair when an alive member of it wants it, the other is usable, and this node is the chosen relay', () => {
    const i = inputs({ a: 'alive', b: 'suspect', r: 'alive' }, ['r'], { a: ['b'] });
    expect(wantedPairs('r', i)).toEqual([['a', 'b']]);
    // Asked by b only (a suspect asker does not count), or towards a dead peer: not served.
    expect(wantedPairs('r', inputs({ a: 'alive', b: 'suspect', r: 'alive' }, ['r'], { b: ['a'] }))).toEqual([]);
    expect(wantedPairs('r', inputs({ a: 'alive', b: 'dead', r: 'alive' }, ['r'], { a: ['b'] }))).toEqual([]);
    // Not offering: nothing.
    expect(wantedPairs('r', inputs({ a: 'alive', b: 'alive', r: 'alive' }, [], { a: ['b'] }))).toEqual([]);
  });

  it('exactly one of several relays serves each pair: the chosen one', () => {
    const relays = ['r1', 'r2', 'r3'];
    const i = inputs({ a: 'alive', b: 'alive', c: 'alive', r1: 'alive', r2: 'alive', r3: 'alive' }, relays, { a: ['b', 'c'], c: ['b'] });
    const served = relays.flatMap((r) => wantedPairs(r, i).map((p) => `${p.join('-')}@${r}`));
    expect(served.sort()).toEqual([`a-b@${chooseRelay('a', 'b', relays)}`, `a-c@${chooseRelay('a', 'c', relays)}`, `b-c@${chooseRelay('b', 'c', relays)}`].sort());
  });
});

describe('planSessions', () => {
  const base = { ports: [51900, 51905] as const, graceMs: 60_000 };
  it('gives new pairs the lowest free ports, keeps ports of pairs still wanted, and drops unwanted ones after the grace', () => {
    const s1 = planSessions({ ...base, wanted: [['a', 'b'], ['c', 'd']], held: [], now: 0 });
    expect(s1).toEqual([{ a: 'a', b: 'b', portA: 51900, portB: 51901 }, { a: 'c', b: 'd', portA: 51902, portB: 51903 }]);
    const s2 = planSessions({ ...base, wanted: [['c', 'd'], ['e', 'f']], held: s1, now: 1000 });
    expect(s2).toEqual([{ a: 'a', b: 'b', portA: 51900, portB: 51901, unwantedSince: 1000 }, { a: 'c', b: 'd', portA: 51902, portB: 51903 }, { a: 'e', b: 'f', portA: 51904, portB: 51905 }]);
    // The range is full: a fourth pair waits.
    expect(planSessions({ ...base, wanted: [['c', 'd'], ['e', 'f'], ['g', 'h']], held: s2, now: 2000 }).map((s) => s.a)).toEqual(['a', 'c', 'e']);
    const s3 = planSessions({ ...base, wanted: [['c', 'd'], ['e', 'f'], ['g', 'h']], held: s2, now: 61_000 });
    expect(s3).toEqual([{ a: 'c', b: 'd', portA: 51902, portB: 51903 }, { a: 'e', b: 'f', portA: 51904, portB: 51905 }, { a: 'g', b: 'h', portA: 51900, portB: 51901 }]);
    // Wanted again within the grace: the mark goes.
    expect(planSessions({ ...base, wanted: [['a', 'b']], held: s2, now: 5000 })[0]).toEqual({ a: 'a', b: 'b', portA: 51900, portB: 51901 });
  });

  it('skips unusable ports', () => {
    expect(planSessions({ ...base, wanted: [['a', 'b']], held: [], now: 0, unusable: new Set([51900, 51902]) })).toEqual([{ a: 'a', b: 'b', portA: 51901, portB: 51903 }]);
  });

  it('properties: ports unique and in range, every wanted pair served while ports last, nothing unwanted beyond the grace', () => {
    const pair = fc.tuple(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), fc.constantFrom('g', 'h', 'i', 'j')).map(([x, y]) => [x, y] as const);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.uniqueArray(pair, { selector: (p) => p.join(), maxLength: 8 }), fc.integer({ min: 0, max: 100_000 })), { maxLength: 6 }), (steps) => {
        let held: HeldSession[] = [];
        let now = 0;
        for (const [wanted, dt] of steps) {
          now += dt;
          held = planSessions({ ports: [51900, 51911], graceMs: 60_000, wanted, held, now });
          const ports = held.flatMap((s) => [s.portA, s.portB]);
          expect(new Set(ports).size).toBe(ports.length);
          for (const p of ports) expect(p >= 51900 && p <= 51911).toBe(true);
          for (const s of held) if (s.unwantedSince !== undefined) expect(now - s.unwantedSince).toBeLessThan(60_000);
          const served = held.filter((s) => s.unwantedSince === undefined).length;
          expect(served).toBe(Math.min(wanted.length, 6 - held.filter((s) => s.unwantedSince !== undefined).length, wanted.length));
        }
      }),
    );
  });
});
