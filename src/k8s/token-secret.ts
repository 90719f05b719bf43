/**
 * Keeps one Kubernetes Secret (default `weft-join-tokens` in the agent's namespace) in step with the mesh's
 * join tokens when the agent runs in-cluster (issue 7). Content and merge rules are pure, in
 * `src/token/mirror.ts`; this file does the I/O:
 *
 * - write-through: {@link TokenSecretMirror.trigger} after a token create/revoke through this agent;
 * - a slow periodic resync (default 5 min, jittered) from the mesh snapshot, whoever issued the tokens;
 * - read-back after start (default after 20 s, so gossip has delivered what the mesh still knows) and at
 *   every periodic resync: tokens in the Secret the mesh lost are re-published by this agent (`planRestore`);
 * - optimistic concurrency: read, merge the Secret's content with the mesh's, write nothing when the result
 *   is byte-identical, else replace with the read `resourceVersion`; a 409 re-reads and merges again. Every
 *   agent may do this at once: the merge is monotone and the encoding deterministic, so they converge.
 *
 * Never on the datapath: everything runs on timers, failures are logged, counted and retried with backoff.
 */
import { readFileSync } from 'node:fs';
import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { MeshSnapshot } from '../../mesh/api.ts';
import { loadKubeConfig } from './start.ts';
import { type BackoffPolicy, type Clock, DEFAULT_BACKOFF, type TimerHandle, backoffDelay, systemClock } from './clock.ts';
import {
  DEFAULT_MIRROR_MAX_BYTES,
  MIRROR_KEY_PREFIX,
  decodeMirror,
  encodeMirror,
  mergeMirrors,
  mirrorFromMesh,
  mirrorSealKey,
  planRestore,
  sameMirrorData,
  type Restoration,
} from '../token/mirror.ts';

/** Default name of the mirror Secret. */
export const DEFAULT_TOKEN_SECRET = 'weft-join-tokens';
/** Where a pod's service account namespace is mounted. */
const SA_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** A mirror operation failed (API error, unexpected answer); the mirror logs, counts and retries it. */
export class TokenSecretError extends Error {
  override name = 'TokenSecretError';
  /** HTTP status from the API server, when there was one. */
  readonly status: number | undefined;
  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(`token secret: ${message}`, options);
    this.status = status;
  }
}

/** The Secret as read: its `data` and the resourceVersion to write against. */
export interface SecretState {
  readonly data: Readonly<Record<string, string>>;
  readonly resourceVersion: string;
  /** The whole object, so a replace keeps labels, annotations and other data keys. */
  readonly object: V1Secret;
}

/** The three calls the mirror makes. `replace`/`create` answer 'conflict' on 409 and throw on anything else. */
export interface TokenSecretTransport {
  /** Where the Secret lives, for logs ("namespace/name"). */
  readonly where: string;
  /** undefined when the Secret does not exist (404). */
  read(): Promise<SecretState | undefined>;
  replace(current: SecretState, data: Record<string, string>): Promise<'ok' | 'conflict'>;
  create(data: Record<string, string>): Promise<'ok' | 'conflict'>;
}

function statusOf(err: unknown): number | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; statusCode?: unknown };
  return typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : undefined;
}

function wrap(what: string, err: unknown): TokenSecretError {
  const status = statusOf(err);
  const hint = status === 403 ? ' (forbidden: check the Role in deploy/rbac.yaml grants get/update on this Secret)' : '';
  const text = err instanceof Error ? err.message.split('\n')[0]!.slice(0, 300) : String(err);
  return new TokenSecretError(`${what}: ${status !== undefined ? `HTTP ${status}: ` : ''}${text}${hint}`, status, { cause: err });
}

