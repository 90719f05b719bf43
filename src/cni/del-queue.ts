/**
 * The DEL queue: when the agent is down, the plugin still answers DEL with success (the spec and
 * kubelet require DEL to succeed) and leaves a file per attachment under
 * `<stateDir>/cni-del-queue/`; the agent drains it at start, releasing the addresses and removing
 * leftover host veths. One file per attachment (named by its host veth name) makes repeated DELs
 * idempotent and lets concurrent plugin processes write without locking.
 */
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CNI_LIMITS, hostVethName } from './spec.ts';

/** One queued release. */
export interface QueuedDel {
  readonly containerId: string;
  readonly ifname: string;
  /** Netns path as given to DEL (may be empty or gone). */
  readonly netns: string;
  /** ms since the epoch. */
  readonly queuedAt: number;
}

/** Most files the queue holds; beyond it DEL still succeeds, and GC catches the leftovers. */
export const MAX_QUEUED = 10_000;

/** Directory of the queue under a state dir. */
export function delQueueDir(stateDir: string): string {
  return join(stateDir, 'cni-del-queue');
}

/** The queue is full or the file could not be written. */
export class DelQueueError extends Error {
  override name = 'DelQueueError';
}

/** Writes one entry atomically (temp + fsync + rename). Idempotent per attachment. */
export async function enqueueDel(stateDir: string, entry: QueuedDel): Promise<string> {
  const dir = delQueueDir(stateDir);
  await mkdirs(dir, 0);
  const names = await readdir(dir);
  const file = join(dir, `${hostVethName(entry.containerId, entry.ifname)}.json`);
  if (names.length >= MAX_QUEUED && !names.includes(`${hostVethName(entry.containerId, entry.ifname)}.json`)) {
    throw new DelQueueError(`cni: DEL queue ${dir} is full (${names.length} entries)`);
  }
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(entry));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  return file;
}

/**
 * `mkdir -p` with a depth bound. Node's `mkdir({ recursive: true })` spins forever on paths under
 * pseudo filesystems that answer ENOENT to every create (e.g. /proc), and the plugin must never hang.
 */
async function mkdirs(dir: string, depth: number): Promise<void> {
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || depth > 32 || dirname(dir) === dir) throw err;
    await mkdirs(dirname(dir), depth + 1);
    await mkdir(dir, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
}

/** Options of {@link drainDelQueue}. */
export interface DrainOptions {
  readonly stateDir: string;
  /** Performs one release (the handler's DEL path); must be idempotent. A throw keeps the entry for next time. */
  readonly release: (entry: QueuedDel) => Promise<void>;
  /** Called once per dropped malformed entry or failed release. */
  readonly onError?: (file: string, err: unknown) => void;
}

/**
 * Releases every queued DEL and removes its file. Malformed entries are dropped (reported through
 * `onError`); failed releases stay queued. Returns the counts. Safe to call repeatedly (e.g. at
 * start and on each resync).
 */
export async function drainDelQueue(opts: DrainOptions): Promise<{ drained: number; failed: number; dropped: number }> {
  const dir = delQueueDir(opts.stateDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { drained: 0, failed: 0, dropped: 0 };
    throw err;
  }
  let drained = 0;
  let failed = 0;
  let dropped = 0;
  for (const name of names.slice(0, MAX_QUEUED)) {
    const file = join(dir, name);
    if (!name.endsWith('.json')) {
      // A temp file left by a plugin that died mid-write: nothing was promised for it.
      if (name.includes('.tmp-')) await unlink(file).catch(() => {});
      continue;
    }
    let entry: QueuedDel;
    try {
      entry = parseEntry(await readFile(file, 'utf8'));
    } catch (err) {
      opts.onError?.(file, err);
      await unlink(file).catch(() => {});
      dropped++;
      continue;
    }
    try {
      await opts.release(entry);
      await unlink(file).catch(() => {});
      drained++;
    } catch (err) {
      opts.onError?.(file, err);
      failed++;
    }
  }
  return { drained, failed, dropped };
}

function parseEntry(text: string): QueuedDel {
  if (text.length > 16_384) throw new DelQueueError('cni: queued DEL entry too large');
  const e = JSON.parse(text) as Partial<QueuedDel>;
  if (!e || typeof e.containerId !== 'string' || e.containerId.length === 0 || e.containerId.length > CNI_LIMITS.containerId) throw new DelQueueError('cni: queued DEL entry has a bad containerId');
  if (typeof e.ifname !== 'string' || e.ifname.length === 0 || e.ifname.length > CNI_LIMITS.ifname) throw new DelQueueError('cni: queued DEL entry has a bad ifname');
  return { containerId: e.containerId, ifname: e.ifname, netns: typeof e.netns === 'string' ? e.netns.slice(0, CNI_LIMITS.netns) : '', queuedAt: typeof e.queuedAt === 'number' ? e.queuedAt : 0 };
}
