/**
 * A reflector: keeps a local, slimmed copy of one Kubernetes collection in sync with the API server
 * by list + watch, the way client-go's reflector does. It is written on top of the real
 * `@kubernetes/client-node` transport (typed list calls and its `Watch`) instead of the library's
 * `ListWatch`, because the agent needs what that one lacks: bookmarks, backoff on an injected clock,
 * restarting after list errors by itself, and a `connected` flag.
 *
 * Behaviour:
 * - list, then watch from the list's resourceVersion with `allowWatchBookmarks`; bookmarks and
 *   events advance the RV, so a reconnect resumes where it left off;
 * - 410 Gone (an ERROR event with code 410, or an HTTP 410) clears the RV: the next round relists
 *   and replaces the store (objects missing from the new list are removed);
 * - a dropped or ended stream reconnects at once from the last RV; repeated failures (list errors,
 *   refused watches, streams that end without delivering anything) back off exponentially with jitter;
 * - the store is never cleared on errors: while the API server is unreachable the last known state
 *   stays and `connected` is false.
 */
import type { Logger } from 'pino';
import { type BackoffPolicy, type Clock, type TimerHandle, backoffDelay } from './clock.ts';
import type { SlimResult } from './slim.ts';

/** A list result as the reflector needs it. */
export interface ListResult {
  readonly items: readonly unknown[];
  readonly resourceVersion: string;
}

/** A running watch; `abort` ends it and must make `onDone` fire (once) or be a no-op after it did. */
export interface WatchHandle {
  abort(): void;
}

/**
 * The transport of one collection. `watch` resolves once the stream is established (or has already
 * failed, in which case `onDone` was called with the error before it resolves).
 */
export interface ListWatchTransport {
  list(): Promise<ListResult>;
  watch(resourceVersion: string, onEvent: (type: string, object: unknown) => void, onDone: (err: unknown) => void): Promise<WatchHandle>;
}

/** Counters of one reflector, exported as metrics by the agent. */
export interface ReflectorStats {
  lists: number;
  listErrors: number;
  watches: number;
  watchErrors: number;
  /** Relists caused by 410 Gone. */
  gone: number;
  events: number;
  bookmarks: number;
  /** Objects or fields dropped as invalid. */
  dropped: number;
}

/** Options of a {@link Reflector}. */
export interface ReflectorOptions<T> {
  /** Name for logs and errors, e.g. "nodes". */
  readonly name: string;
  readonly transport: ListWatchTransport;
  readonly slim: (obj: unknown) => SlimResult<T>;
  readonly key: (value: T) => string;
  readonly clock: Clock;
  readonly random: () => number;
  readonly backoff: BackoffPolicy;
  /** Bound on a list call; past it the list counts as failed (the request itself is left to finish). */
  readonly listTimeoutMs: number;
  /** A watch that lasts less than this and delivers nothing counts as a failure (backs off). */
  readonly minWatchMs: number;
  readonly logger: Logger;
  /** Called after the store or the connection state changed. Must not block or throw. */
  readonly onChange: () => void;
}

/** An error raised by a list call, with the collection name as context prefix. */
export class KubeListError extends Error {
  override name = 'KubeListError';
}

function statusCode(err: unknown): number | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const e = err as { statusCode?: unknown; code?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.code === 'number') return e.code;
  return undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Keeps the slimmed objects of one collection in sync; see the module comment for the contract. */
export class Reflector<T> {
  private readonly opts: ReflectorOptions<T>;
  private store = new Map<string, T>();
  private storeJSON = new Map<string, string>();
  private rv = '';
  private stopped = true;
  private loop: Promise<void> | undefined;
  private current: WatchHandle | undefined;
  private sleeping: { timer: TimerHandle; wake: () => void } | undefined;
  private cancelList: (() => void) | undefined;
  private attempt = 0;
  private _connected = false;
  private _synced = false;
  private _freshAt: number | undefined;
  readonly stats: ReflectorStats = { lists: 0, listErrors: 0, watches: 0, watchErrors: 0, gone: 0, events: 0, bookmarks: 0, dropped: 0 };

