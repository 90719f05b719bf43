/**
 * The datapath reconciler: makes the WireGuard device, its link, addresses and weft's routes match
 * the latest desired state, by diff (never by replace), one reconcile at a time, with triggers that
 * arrive meanwhile coalesced into one more pass over the newest state. A periodic resync repeats
 * the last state to repair drift. Errors are logged and counted and the stage is retried at the
 * next trigger or resync; nothing is ever thrown out of the loop.
 *
 * Reads. A resync always reads the whole WireGuard device and diffs against it. An `apply` may
 * instead diff against the device as weft last read and patched it (kept in memory), when that
 * model is younger than `trustMs` and the interface still has the same ifindex (a restarted
 * wireguard-go or a recreated link forces a real read). Reading 1,000 peers over UAPI costs tens of
 * milliseconds; this keeps a one-peer change to one write and no read, while drift by hand is
 * still repaired within one resync period, exactly as without the model.
 *
 * An `apply` of the very state object the last successful pass reconciled (the planner hands back
 * the same object when nothing it depends on changed), while the model is trusted, is not diffed at
 * all: at 1,000 peers every diff allocates per peer, and most triggers of a large mesh change
 * nothing. Drift repair does not depend on applies: the periodic resync always reads and diffs.
 */
import type { Logger } from 'pino';
import type { DesiredState } from '../model.ts';
import type { WgDevice, WireGuardBackend } from '../wireguard/backend.ts';
import { publicKeyFromPrivate } from '../wireguard/keys.ts';
import { applyDeviceUpdate, diffAddresses, diffDevice, diffLink, diffRoutes, isEmptyUpdate, updateWrites } from './diff.ts';
import { WEFT_RT_PROTO, type RtLink, type RtNetlink } from './rtnetlink.ts';

/** A reconcile stage failed; `stage` says which (device, link, addresses, routes, uninstall). */
export class DatapathError extends Error {
  override name = 'DatapathError';
  readonly stage: string;
  constructor(stage: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.stage = stage;
  }
}

/** Interval timers, injected so tests drive the resync by hand. */
export interface ResyncTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

/** Options of {@link DatapathReconciler}. */
export interface DatapathReconcilerOptions {
  readonly wg: WireGuardBackend;
  readonly rt: RtNetlink;
  readonly logger: Logger;
  /** Base64 WireGuard private key of this node (the one stored 0600 in the state dir). Never logged. */
  readonly privateKey: string;
  /** Resync period in ms; 0 disables the periodic resync. */
  readonly resyncMs: number;
  /** Monotonic milliseconds, for durations only. Default `performance.now`. */
  readonly now?: () => number;
  readonly timers?: ResyncTimers;
  /**
   * How long (ms) `apply` may trust the in-memory model of the device instead of reading it.
   * Default: `resyncMs` (0 = always read).
   */
  readonly trustMs?: number;
}

/** Outcome of one reconcile pass. */
export interface ReconcileResult {
  readonly ok: boolean;
  /** Mutating operations issued: one per WireGuard peer touched, one per device-level set, one per link/address/route change. */
  readonly writes: number;
  readonly durationMs: number;
  /** Stage errors of this pass (empty when ok). */
  readonly errors: readonly DatapathError[];
  /** True when the reconciler was stopped before this trigger ran. */
  readonly skipped?: boolean;
  /** True when the state was the one the last successful pass applied, so nothing was diffed. */
  readonly unchanged?: boolean;
  /** Milliseconds per stage (device, link, addresses, routes), for benchmarks and debug logs. */
  readonly stageMs?: Readonly<Record<string, number>>;
}

/** Counters for status and metrics. */
export interface DatapathStats {
  /** Reconcile passes run (each covers every trigger coalesced into it). */
  readonly reconciles: number;
  /** Full reads of the WireGuard device (every resync, and applies without a fresh model). */
  readonly deviceReads: number;
  /** Passes with at least one failed stage. */
  readonly errors: number;
  /** Writes issued in total (see {@link ReconcileResult.writes}). */
  readonly writes: number;
  readonly lastDurationMs: number;
  /** Message of the last failed stage, if the last pass failed. */
  readonly lastError?: string;
  /** Triggers that were folded into a pass already queued. */
  readonly coalesced: number;
  /** Routes of other protocols weft replaced to keep the cluster CIDR fail-closed. */
  readonly foreignRoutesReplaced: number;
  /** Applies of the state the last successful pass applied, answered without a diff. */
  readonly unchanged: number;
}

const defaultTimers: ResyncTimers = {
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as ReturnType<typeof setInterval>),
};

