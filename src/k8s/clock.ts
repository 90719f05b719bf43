/**
 * Time as the Kubernetes source sees it: injected so that backoff and timeouts run on virtual time
 * in tests (no real minute-long waits) and on the system clock in the agent.
 */

/** A cancellable timer handle. */
export interface TimerHandle {
  cancel(): void;
}

/** The clock the source uses for every delay. `setTimer` must not run `fn` synchronously. */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): TimerHandle;
}

/** The system clock; timers are unref'd so a pending backoff never keeps the process alive. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

/** Backoff policy: exponential with full jitter between `min` and the capped exponential. */
export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
}

/** Default reconnect backoff: 0.5 s doubling to 30 s. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000 };

/**
 * The delay before retry number `attempt` (0-based): `min(max, initial * 2^attempt)` scaled by a
 * factor in [0.5, 1) drawn from `random`, so that many agents restarting at once spread out. Pure.
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number): number {
  const cap = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(cap * (0.5 + r / 2));
}