/** The real transport over `@kubernetes/client-node`'s CoreV1Api (get, replace with resourceVersion, create). */
export function secretTransport(kc: KubeConfig, namespace: string, name: string): TokenSecretTransport {
  const api = kc.makeApiClient(CoreV1Api);
  const where = `${namespace}/${name}`;
  return {
    where,
    async read() {
      let s: V1Secret;
      try {
        s = await api.readNamespacedSecret({ name, namespace });
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw wrap(`get ${where}`, err);
      }
      return { data: s.data ?? {}, resourceVersion: s.metadata?.resourceVersion ?? '', object: s };
    },
    async replace(current, data) {
      const body: V1Secret = { ...current.object, apiVersion: 'v1', kind: 'Secret', metadata: { ...current.object.metadata, name, namespace, resourceVersion: current.resourceVersion }, data };
      try {
        await api.replaceNamespacedSecret({ name, namespace, body });
        return 'ok';
      } catch (err) {
        if (statusOf(err) === 409) return 'conflict';
        throw wrap(`update ${where}`, err);
      }
    },
    async create(data) {
      const body: V1Secret = { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name, namespace, labels: { 'app.kubernetes.io/name': 'weft', 'app.kubernetes.io/component': 'join-tokens' } }, data };
      try {
        await api.createNamespacedSecret({ namespace, body });
        return 'ok';
      } catch (err) {
        if (statusOf(err) === 409) return 'conflict';
        throw wrap(`create ${where}`, err);
      }
    },
  };
}

/**
 * The agent's namespace: `WEFT_NAMESPACE` / `POD_NAMESPACE` (downward API), else the service account's
 * mounted namespace file, else "weft". Never throws.
 */
export function agentNamespace(env: Readonly<Record<string, string | undefined>>, readFile: (p: string) => string = (p) => readFileSync(p, 'utf8')): string {
  for (const k of ['WEFT_NAMESPACE', 'POD_NAMESPACE']) {
    const v = env[k]?.trim();
    if (v) return v;
  }
  try {
    const v = readFile(SA_NAMESPACE_FILE).trim();
    if (/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) return v;
  } catch {
    // not in a pod
  }
  return 'weft';
}

/** What the mirror needs from the mesh (a subset of `MeshHandle`). */
export interface TokenMirrorMesh {
  snapshot(): MeshSnapshot;
  setLocal(key: string, payload: Uint8Array, ttlMs?: number): void;
}

/** Options of {@link TokenSecretMirror}. */
export interface TokenSecretMirrorOptions {
  readonly transport: TokenSecretTransport;
  readonly mesh: TokenMirrorMesh;
  /** This member's name (owner of restored entries). */
  readonly self: string;
  /** Mesh keys this member holds, the primary first (seals verifiers; any opens them). Secret. */
  readonly meshKeys: () => readonly Uint8Array[];
  readonly logger: Logger;
  /** Timers (virtual in tests). `now()` is also the wall clock tokens expire by (ms since the epoch). */
  readonly clock?: Clock;
  readonly random?: () => number;
  readonly backoff?: BackoffPolicy;
  /** Periodic resync from the mesh snapshot. Default 300 s (jittered by up to +-10 %). */
  readonly resyncMs?: number;
  /** Delay before the first read-back after start (later ones ride on the periodic resync). Default 20 s. */
  readonly restoreDelayMs?: number;
  /** Bound on the mirrored data (keys + base64 values). Default 900 KiB (a Secret holds at most 1 MiB). */
  readonly maxBytes?: number;
  /** Create the Secret when it does not exist (needs `create secrets`; the manifests create it instead). Default false. */
  readonly createIfMissing?: boolean;
  /** Read-merge-write rounds per sync before giving up on 409s (then backoff). Default 5. */
  readonly maxConflictRetries?: number;
}

/** Counters for status and metrics. */
export interface TokenSecretMirrorStats {
  syncs: number;
  writes: number;
  /** Syncs that found the Secret already up to date (no write). */
  unchanged: number;
  conflicts: number;
  errors: number;
  /** Tokens re-published to the mesh from the Secret. */
  restored: number;
  /** Revocations re-published to the mesh from the Secret. */
  restoredRevocations: number;
  /** Tokens left out of the Secret by the size bound at the last write. */
  droppedForSize: number;
  /** Expired tokens removed from the Secret. */
  pruned: number;
  /** Malformed `token-*` values found (and dropped at the next write). */
  malformed: number;
  /** Whether the read-back has run at least once. */
  restoredOnce: boolean;
  lastError: string | undefined;
  lastSyncAt: number | undefined;
}

/** Outcome of one {@link TokenSecretMirror.syncNow}. */
export type SyncOutcome = 'written' | 'created' | 'unchanged';

