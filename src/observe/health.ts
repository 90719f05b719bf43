/**
 * Liveness and readiness of the agent. Loops call `tick` each time they turn; `/healthz` fails
 * when a loop has not turned for too long. Readiness is a set of named conditions that must all
 * hold (joined the mesh, datapath applied).
 */
import type { ApiServer } from '../api/server.ts';

/** A health report as served on /healthz and /readyz. */
export interface HealthReport {
  readonly ok: boolean;
  readonly checks: Readonly<Record<string, { ok: boolean; detail: string }>>;
}

/** Options of {@link Health}. */
export interface HealthOptions {
  /** ms since the epoch. */
  readonly clock: () => number;
  /** A loop that has not ticked for longer than this is unhealthy. */
  readonly maxLoopAgeMs: number;
}

/** Tracks loop ticks and readiness conditions. Cheap and synchronous; safe to call from any loop. */
export class Health {
  readonly #clock: () => number;
  readonly #maxAge: number;
  readonly #started: number;
  readonly #ticks = new Map<string, number>();
  readonly #ready = new Map<string, { ok: boolean; detail: string }>();

  constructor(opts: HealthOptions) {
    this.#clock = opts.clock;
    this.#maxAge = opts.maxLoopAgeMs;
    this.#started = opts.clock();
  }

  /** Declares a loop to watch; until its first tick, it counts from construction time. */
  watch(loop: string): void {
    if (!this.#ticks.has(loop)) this.#ticks.set(loop, this.#started);
  }

  /** Records that `loop` turned now. */
  tick(loop: string): void {
    this.#ticks.set(loop, this.#clock());
  }

  /** Sets a readiness condition. */
  setReady(condition: string, ok: boolean, detail = ''): void {
    this.#ready.set(condition, { ok, detail });
  }

  /** Liveness: every watched loop ticked within the allowed age. */
  healthz(): HealthReport {
    const now = this.#clock();
    const checks: Record<string, { ok: boolean; detail: string }> = {};
    for (const [loop, at] of this.#ticks) {
      const age = now - at;
      checks[loop] = { ok: age <= this.#maxAge, detail: `last turn ${Math.round(age / 1000)}s ago` };
    }
    return { ok: Object.values(checks).every((c) => c.ok), checks };
  }

  /** Readiness: every declared condition holds (and there is at least one). */
  readyz(): HealthReport {
    const checks = Object.fromEntries(this.#ready);
    const values = Object.values(checks);
    return { ok: values.length > 0 && values.every((c) => c.ok), checks };
  }
}

/** Mounts GET /healthz and /readyz (unix socket and TCP). 200 when ok, 503 otherwise. */
export function mountHealthRoutes(api: ApiServer, health: Health): void {
  api.route('GET', '/healthz', () => {
    const r = health.healthz();
    return { status: r.ok ? 200 : 503, json: r };
  }, { tcp: true });
  api.route('GET', '/readyz', () => {
    const r = health.readyz();
    return { status: r.ok ? 200 : 503, json: r };
  }, { tcp: true });
}
