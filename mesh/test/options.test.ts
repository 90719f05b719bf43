import { describe, expect, it } from 'vitest';
import { LAN_TIMING, WAN_TIMING, pushPullInterval, resolveTiming, retransmitLimit, suspicionBounds, suspicionTimeout } from '../options.ts';
import { BroadcastQueue } from '../broadcast-queue.ts';

describe('timing (memberlist formulas)', () => {
  it('LAN defaults and the WAN profile', () => {
    expect(resolveTiming(undefined)).toBe(LAN_TIMING);
    expect(resolveTiming('wan')).toBe(WAN_TIMING);
    expect(LAN_TIMING).toMatchObject({ probeIntervalMs: 1000, probeTimeoutMs: 500, indirectChecks: 3, gossipIntervalMs: 200, gossipNodes: 3, suspicionMult: 4 });
    expect(WAN_TIMING).toMatchObject({ probeIntervalMs: 5000, probeTimeoutMs: 3000, suspicionMult: 6, gossipIntervalMs: 500, gossipNodes: 4 });
    expect(resolveTiming({ probeIntervalMs: 200 })).toMatchObject({ probeIntervalMs: 200, probeTimeoutMs: 500 });
  });

  it.each([
    [1, 4000], [10, 4000], [100, 8000], [1000, 12000], [10000, 16000],
  ])('suspicion min timeout for %i members is %i ms, max is 6x', (n, min) => {
    expect(suspicionBounds(LAN_TIMING, n)).toEqual([min, min * 6]);
  });

  it('suspicion timeout shrinks logarithmically with confirmations, to the minimum', () => {
    const [min, max] = suspicionBounds(LAN_TIMING, 100);
    expect(suspicionTimeout(min, max, 0, 2)).toBe(max);
    const one = suspicionTimeout(min, max, 1, 2);
    expect(one).toBeLessThan(max);
    expect(one).toBeGreaterThan(min);
    expect(one).toBe(Math.floor(max - (max - min) * (Math.log(2) / Math.log(3))));
    expect(suspicionTimeout(min, max, 2, 2)).toBe(min);
    expect(suspicionTimeout(min, max, 9, 2)).toBe(min);
    expect(suspicionTimeout(min, max, 0, 0)).toBe(min);
  });

  it.each([
    [1, 4], [9, 4], [10, 8], [99, 8], [100, 12], [1000, 16], [10000, 20],
  ])('retransmit limit for %i members is %i', (n, limit) => {
    expect(retransmitLimit(LAN_TIMING, n)).toBe(limit);
  });

  it('push/pull interval scales with log2 past 32 members', () => {
    expect(pushPullInterval(LAN_TIMING, 32)).toBe(30_000);
    expect(pushPullInterval(LAN_TIMING, 64)).toBe(60_000);
    expect(pushPullInterval(LAN_TIMING, 1000)).toBe(180_000);
  });
});

describe('broadcast queue', () => {
  const msg = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

  it('sends fewest-transmitted first, newest first, within the byte budget, up to the limit', () => {
    const q = new BroadcastQueue(100);
    q.queue('a', msg(10, 1));
    q.queue('b', msg(10, 2));
    q.queue('c', msg(10, 3));
    expect(q.take(25, 3).map((m) => m[0])).toEqual([3, 2]);
    expect(q.take(25, 3).map((m) => m[0])).toEqual([1, 3]);
    expect(q.take(100, 3).map((m) => m[0])).toEqual([2, 1, 3]);
    expect(q.take(100, 3).map((m) => m[0])).toEqual([2, 1]);
    expect(q.size).toBe(0);
    expect(q.take(100, 3)).toEqual([]);
  });

  it('replaces an older message about the same subject and notifies it', () => {
    const q = new BroadcastQueue(100);
    let done = 0;
    q.queue('a', msg(5, 1), () => done++);
    q.queue('a', msg(5, 2));
    expect(done).toBe(1);
    expect(q.size).toBe(1);
    expect(q.take(100, 4).map((m) => m[0])).toEqual([2]);
  });

  it('is bounded: the most transmitted message is evicted first', () => {
    const q = new BroadcastQueue(3);
    q.queue('old', msg(5, 9));
    q.take(100, 10);
    q.queue('x', msg(5, 1));
    q.queue('y', msg(5, 2));
    q.queue('z', msg(5, 3));
    expect(q.size).toBe(3);
    expect(q.dropped).toBe(1);
    expect(q.take(100, 10).map((m) => m[0]).sort()).toEqual([1, 2, 3]);
  });
});
