/**
 * A virtual clock for the Kubernetes source tests: virtual time runs `scale` times faster than real
 * time, so a 30 s backoff takes 30 ms and "the API server is down for minutes" takes a fraction of
 * a second, while real sockets keep working underneath.
 */
import type { Clock } from '../../src/k8s/clock.ts';

/** A clock whose time runs `scale` times faster than the wall clock; it also counts timers set. */
export function fastClock(scale = 1000): Clock & { timersSet: number; delays: number[] } {
  const start = Date.now();
  const c = {
    timersSet: 0,
    delays: [] as number[],
    now: () => start + (Date.now() - start) * scale,
    setTimer(fn: () => void, ms: number) {
      c.timersSet++;
      c.delays.push(ms);
      const t = setTimeout(fn, ms / scale);
      return { cancel: () => clearTimeout(t) };
    },
  };
  return c;
}
