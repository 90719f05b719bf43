/**
 * Host CPU from `/proc/stat`: the aggregate `cpu` line as busy and total jiffies, and the busy
 * share between two readings. Parsing is pure; {@link readCpu} reads the file.
 */
import { readFile } from 'node:fs/promises';

/** Jiffies of the aggregate `cpu` line: busy = everything but idle and iowait. */
export interface CpuSample {
  readonly busy: number;
  readonly total: number;
}

/** A `/proc/stat` text without a valid aggregate `cpu` line. */
export class ProcStatError extends Error {
  override name = 'ProcStatError';
}

/** Parses the aggregate `cpu` line of `/proc/stat`. Guest time is already in user/nice, so it is not added. */
export function parseProcStat(text: string): CpuSample {
  const line = text.split('\n').find((l) => /^cpu\s/.test(l));
  if (!line) throw new ProcStatError('proc/stat: no aggregate cpu line');
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (f.length < 4 || f.some((x) => !Number.isFinite(x) || x < 0)) throw new ProcStatError(`proc/stat: bad cpu line ${JSON.stringify(line.slice(0, 100))}`);
  const [user, nice, system, idle, iowait = 0, irq = 0, softirq = 0, steal = 0] = f as [number, number, number, number, ...number[]];
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/**
 * Busy CPUs (cores' worth, 0..ncpu) between two samples taken `seconds` apart, from the share of
 * busy jiffies times the CPU count.
 */
export function busyCores(a: CpuSample, b: CpuSample, ncpu: number): number {
  const total = b.total - a.total;
  if (total <= 0) return 0;
  return ((b.busy - a.busy) / total) * ncpu;
}

/** Reads `/proc/stat` now. */
export async function readCpu(path = '/proc/stat'): Promise<CpuSample> {
  return parseProcStat(await readFile(path, 'utf8'));
}