/**
 * Drives the datapath toward the latest {@link DesiredState}. Construct, call `start()` for the
 * periodic resync, then `apply()` on every new plan. `stop()` leaves everything in place;
 * `uninstall()` removes what weft owns.
 */
export class DatapathReconciler {
  private readonly wg: WireGuardBackend;
  private readonly rt: RtNetlink;
  private readonly log: Logger;
  private keys: { readonly privateKey: string; readonly publicKey: string };
  private readonly resyncMs: number;
  private readonly now: () => number;
  private readonly timers: ResyncTimers;
  private desired: DesiredState | undefined;
  private dirty = false;
  private loop: Promise<void> | null = null;
  private waiters: ((r: ReconcileResult) => void)[] = [];
  private timer: unknown;
  private stopped = false;
  private counters = { reconciles: 0, errors: 0, writes: 0, lastDurationMs: 0, coalesced: 0, foreignRoutesReplaced: 0, deviceReads: 0, unchanged: 0 };
  private readonly trustMs: number;
  /** The device as last read and patched, with the ifindex of its link at that time. */
  private model: { ifname: string; ifindex: number; device: WgDevice; readAt: number } | undefined;
  /** The state object the last pass reconciled without errors (identity), for unchanged applies. */
  private applied: DesiredState | undefined;
  /** A resync asked for a real read; the next pass takes it. */
  private fullRead = false;
  private lastError: string | undefined;

  constructor(opts: DatapathReconcilerOptions) {
    this.wg = opts.wg;
    this.rt = opts.rt;
    this.log = opts.logger;
    // Derive (and so validate) the public key up front: a bad key is a startup error, not a loop error.
    this.keys = Object.freeze({ privateKey: opts.privateKey, publicKey: publicKeyFromPrivate(opts.privateKey) });
    if (!Number.isInteger(opts.resyncMs) || opts.resyncMs < 0) throw new DatapathError('config', `datapath: resync ${opts.resyncMs} ms is not a non-negative integer`);
    this.resyncMs = opts.resyncMs;
    this.now = opts.now ?? (() => performance.now());
    this.timers = opts.timers ?? defaultTimers;
    this.trustMs = opts.trustMs ?? this.resyncMs;
    if (!Number.isFinite(this.trustMs) || this.trustMs < 0) throw new DatapathError('config', `datapath: trustMs ${opts.trustMs} is not a non-negative number`);
  }

  /** This node's WireGuard public key (derived from the private key). */
  get publicKey(): string {
    return this.keys.publicKey;
  }

  /**
   * Key rotation: validates `privateKey` now (throws on a bad key) and reconciles the last applied
   * state with it, so the device gets the new key. Resolves with that pass; null before the first apply.
   */
  setPrivateKey(privateKey: string): Promise<ReconcileResult> | null {
    this.keys = Object.freeze({ privateKey, publicKey: publicKeyFromPrivate(privateKey) });
    if (!this.desired || this.stopped) return null;
    this.fullRead = true;
    return this.trigger();
  }

  /** Starts the periodic resync (idempotent). Does not reconcile until a state has been applied. */
  start(): void {
    if (this.timer !== undefined || this.resyncMs === 0 || this.stopped) return;
    this.timer = this.timers.setInterval(() => void this.resync(), this.resyncMs);
  }

  /**
   * Makes `desired` the target and reconciles. Resolves (never rejects) with the result of the pass
   * that covered this state; while a pass runs, later calls coalesce into one more pass over the
   * newest state. Must not be called with a state whose `ifname` changes between calls without an
   * `uninstall` of the old one (the old interface would be left behind).
   */
  apply(desired: DesiredState): Promise<ReconcileResult> {
    if (desired === this.applied && desired === this.desired && !this.loop && !this.dirty && !this.fullRead && !this.stopped && this.modelTrusted()) {
      this.counters.unchanged++;
      return Promise.resolve({ ok: true, writes: 0, durationMs: 0, errors: [], unchanged: true });
    }
    this.desired = desired;
    return this.trigger();
  }

  /** Reconciles the last applied state again (what the periodic timer calls). Null before the first apply. */
  resync(): Promise<ReconcileResult> | null {
    if (!this.desired || this.stopped) return null;
    this.fullRead = true;
    return this.trigger();
  }

  /** Counters for status and metrics. */
  stats(): DatapathStats {
    return { ...this.counters, ...(this.lastError !== undefined ? { lastError: this.lastError } : {}) };
  }

