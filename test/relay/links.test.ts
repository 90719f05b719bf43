import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assessLinks, PROBE_AFTER_S, STALL_AFTER_MS, type LinkCounters, type LinkMemory, type LinkTarget } from '../../src/relay/links.ts';

const T0 = 1_700_000_000_000;
const opts = { relayAfterMs: 30_000 };
const target = (i: number, over: Partial<LinkTarget> = {}): LinkTarget => ({ name: `n${i}`, publicKey: `k${i}`, meshIP: `10.244.${i}.1`, endpoint: `192.0.2.${i}:51820`, ...over });

/** Runs assessments at the given times (ms after T0) with fixed handshakes, threading memory. */
function run(targets: LinkTarget[], hs: Record<string, number>, times: number[]) {
  let memory: LinkMemory = new Map();
  let out = assessLinks(targets, new Map(Object.entries(hs)), T0, memory, opts);
  for (const t of times) {
    memory = out.memory;
    out = assessLinks(targets, new Map(Object.entries(hs)), T0 + t, memory, opts);
  }
  return out;
}

describe('assessLinks', () => {
  it.each([
    ['never handshaken', 0, true],
    ['handshake 10 s ago', Math.floor(T0 / 1000) - 10, false],
    [`handshake ${PROBE_AFTER_S} s ago (still fresh)`, Math.floor(T0 / 1000) - PROBE_AFTER_S, false],
    [`handshake ${PROBE_AFTER_S + 1} s ago`, Math.floor(T0 / 1000) - PROBE_AFTER_S - 1, true],
  ])('probes a peer with %s: %s', (_what, hs, probed) => {
    const out = assessLinks([target(1)], new Map([['k1', hs]]), T0, new Map(), opts);
    expect(out.probe.map((t) => t.name)).toEqual(probed ? ['n1'] : []);
  });

  it('probes a planned peer the device does not have yet, and never one without an endpoint', () => {
    const out = assessLinks([target(1), target(2, { endpoint: undefined })], new Map(), T0, new Map(), opts);
    expect(out.probe.map((t) => t.name)).toEqual(['n1']);
    expect(out.failing).toEqual([]);
  });

  it('declares a direct link failed only after relayAfter without a handshake, and forgets it once one arrives', () => {
    expect(run([target(1)], { k1: 0 }, [10_000, 29_999]).failing).toEqual([]);
    expect(run([target(1)], { k1: 0 }, [10_000, 30_000]).failing).toEqual(['n1']);
    // A handshake arrives: the link is fine again at once.
    const failed = run([target(1)], { k1: 0 }, [30_000]);
    const healed = assessLinks([target(1)], new Map([['k1', Math.floor(T0 / 1000) + 31]]), T0 + 31_000, failed.memory, opts);
    expect(healed.failing).toEqual([]);
    expect(healed.probe).toEqual([]);
  });

  it('restarts the clock when the endpoint changes (a new address is tried for relayAfter too)', () => {
    const first = run([target(1)], { k1: 0 }, [30_000]);
    expect(first.failing).toEqual(['n1']);
    const moved = assessLinks([target(1, { endpoint: '198.18.0.9:51820' })], new Map([['k1', 0]]), T0 + 31_000, first.memory, opts);
    expect(moved.failing).toEqual([]);
    const later = assessLinks([target(1, { endpoint: '198.18.0.9:51820' })], new Map([['k1', 0]]), T0 + 61_000, moved.memory, opts);
    expect(later.failing).toEqual(['n1']);
  });

  it('never lists a relayed peer as failing, but still probes it', () => {
    const out = run([target(1, { relay: 'r' })], { k1: 0 }, [60_000]);
    expect(out.failing).toEqual([]);
    expect(out.probe.map((t) => t.name)).toEqual(['n1']);
  });

  it('a stale handshake counts from when the link first needed one', () => {
    const stale = Math.floor(T0 / 1000) - PROBE_AFTER_S - 100;
    // The endpoint was configured long ago, but the link only needed a handshake from T0 on.
    expect(run([target(1)], { k1: stale }, [29_000]).failing).toEqual([]);
    expect(run([target(1)], { k1: stale }, [30_000]).failing).toEqual(['n1']);
  });

  it('properties: outputs are sorted subsets of the targets; memory holds exactly the planned keys; fresh links are never probed or failing', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ i: fc.integer({ min: 1, max: 30 }), hsAgo: fc.option(fc.integer({ min: 0, max: 1000 }), { nil: undefined }), ep: fc.boolean() }), { maxLength: 20 }),
        fc.integer({ min: 0, max: 200_000 }),
        (rows, dt) => {
          const targets = rows.map((r) => target(r.i, r.ep ? {} : { endpoint: undefined }));
          const hs = new Map(rows.map((r) => [`k${r.i}`, r.hsAgo === undefined ? 0 : Math.floor((T0 + dt) / 1000) - r.hsAgo] as [string, number]));
          const a = assessLinks(targets, hs, T0, new Map(), opts);
          const b = assessLinks(targets, hs, T0 + dt, a.memory, opts);
          const keys = new Set(targets.map((t) => t.publicKey));
          expect(new Set(b.memory.keys())).toEqual(keys);
          const names = b.probe.map((t) => t.name);
          expect([...names].sort()).toEqual(names);
          expect([...b.failing].sort()).toEqual(b.failing);
          for (const n of b.failing) expect(names).toContain(n);
          for (const t of b.probe) {
            const h = hs.get(t.publicKey)!;
            expect(h === 0 || (T0 + dt) / 1000 - h > PROBE_AFTER_S).toBe(true);
            expect(t.endpoint).toBeDefined();
          }
          if (dt < opts.relayAfterMs) expect(b.failing).toEqual([]);
        },
      ),
    );
  });
});

