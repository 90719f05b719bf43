/**
 * Relay choice by rendezvous (highest random weight) hashing, pure: for the pair {A, B} every member
 * computes the same relay from the same candidate set, without coordination, and a candidate joining
 * or leaving moves only the pairs it wins or held (about 1/n of them).
 */
import { createHash } from 'node:crypto';

/** The pair {a, b} in canonical order (lower name first). */
export function pairOf(a: string, b: string): readonly [string, string] {
  return a < b ? [a, b] : [b, a];
}

/** A stable text key for the pair {a, b}, whatever the argument order. */
export function pairKey(a: string, b: string): string {
  const [x, y] = pairOf(a, b);
  return `${x}\n${y}`;
}

/** The rendezvous weight of relay `r` for the pair {a, b}: the first 8 bytes of SHA-256(a, b, r), a < b. */
export function relayWeight(a: string, b: string, r: string): bigint {
  const [x, y] = pairOf(a, b);
  return createHash('sha256').update(`${x}\n${y}\n${r}`).digest().readBigUInt64BE(0);
}

/**
 * The relay for the pair {a, b}: the candidate other than a and b with the highest
 * {@link relayWeight} (ties, which need a 64-bit collision, go to the lower name). Undefined when no
 * candidate is left. The order of `candidates` does not matter.
 */
export function chooseRelay(a: string, b: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestW = -1n;
  for (const r of candidates) {
    if (r === a || r === b) continue;
    const w = relayWeight(a, b, r);
    if (w > bestW || (w === bestW && best !== undefined && r < best)) {
      best = r;
      bestW = w;
    }
  }
  return best;
}