/** The Secret mirror. `start`, then `trigger` on token changes; `stop` when the agent stops. */
export class TokenSecretMirror {
  readonly #o: TokenSecretMirrorOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly stats: TokenSecretMirrorStats = {
    syncs: 0,
    writes: 0,
    unchanged: 0,
    conflicts: 0,
    errors: 0,
    restored: 0,
    restoredRevocations: 0,
    droppedForSize: 0,
    pruned: 0,
    malformed: 0,
    restoredOnce: false,
    lastError: undefined,
    lastSyncAt: undefined,
  };
  #running = false;
  #stopped = true;
  #busy: Promise<void> | undefined;
  #again = false;
  #timer: TimerHandle | undefined;
  #restoreTimer: TimerHandle | undefined;
  #attempt = 0;
  #warnedMissing = false;
  #warnedUnopenable = false;

  constructor(o: TokenSecretMirrorOptions) {
    this.#o = o;
    this.#log = o.logger;
    this.#clock = o.clock ?? systemClock;
    this.#random = o.random ?? Math.random;
  }

  /** Starts: a first sync now, the read-back after `restoreDelayMs`, then periodic resyncs. Never blocks. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#stopped = false;
    this.#log.info({ secret: this.#o.transport.where }, 'join tokens mirrored into a kubernetes secret');
    this.#restoreTimer = this.#clock.setTimer(() => {
      this.#restoreTimer = undefined;
      this.trigger('restore');
    }, this.#o.restoreDelayMs ?? 20_000);
    this.trigger('start');
  }

  /** Asks for a sync soon (write-through after a token create/revoke). Coalesces; never blocks or throws. */
  trigger(reason: string): void {
    if (this.#stopped) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#busy = this.#work(reason).finally(() => {
      this.#busy = undefined;
      if (this.#again && !this.#stopped) {
        this.#again = false;
        this.trigger('coalesced');
      }
    });
  }

  /** Stops timers and waits for a sync in progress. Idempotent. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#running = false;
    this.#timer?.cancel();
    this.#restoreTimer?.cancel();
    this.#timer = undefined;
    this.#restoreTimer = undefined;
    await this.#busy;
  }

  /** Waits until no sync is running (tests). */
  async idle(): Promise<void> {
    while (this.#busy) await this.#busy;
  }

  async #work(reason: string): Promise<void> {
    try {
      // Read-back at start (after the delay) and on every periodic resync: a token or revocation whose owner
      // left or restarted is re-published by whoever notices first; write-through triggers skip it.
      if (reason === 'restore' || reason === 'resync' || (!this.stats.restoredOnce && this.#restoreTimer === undefined)) await this.restoreNow();
      await this.syncNow();
      if (this.#attempt > 0) this.#log.info({ failures: this.#attempt, secret: this.#o.transport.where }, 'token secret sync recovered');
      this.#attempt = 0;
      this.#schedule(this.#jitter(this.#o.resyncMs ?? 300_000));
    } catch (err) {
      const message = (err as Error).message;
      const status = err instanceof TokenSecretError ? err.status : undefined;
      this.stats.errors++;
      let delay = backoffDelay(this.#o.backoff ?? DEFAULT_BACKOFF, this.#attempt++, this.#random);
      // A missing Secret or missing permission is fixed by an operator, not by hammering the API server.
      if (status === 403 || status === 404) delay = Math.max(delay, this.#jitter(60_000));
      // One warning per distinct failure, not one per retry; the counter keeps the total.
      const fields = { err: { message }, reason, retryInMs: delay, failures: this.#attempt, secret: this.#o.transport.where };
      if (message !== this.stats.lastError) this.#log.warn(fields, 'token secret sync failed; retrying with backoff');
      else this.#log.debug(fields, 'token secret sync failed again');
      this.stats.lastError = message;
      this.#schedule(delay);
    }
  }

  #jitter(ms: number): number {
    return Math.round(ms * (0.9 + 0.2 * this.#random()));
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer?.cancel();
    this.#timer = this.#clock.setTimer(() => {
      this.#timer = undefined;
      this.trigger('resync');
    }, ms);
  }

  #keys(): { seal: Uint8Array; open: Uint8Array[] } {
    const keys = this.#o.meshKeys();
    if (keys.length === 0) throw new TokenSecretError('no mesh key to seal verifiers with');
    return { seal: mirrorSealKey(keys[0]!), open: keys.map(mirrorSealKey) };
  }

  /**
   * Read-back: re-publishes the tokens (and revocations) in the Secret that the mesh does not know. Idempotent:
   * what the mesh knows (including copies this member restored before) is left alone. Throws
   * {@link TokenSecretError} when the Secret cannot be read.
   */
  async restoreNow(): Promise<Restoration> {
    const state = await this.#o.transport.read();
    const { open } = this.#keys();
    const mirror = decodeMirror(state?.data, open);
    const now = this.#clock.now();
    const plan = planRestore(mirror.tokens, this.#o.mesh.snapshot(), this.#o.self, now);
    for (const w of [...plan.entries, ...plan.revocations]) this.#o.mesh.setLocal(w.key, w.payload, w.ttlMs);
    this.stats.restoredOnce = true;
    this.stats.restored += plan.restoredIds.length;
    this.stats.restoredRevocations += plan.revokedIds.length;
    if (plan.restoredIds.length > 0 || plan.revokedIds.length > 0) {
      this.#log.info({ audit: true, event: 'tokens-restored', tokenIds: plan.restoredIds, revocations: plan.revokedIds, secret: this.#o.transport.where }, `re-published ${plan.restoredIds.length} token(s) and ${plan.revokedIds.length} revocation(s) the mesh had lost, from the kubernetes secret`);
    }
    const unopenable = [...plan.skipped].filter(([, why]) => why.startsWith('sealed'));
    if (unopenable.length > 0 && !this.#warnedUnopenable) this.#log.warn({ tokenIds: unopenable.map(([id]) => id) }, 'tokens in the kubernetes secret are sealed under a mesh key this member does not hold; not restored');
    if (unopenable.length > 0) this.#warnedUnopenable = true;
    return plan;
  }

  /**
   * One read-merge-write round (retried on 409 up to `maxConflictRetries`): the Secret ends holding the
   * union of what it held and what the mesh knows, pruned and bounded. Throws {@link TokenSecretError}.
   */
  async syncNow(): Promise<SyncOutcome> {
    this.stats.syncs++;
    const { seal, open } = this.#keys();
    const tries = this.#o.maxConflictRetries ?? 5;
    for (let i = 0; i <= tries; i++) {
      const state = await this.#o.transport.read();
      const now = this.#clock.now();
      const current = decodeMirror(state?.data, open);
      const fromMesh = mirrorFromMesh(this.#o.mesh.snapshot(), now, seal);
      const merged = mergeMirrors(current.tokens, fromMesh, now);
      const enc = encodeMirror(merged, seal, this.#o.maxBytes ?? DEFAULT_MIRROR_MAX_BYTES);
      if (state === undefined) {
        if (!this.#o.createIfMissing) {
          if (!this.#warnedMissing) this.#log.warn({ secret: this.#o.transport.where }, 'the token mirror secret does not exist; apply deploy/ (it creates it empty) or allow create');
          this.#warnedMissing = true;
          throw new TokenSecretError(`${this.#o.transport.where} not found`, 404);
        }
        const r = await this.#o.transport.create(enc.data);
        if (r === 'conflict') {
          this.stats.conflicts++;
          continue;
        }
        this.#done(enc.dropped.length, 0, current.malformed.length, true);
        return 'created';
      }
      if (sameMirrorData(state.data, enc.data)) {
        this.stats.unchanged++;
        this.#done(enc.dropped.length, 0, current.malformed.length, false);
        return 'unchanged';
      }
      // Keep every key that is not ours (someone else's data in the same Secret).
      const data: Record<string, string> = {};
      for (const [k, v] of Object.entries(state.data)) if (!k.startsWith(MIRROR_KEY_PREFIX)) data[k] = v;
      Object.assign(data, enc.data);
      const pruned = [...current.tokens.values()].filter((t) => now >= t.token.expiresAt).length;
      const r = await this.#o.transport.replace(state, data);
      if (r === 'conflict') {
        this.stats.conflicts++;
        this.#log.debug({ secret: this.#o.transport.where, attempt: i }, 'token secret changed under us (409); re-reading and merging');
        continue;
      }
      this.#done(enc.dropped.length, pruned, current.malformed.length, true);
      if (enc.dropped.length > 0) this.#log.warn({ dropped: enc.dropped.length, bytes: enc.bytes }, 'token secret is full: left out used-up, revoked, then soonest-expiring tokens');
      return 'written';
    }
    throw new TokenSecretError(`${this.#o.transport.where} kept changing: ${tries + 1} conflicting writes in a row`, 409);
  }

  #done(dropped: number, pruned: number, malformed: number, wrote: boolean): void {
    if (wrote) this.stats.writes++;
    this.stats.droppedForSize = dropped;
    this.stats.pruned += pruned;
    this.stats.malformed += malformed;
    this.stats.lastError = undefined;
    this.stats.lastSyncAt = this.#clock.now();
    this.#warnedMissing = false;
  }
}

/** Options of {@link startTokenSecretMirror}. */
export interface StartTokenSecretMirrorOptions extends Omit<TokenSecretMirrorOptions, 'transport'> {
  readonly kubeConfig: KubeConfig;
  /** Default from {@link agentNamespace}. */
  readonly namespace?: string;
  /** The Secret's name (`--token-secret`); default {@link DEFAULT_TOKEN_SECRET}. */
  readonly secretName?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Creates the mirror over the real client and starts it. */
export function startTokenSecretMirror(o: StartTokenSecretMirrorOptions): TokenSecretMirror {
  const env = o.env ?? process.env;
  const namespace = o.namespace ?? agentNamespace(env);
  const name = o.secretName ?? DEFAULT_TOKEN_SECRET;
  const { kubeConfig, namespace: _n, secretName: _s, env: _e, ...rest } = o;
  const mirror = new TokenSecretMirror({ ...rest, transport: secretTransport(kubeConfig, namespace, name) });
  mirror.start();
  return mirror;
}

/**
 * The agent's mirror: loads the same Kubernetes configuration as the source (`--kubeconfig`, else in-cluster)
 * and starts the mirror, or returns undefined when there is no Kubernetes (`--token-secret off` is the caller's). Never
 * blocks on the API server. Throws `KubeConfigError` only for a kubeconfig file that does not load.
 */
export function startAgentTokenMirror(o: Omit<StartTokenSecretMirrorOptions, 'kubeConfig'> & { readonly kubeconfig: string | undefined }): TokenSecretMirror | undefined {
  const env = o.env ?? process.env;
  const kubeConfig = loadKubeConfig(o.kubeconfig, env);
  if (kubeConfig === undefined) return undefined;
  const { kubeconfig: _k, ...rest } = o;
  return startTokenSecretMirror({ ...rest, env, kubeConfig });
}

/** Exposes the mirror's counters as Prometheus metrics (`weft_token_secret_*`), read at scrape time. */
export function registerTokenMirrorMetrics(registry: Registry, mirror: Pick<TokenSecretMirror, 'stats'>): void {
  const r = [registry];
  new Counter({
    name: 'weft_token_secret_syncs_total', help: 'Token Secret mirror syncs by result (written, unchanged, conflict, error)', labelNames: ['result'], registers: r,
    collect() {
      this.reset();
      const s = mirror.stats;
      for (const [result, n] of Object.entries({ written: s.writes, unchanged: s.unchanged, conflict: s.conflicts, error: s.errors })) if (n > 0) this.inc({ result }, n);
    },
  });
  new Counter({
    name: 'weft_token_secret_restored_total', help: 'Tokens and revocations re-published to the mesh from the Token Secret', labelNames: ['kind'], registers: r,
    collect() {
      this.reset();
      if (mirror.stats.restored > 0) this.inc({ kind: 'token' }, mirror.stats.restored);
      if (mirror.stats.restoredRevocations > 0) this.inc({ kind: 'revocation' }, mirror.stats.restoredRevocations);
    },
  });
  new Gauge({
    name: 'weft_token_secret_dropped_tokens', help: 'Tokens left out of the Token Secret by its size bound at the last sync', registers: r,
    collect() {
      this.set(mirror.stats.droppedForSize);
    },
  });
}