describe('assessLinks: stalled sessions (a fresh handshake, but the peer stopped answering)', () => {
  /** Assessments every 10 s with a handshake 5 s before each and the given counters per step. */
  function steps(counters: LinkCounters[]) {
    let memory: LinkMemory = new Map();
    const outs = counters.map((c, i) => {
      const now = T0 + i * 10_000;
      const out = assessLinks([target(1)], new Map([['k1', Math.floor(now / 1000) - 5]]), now, memory, opts, new Map([['k1', c]]));
      memory = out.memory;
      return out;
    });
    return outs;
  }

  it('a peer that answers is never stalled, however much is sent', () => {
    const outs = steps(Array.from({ length: 12 }, (_, i) => ({ rx: 1000 * i, tx: 50_000 * i })));
    expect(outs.every((o) => o.probe.length === 0 && o.failing.length === 0)).toBe(true);
  });

  it('nothing sent and nothing received (idle) is not a stall', () => {
    const outs = steps(Array.from({ length: 12 }, () => ({ rx: 500, tx: 700 })));
    expect(outs.every((o) => o.probe.length === 0 && o.failing.length === 0)).toBe(true);
  });

  it(`sent without an answer: probed after ${STALL_AFTER_MS / 1000} s, failed relayAfter later, healed by any received byte`, () => {
    // Answers until step 2, then only the transmit counter grows.
    const counters = Array.from({ length: 10 }, (_, i) => ({ rx: Math.min(i, 2) * 100, tx: i * 1000 }));
    const outs = steps(counters);
    const firstProbe = outs.findIndex((o) => o.probe.length > 0);
    const firstFail = outs.findIndex((o) => o.failing.length > 0);
    // Unanswered since step 2 (20 s); stalled once 20 s have passed (step 4); failed relayAfter (30 s) later (step 7).
    expect(firstProbe).toBe(2 + STALL_AFTER_MS / 10_000);
    expect(firstFail).toBe(firstProbe + opts.relayAfterMs / 10_000);
    const healed = assessLinks([target(1)], new Map([['k1', Math.floor((T0 + 100_000) / 1000) - 5]]), T0 + 100_000, outs.at(-1)!.memory, opts, new Map([['k1', { rx: 300, tx: 10_000 }]]));
    expect(healed.probe).toEqual([]);
    expect(healed.failing).toEqual([]);
  });

  it('counters that restart (the peer was re-created) are not a stall', () => {
    const outs = steps([{ rx: 100, tx: 1000 }, { rx: 100, tx: 2000 }, { rx: 0, tx: 10 }, { rx: 0, tx: 20 }, { rx: 0, tx: 30 }]);
    // Unanswered from step 0 to 1, reset at step 2, unanswered again from step 2: not 20 s yet at step 3, 20 s at step 4.
    expect(outs.map((o) => o.probe.length)).toEqual([0, 0, 0, 0, 1]);
  });

  it('property: with the peer answering at every step, nothing is ever probed or failed while handshakes are fresh', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(10_000), fc.nat(10_000)), { minLength: 1, maxLength: 30 }), (deltas) => {
        let rx = 0;
        let tx = 0;
        const outs = steps(deltas.map(([drx, dtx]) => ({ rx: (rx += drx + 1), tx: (tx += dtx) })));
        return outs.every((o) => o.probe.length === 0 && o.failing.length === 0);
      }),
    );
  });
});

describe('peerLink (status)', async () => {
  const { peerLink } = await import('../../src/observe/peers.ts');
  it.each([
    [{ endpoint: 'x', lastHandshake: 995, relay: 'r' }, 'relayed'],
    [{ endpoint: 'x', lastHandshake: 0, relay: 'r' }, 'relayed'],
    [{ endpoint: 'x', lastHandshake: 995 }, 'connected'],
    [{ endpoint: 'x', lastHandshake: 0 }, 'handshaking'],
    [{ lastHandshake: 0 }, 'unreachable'],
  ])('%j is %s', (p, link) => {
    expect(peerLink(p, 1000)).toBe(link);
  });
});