  /** Stops the resync and waits for a running pass; leaves the datapath in place. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) this.timers.clearInterval(this.timer);
    this.timer = undefined;
    await this.loop;
    this.flushWaiters({ ok: false, writes: 0, durationMs: 0, errors: [], skipped: true });
  }

  /**
   * Stops, then removes what weft owns: every route carrying weft's protocol in the main table and
   * the WireGuard interface `ifname` (and, for userspace, the process weft started). Routes of
   * other protocols (the CNI's per-pod routes included), the underlay and the pod gateway device are left alone. Rejects with {@link DatapathError}
   * listing what could not be removed.
   */
  async uninstall(ifname: string): Promise<void> {
    await this.stop();
    const errors: unknown[] = [];
    // The interface goes first (its routes go with it) while the blackhole fallbacks still hold the
    // cluster CIDR; then every remaining weft route.
    try {
      await this.wg.deleteDevice(ifname);
      if (await this.rt.getLink(ifname)) await this.rt.deleteLink(ifname);
    } catch (err) {
      errors.push(err);
    }
    try {
      for (const r of await this.rt.listRoutes()) {
        if (r.protocol !== WEFT_RT_PROTO) continue;
        try {
          await this.rt.delRoute(r.type === 'blackhole' ? { dst: r.dst, blackhole: true, metric: r.metric } : r.dev !== undefined ? { dst: r.dst, dev: r.dev } : { dst: r.dst });
        } catch (err) {
          errors.push(err);
        }
      }
    } catch (err) {
      errors.push(err);
    }
    if (errors.length > 0) {
      throw new DatapathError('uninstall', `datapath: uninstall ${ifname}: ${errors.length} operation(s) failed: ${msg(errors[0])}`, { cause: errors[0] });
    }
    this.log.info({ ifname }, 'datapath uninstalled');
  }

  private trigger(): Promise<ReconcileResult> {
    if (this.stopped) return Promise.resolve({ ok: false, writes: 0, durationMs: 0, errors: [], skipped: true });
    return new Promise((resolve) => {
      if (this.dirty) this.counters.coalesced++;
      this.waiters.push(resolve);
      this.dirty = true;
      if (!this.loop) this.loop = this.run();
    });
  }

  private async run(): Promise<void> {
    try {
      while (this.dirty && !this.stopped) {
        this.dirty = false;
        const waiters = this.waiters;
        this.waiters = [];
        let r: ReconcileResult;
        const desired = this.desired!;
        this.applied = undefined;
        try {
          r = await this.reconcile(desired);
          if (r.ok) this.applied = desired;
        } catch (err) {
          // Stages catch their own errors; this is the last line so that nothing ever escapes the loop.
          const e = new DatapathError('reconcile', `datapath: reconcile: ${msg(err)}`, { cause: err });
          this.counters.reconciles++;
          this.counters.errors++;
          this.lastError = e.message;
          this.log.error({ err: e }, 'datapath reconcile failed unexpectedly; retrying at the next trigger');
          r = { ok: false, writes: 0, durationMs: 0, errors: [e] };
        }
        for (const w of waiters) w(r);
      }
    } finally {
      // Runs in the same microtask as the last `dirty` check, so no trigger can slip in between.
      this.loop = null;
    }
  }

