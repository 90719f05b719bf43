/**
 * Per-source token buckets with bounded memory, so a DNS server cannot be used to amplify traffic
 * towards spoofed sources. Pure apart from the clock value passed in.
 */

/** Limits of {@link SourceRateLimiter}. */
export interface RateLimitOptions {
  /** Sustained answers per second per source. */
  readonly qps: number;
  /** Bucket size: answers a quiet source may send at once. */
  readonly burst: number;
  /**
   * Sources tracked at most. When full, the oldest tracked source is forgotten (it simply starts
   * again with a full bucket), so memory stays bounded even under a flood of spoofed sources.
   * Default 65536.
   */
  readonly maxSources?: number;
}

interface Bucket {
  tokens: number;
  last: number;
}

/** Token bucket per source key (an IP address). `allow` is O(1). */
export class SourceRateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  readonly #max: number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(opts: RateLimitOptions) {
    if (!(opts.qps > 0) || !(opts.burst >= 1)) throw new RangeError(`ratelimit: qps must be > 0 and burst >= 1, got ${opts.qps}/${opts.burst}`);
    this.#rate = opts.qps / 1000;
    this.#burst = opts.burst;
    this.#max = Math.max(1, opts.maxSources ?? 65536);
  }

  /** Takes one token from `source`'s bucket at time `nowMs`; false when it is empty. */
  allow(source: string, nowMs: number): boolean {
    let b = this.#buckets.get(source);
    if (b === undefined) {
      if (this.#buckets.size >= this.#max) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
      b = { tokens: this.#burst, last: nowMs };
      this.#buckets.set(source, b);
    } else {
      const elapsed = nowMs - b.last;
      if (elapsed > 0) {
        b.tokens = Math.min(this.#burst, b.tokens + elapsed * this.#rate);
        b.last = nowMs;
      }
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Sources currently tracked (bounded by `maxSources`). */
  get size(): number {
    return this.#buckets.size;
  }
}
