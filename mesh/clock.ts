/**
 * Time and randomness as injected dependencies, so the protocol runs unchanged on real timers and
 * on the simulator's virtual clock.
 */

/** A scheduled callback that can be cancelled; cancelling twice or after it ran is harmless. */
export interface Timer {
  cancel(): void;
}

/** Milliseconds since the epoch and one-shot timers. */
export interface Clock {
  now(): number;
  /** Runs `fn` once after `ms`; `fn` must not throw (the caller guards it). */
  setTimeout(fn: () => void, ms: number): Timer;
}

/** A clock on `Date.now` and Node's timers; timers are unref'd so they never keep the process alive. */
export function systemClock(): Clock {
  return {
    now: () => Date.now(),
    setTimeout(fn, ms) {
      const t = setTimeout(fn, Math.max(0, ms));
      t.unref();
      return { cancel: () => clearTimeout(t) };
    },
  };
}

/** Uniform random number in [0, 1). */
export type Random = () => number;

/** A small, fast, seeded PRNG (sfc32), for reproducible simulations. */
export function seededRandom(seed: number): Random {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88 ^ (seed * 31);
  let c = 0xb7e15162;
  let d = (seed >>> 0) ^ 0x5bd1e995;
  const next = (): number => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}