  private flushWaiters(r: ReconcileResult): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f(r);
  }

  /** One pass. Each stage runs even when an earlier one failed: the fail-closed routes matter most. */
  private async reconcile(desired: DesiredState): Promise<ReconcileResult> {
    const t0 = this.now();
    const errors: DatapathError[] = [];
    let writes = 0;
    const ifname = desired.ifname;
    const stageMs: Record<string, number> = {};
    const stage = async (name: string, fn: () => Promise<number>) => {
      const ts = this.now();
      try {
        writes += await fn();
      } catch (err) {
        const e = err instanceof DatapathError ? err : new DatapathError(name, `datapath: ${name} ${ifname}: ${msg(err)}`, { cause: err });
        errors.push(e);
        this.log.warn({ err: e, stage: name, ifname }, 'datapath stage failed; retrying at the next resync');
      } finally {
        stageMs[name] = this.now() - ts;
      }
    };

    const full = this.fullRead;
    this.fullRead = false;
    // The link as the device stage saw it, reused by the link stage (one rtnetlink read less).
    let seenLink: RtLink | null | undefined;
    await stage('device', async () => {
      let w = 0;
      const cached = await this.cachedDevice(ifname, full);
      let dev = cached?.device ?? null;
      // The model keeps the time of the real read it descends from, so trust never extends itself.
      const readAt = dev ? this.model!.readAt : this.now();
      if (!dev) {
        this.counters.deviceReads++;
        dev = await this.wg.getDevice(ifname);
        if (!dev) {
          await this.wg.ensureDevice(ifname);
          w++;
          dev = await this.wg.getDevice(ifname);
          if (!dev) throw new DatapathError('device', `datapath: device ${ifname}: missing right after it was created`);
          this.log.info({ ifname, backend: this.wg.kind }, 'created WireGuard interface');
        }
        this.model = undefined;
      }
      const update = diffDevice(desired, dev, this.keys);
      let after = dev;
      if (!isEmptyUpdate(update)) {
        this.model = undefined; // a failed or partial set leaves the device unknown
        await this.wg.setDevice(ifname, update);
        w += updateWrites(update);
        after = applyDeviceUpdate(dev, update, () => this.keys.publicKey);
        this.log.debug(
          { ifname, peers: update.peers?.length ?? 0, removed: update.peers?.filter((p) => p.remove).length ?? 0, key: update.privateKey !== undefined, port: update.listenPort },
          'patched WireGuard device',
        );
      }
      const link = cached ? cached.link : await this.rt.getLink(ifname);
      seenLink = link;
      this.model = link && this.trustMs > 0 ? { ifname, ifindex: link.index, device: after, readAt } : undefined;
      return w;
    });
    if (errors.some((e) => e.stage === 'device')) this.model = undefined;

    let linkOk = false;
    await stage('link', async () => {
      const link = seenLink !== undefined ? seenLink : await this.rt.getLink(ifname);
      if (!link) throw new DatapathError('link', `datapath: link ${ifname}: not found`);
      linkOk = true;
      const change = diffLink(desired, link);
      if (change.mtu === undefined && change.up === undefined) return 0;
      await this.rt.setLink(ifname, change);
      return 1;
    });
    if (!linkOk) return this.finish(t0, writes, errors, stageMs);

    await stage('addresses', async () => {
      const { add, del } = diffAddresses(desired.addresses, await this.rt.listAddresses(ifname));
      for (const a of add) await this.rt.addAddress(ifname, a);
      for (const a of del) await this.rt.delAddress(ifname, a);
      return add.length + del.length;
    });

    await stage('routes', async () => {
      const d = diffRoutes(desired.routes, await this.rt.listRoutes());
      let w = 0;
      for (const f of d.replaceForeign) {
        this.counters.foreignRoutesReplaced++;
        this.log.warn({ dst: f.dst, protocol: f.protocol, dev: f.dev, gateway: f.gateway }, 'replacing a route of another owner: the cluster CIDR must go into WireGuard');
      }
      for (const r of d.add) {
        try {
          await this.rt.addRoute(r);
        } catch (err) {
          // Someone added the destination between our list and our add: take it over (fail-closed).
          if ((err as { code?: string }).code !== 'EEXIST') throw err;
          await this.rt.replaceRoute(r);
        }
        w++;
      }
      for (const r of d.replace) {
        await this.rt.replaceRoute(r);
        w++;
      }
      for (const r of d.del) {
        await this.rt.delRoute(r);
        w++;
      }
      return w;
    });

    return this.finish(t0, writes, errors, stageMs);
  }

  /** Whether an apply may still rely on the model (it exists and its real read is younger than trustMs). No I/O. */
  private modelTrusted(): boolean {
    return this.model !== undefined && this.now() - this.model.readAt < this.trustMs;
  }

  /** The trusted model of the device, or null when a real read is needed. */
  private async cachedDevice(ifname: string, full: boolean): Promise<{ device: WgDevice; link: RtLink } | null> {
    const m = this.model;
    if (full || !m || m.ifname !== ifname || this.now() - m.readAt >= this.trustMs) return null;
    const link = await this.rt.getLink(ifname);
    if (!link || link.index !== m.ifindex) return null;
    return { device: m.device, link };
  }

  private finish(t0: number, writes: number, errors: DatapathError[], stageMs: Record<string, number>): ReconcileResult {
    const durationMs = this.now() - t0;
    this.counters.reconciles++;
    this.counters.writes += writes;
    this.counters.lastDurationMs = durationMs;
    if (errors.length > 0) {
      this.counters.errors++;
      this.lastError = errors[0]!.message;
    } else {
      this.lastError = undefined;
      if (writes > 0) this.log.info({ writes, durationMs: Math.round(durationMs * 10) / 10 }, 'datapath reconciled');
    }
    return { ok: errors.length === 0, writes, durationMs, errors, stageMs };
  }
}

function msg(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