  constructor(opts: ReflectorOptions<T>) {
    this.opts = opts;
  }

  /** True while the last list succeeded and the watch is established. */
  get connected(): boolean {
    return this._connected;
  }

  /** True once one list has succeeded (the store reflects the API server at least once). */
  get synced(): boolean {
    return this._synced;
  }

  /**
   * When (on the injected clock) the store was last confirmed current by the server: a list
   * completed, or an event or bookmark arrived. Undefined before the first list.
   */
  get freshAt(): number | undefined {
    return this._freshAt;
  }

  /** The last resourceVersion seen ('' = a relist is due). */
  get resourceVersion(): string {
    return this.rv;
  }

  /** The current objects, in key order. */
  values(): T[] {
    return [...this.store.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
  }

  /** Starts the list/watch loop. Idempotent. Never throws; errors are logged, counted and retried. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /** Stops the loop and ends the watch; keeps the store. Resolves when the loop has exited. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort();
    this.cancelList?.();
    if (this.sleeping) {
      this.sleeping.timer.cancel();
      this.sleeping.wake();
    }
    await this.loop;
    this.setConnected(false);
  }

  private setConnected(v: boolean): void {
    if (this._connected === v) return;
    this._connected = v;
    this.opts.onChange();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.sleeping = undefined;
        resolve();
      };
      this.sleeping = { timer: this.opts.clock.setTimer(wake, ms), wake };
    });
  }

  private async backoff(): Promise<void> {
    const ms = backoffDelay(this.opts.backoff, this.attempt++, this.opts.random);
    this.opts.logger.debug({ informer: this.opts.name, delayMs: ms, attempt: this.attempt }, 'backing off');
    await this.sleep(ms);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (this.rv === '') {
        const ok = await this.relist();
        if (this.stopped) break;
        if (!ok) {
          this.setConnected(false);
          await this.backoff();
          continue;
        }
      }
      const outcome = await this.watchOnce();
      if (this.stopped) break;
      if (outcome === 'gone') {
        this.stats.gone++;
        this.rv = '';
        this.opts.logger.info({ informer: this.opts.name }, 'watch expired (410 Gone); relisting');
        continue;
      }
      if (outcome === 'refused') this.setConnected(false);
      if (outcome === 'healthy') {
        this.attempt = 0;
        continue;
      }
      await this.backoff();
    }
  }

  /** A list bounded by the timeout and by {@link stop} (a hung request never holds up shutdown). */
  private listWithTimeout(): Promise<ListResult> {
    return new Promise((resolve, reject) => {
      const timer = this.opts.clock.setTimer(
        () => reject(new KubeListError(`k8s: list ${this.opts.name}: timed out after ${this.opts.listTimeoutMs} ms`)),
        this.opts.listTimeoutMs,
      );
      this.cancelList = () => {
        timer.cancel();
        reject(new KubeListError(`k8s: list ${this.opts.name}: stopped`));
      };
      this.opts.transport.list().then(
        (r) => {
          timer.cancel();
          this.cancelList = undefined;
          resolve(r);
        },
        (err: unknown) => {
          timer.cancel();
          this.cancelList = undefined;
          reject(new KubeListError(`k8s: list ${this.opts.name}: ${errText(err)}`, { cause: err }));
        },
      );
    });
  }

  /** Lists and replaces the store. Returns false on failure (logged and counted). */
  private async relist(): Promise<boolean> {
    this.stats.lists++;
    let result: ListResult;
    try {
      result = await this.listWithTimeout();
    } catch (err) {
      if (this.stopped) return false;
      this.stats.listErrors++;
      this.opts.logger.warn({ informer: this.opts.name, err: errText(err) }, 'list failed');
      return false;
    }
    if (this.stopped) return false;
    const next = new Map<string, T>();
    const nextJSON = new Map<string, string>();
    for (const item of result.items) {
      const s = this.opts.slim(item);
      if (!s.ok) {
        this.stats.dropped++;
        continue;
      }
      this.stats.dropped += s.dropped;
      const k = this.opts.key(s.value);
      next.set(k, s.value);
      nextJSON.set(k, JSON.stringify(s.value));
    }
    this.store = next;
    this.storeJSON = nextJSON;
    this.rv = result.resourceVersion;
    this._synced = true;
    this._freshAt = this.opts.clock.now();
    // Always notify: even an unchanged relist moves freshAt.
    this.opts.onChange();
    return true;
  }

  private apply(type: string, object: unknown): 'ok' | 'gone' | 'error' {
    const meta = (object as { metadata?: { resourceVersion?: unknown } } | null)?.metadata;
    const rv = typeof meta?.resourceVersion === 'string' && meta.resourceVersion.length <= 64 ? meta.resourceVersion : undefined;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        this.stats.events++;
        this._freshAt = this.opts.clock.now();
        const s = this.opts.slim(object);
        if (!s.ok) {
          this.stats.dropped++;
        } else {
          this.stats.dropped += s.dropped;
          const k = this.opts.key(s.value);
          if (type === 'DELETED') {
            if (this.store.delete(k)) {
              this.storeJSON.delete(k);
              this.opts.onChange();
            }
          } else {
            const j = JSON.stringify(s.value);
            if (this.storeJSON.get(k) !== j) {
              this.store.set(k, s.value);
              this.storeJSON.set(k, j);
              this.opts.onChange();
            }
          }
        }
        if (rv !== undefined) this.rv = rv;
        return 'ok';
      }
      case 'BOOKMARK':
        this.stats.bookmarks++;
        if (rv !== undefined) this.rv = rv;
        this._freshAt = this.opts.clock.now();
        this.opts.onChange();
        return 'ok';
      case 'ERROR':
        return statusCode(object) === 410 ? 'gone' : 'error';
      default:
        this.stats.dropped++;
        return 'ok';
    }
  }

  /**
   * Runs one watch to its end. `healthy`: it delivered something or lasted long enough, reconnect
   * now; `gone`: 410, relist now; `refused`: could not connect; `failed`: ended badly, back off.
   */
  private watchOnce(): Promise<'healthy' | 'gone' | 'refused' | 'failed'> {
    return new Promise((resolve) => {
      this.stats.watches++;
      const startedAt = this.opts.clock.now();
      let delivered = 0;
      let verdict: 'gone' | 'error' | undefined;
      let done = false;
      let established = false;
      const finish = (err: unknown) => {
        if (done) return;
        done = true;
        this.current = undefined;
        if (verdict === 'gone' || statusCode(err) === 410) return resolve('gone');
        if (this.stopped) return resolve('failed');
        if (!established) {
          this.stats.watchErrors++;
          this.opts.logger.warn({ informer: this.opts.name, err: errText(err) }, 'watch failed to connect');
          return resolve('refused');
        }
        if (verdict === 'error' || err) {
          this.stats.watchErrors++;
          this.opts.logger.info({ informer: this.opts.name, err: err ? errText(err) : 'ERROR event' }, 'watch ended with an error');
        }
        const lasted = this.opts.clock.now() - startedAt;
        resolve(delivered > 0 || lasted >= this.opts.minWatchMs ? 'healthy' : 'failed');
      };
      const onEvent = (type: string, object: unknown) => {
        if (done) return;
        const r = this.apply(type, object);
        if (r === 'ok') {
          delivered++;
          return;
        }
        verdict = r;
        this.current?.abort();
      };
      this.opts.transport.watch(this.rv, onEvent, finish).then(
        (handle) => {
          if (done) return;
          established = true;
          this.current = handle;
          this.setConnected(true);
          if (this.stopped || verdict !== undefined) handle.abort();
        },
        (err: unknown) => finish(err),
      );
    });
  }
}
