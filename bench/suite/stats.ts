/**
 * Statistics of repeated benchmark measurements: median, min and max of a run's repeats,
 * percentiles of latency samples, and ratios of paired measurements. Pure.
 */

/** Median, min and max of a set of repeats; `n` is how many finite values they came from. */
export interface Summary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

/** A statistics input that cannot be summarized (no finite value). */
export class StatsError extends Error {
  override name = 'StatsError';
}

/**
 * Median (mean of the two middle values for an even count), min and max of the finite values in
 * `values`; non-finite values (a failed repeat reported as NaN) are ignored. Throws
 * {@link StatsError} when no finite value is left.
 */
export function summarize(values: readonly number[]): Summary {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) throw new StatsError('stats: no finite value to summarize');
  const mid = v.length >> 1;
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

/**
 * The `p`-th percentile (0..100) of `samples` by the nearest-rank method (the smallest sample with
 * at least p% of the samples at or below it), so p99 of 100 samples is the 99th smallest.
 */
export function percentile(samples: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new StatsError(`stats: percentile ${p} is outside 0..100`);
  const v = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) throw new StatsError('stats: no finite sample for a percentile');
  const rank = Math.max(1, Math.ceil((p / 100) * v.length));
  return v[rank - 1]!;
}

/** Per-pair ratios of two paired series and their median, min and max. */
export interface PairedRatio extends Summary {
  /** `num[i] / den[i]` of every pair where both were measured (finite, denominator > 0), in pair order. */
  readonly ratios: readonly number[];
}

/**
 * The ratio of each pair `num[i] / den[i]` (two measurements taken back to back, so load drift on a
 * shared host hits both alike) and the median, min and max of those ratios. Pairs where either side
 * failed (non-finite) or the denominator is not positive are skipped. Throws {@link StatsError} when
 * the series differ in length or no pair is left. Pure.
 */
export function pairedRatios(num: readonly number[], den: readonly number[]): PairedRatio {
  if (num.length !== den.length) throw new StatsError(`stats: paired series differ in length (${num.length} vs ${den.length})`);
  const ratios: number[] = [];
  for (let i = 0; i < num.length; i++) {
    const a = num[i]!;
    const b = den[i]!;
    if (Number.isFinite(a) && Number.isFinite(b) && b > 0) ratios.push(a / b);
  }
  if (ratios.length === 0) throw new StatsError('stats: no complete pair to take a ratio of');
  return { ...summarize(ratios), ratios };
}
