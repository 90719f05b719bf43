/**
 * The audit trail (issue 9). Audit events are ordinary pino lines carrying `audit: true` and an
 * `event` name (peer-added, peer-removed, peer-key-changed, key-rotated, rejected...), so they go
 * wherever the agent's log goes. Rejected records and packets are aggregated: one line per
 * interval with the counts since the previous line, never a line per packet. This module also
 * reads the trail back for `weft audit` (pure parsing and filtering, bounded line length).
 */
import type { Logger } from 'pino';

/** One audit event as read back from a log. */
export interface AuditEvent {
  /** ms since the epoch (pino's `time`). */
  readonly time: number;
  readonly event: string;
  readonly node?: string;
  readonly msg?: string;
  /** The whole line (all fields), for `--json`. */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** Lines longer than this are skipped when reading back (a log line of ours is far shorter). */
export const MAX_AUDIT_LINE = 64 * 1024;

/** Parses one log line; undefined unless it is a JSON object with `audit: true` and a string `event`. */
export function parseAuditLine(line: string): AuditEvent | undefined {
  if (line.length === 0 || line.length > MAX_AUDIT_LINE || line[0] !== '{') return undefined;
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return undefined;
  const f = o as Record<string, unknown>;
  if (f.audit !== true || typeof f.event !== 'string') return undefined;
  const time = typeof f.time === 'number' ? f.time : typeof f.time === 'string' ? Date.parse(f.time) : NaN;
  return {
    time: Number.isFinite(time) ? time : 0,
    event: f.event.slice(0, 64),
    node: typeof f.node === 'string' ? f.node : undefined,
    msg: typeof f.msg === 'string' ? f.msg : undefined,
    fields: f,
  };
}

/**
 * Parses `--since`: a duration back from `now` ("90s", "15m", "2h", "7d") or an ISO date.
 * Returns ms since the epoch; throws a plain Error with a one-line message when unreadable.
 */
export function parseSince(text: string, now: number): number {
  const m = /^(\d{1,9})(s|m|h|d)$/.exec(text.trim());
  if (m) return now - Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const t = Date.parse(text);
  if (!Number.isFinite(t)) throw new Error(`audit: --since ${JSON.stringify(text.slice(0, 40))} is neither a duration (15m, 2h, 7d) nor a date`);
  return t;
}

/** Filters of {@link filterAudit}. */
export interface AuditFilter {
  /** Keep events at or after this time (ms). */
  readonly since?: number;
  /** Keep only these event names. */
  readonly events?: readonly string[];
}

/** Parses a whole log text and keeps the audit events matching the filter, in log order. */
export function filterAudit(text: string, filter: AuditFilter = {}): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (const line of text.split('\n')) {
    const e = parseAuditLine(line.trim());
    if (!e) continue;
    if (filter.since !== undefined && e.time < filter.since) continue;
    if (filter.events && filter.events.length > 0 && !filter.events.includes(e.event)) continue;
    out.push(e);
  }
  return out;
}

/** Fields shown as key=value in the human rendering (the rest stays in `--json`). */
const SHOWN = ['peer', 'publicKey', 'endpoint', 'meshState', 'pod', 'reason', 'records', 'packets', 'previousPublicKey', 'trigger', 'keyId', 'primary', 'tokenId', 'expiresAt', 'source', 'joiner'];

function show(v: unknown): string {
  if (typeof v === 'string') return /\s/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

/** One line per event: time, node, event, the interesting fields. Pure. */
export function renderAudit(events: readonly AuditEvent[]): string {
  if (events.length === 0) return 'no audit events\n';
  return `${events
    .map((e) => {
      const kv = SHOWN.filter((k) => e.fields[k] !== undefined).map((k) => `${k}=${show(e.fields[k])}`);
      return [e.time ? new Date(e.time).toISOString() : '-', e.node ?? '-', e.event, ...kv].join('  ');
    })
    .join('\n')}\n`;
}

/** Cumulative rejection counters read at each interval (monotonic; a drop means a reset). */
export interface RejectionCounts {
  /** Mesh records the planner refused, by reason. */
  readonly records: Readonly<Record<string, number>>;
  /** Mesh packets dropped, by cause (decryptFailures, badSignatures, malformed, rateLimited). */
  readonly packets: Readonly<Record<string, number>>;
}

function delta(now: Readonly<Record<string, number>>, before: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(now)) {
    const d = v - (before[k] ?? 0);
    const n = d < 0 ? v : d; // a counter reset: count from zero
    if (n > 0) out[k] = n;
  }
  return out;
}

/**
 * Emits one `audit: true, event: 'rejected'` line per interval with the rejected records and
 * packets counted since the last line (nothing when there were none). `read` must be cheap and not
 * throw; a throw is logged and that interval skipped. Returns a stop function.
 */
export function startRejectionAudit(opts: { logger: Logger; intervalMs: number; read: () => Promise<RejectionCounts> | RejectionCounts }): { flush: () => Promise<void>; stop: () => void } {
  let last: RejectionCounts = { records: {}, packets: {} };
  const flush = async (): Promise<void> => {
    let now: RejectionCounts;
    try {
      now = await opts.read();
    } catch (err) {
      opts.logger.warn({ err }, 'cannot read rejection counters for the audit trail');
      return;
    }
    const records = delta(now.records, last.records);
    const packets = delta(now.packets, last.packets);
    last = now;
    if (Object.keys(records).length === 0 && Object.keys(packets).length === 0) return;
    opts.logger.info({ audit: true, event: 'rejected', records, packets, intervalMs: opts.intervalMs }, 'rejected mesh records and packets in the last interval');
  };
  const timer = setInterval(() => void flush(), opts.intervalMs);
  timer.unref?.();
  return {
    flush,
    stop: () => clearInterval(timer),
  };
}

/** Mesh packet counters that mean a packet was rejected. */
const PACKET_REJECTS = ['decryptFailures', 'badSignatures', 'malformed', 'rateLimited'] as const;

/** Reads the cumulative rejection counts from the agent's metrics and the mesh's stats. Never throws on a missing source. */
export async function readRejections(
  rejectedRecords: { get(): Promise<{ values: ReadonlyArray<{ labels: Partial<Record<string, string | number>>; value: number }> }> } | undefined,
  meshStats: (() => Readonly<Record<string, unknown>> | undefined) | undefined,
): Promise<RejectionCounts> {
  const records: Record<string, number> = {};
  for (const v of (await rejectedRecords?.get())?.values ?? []) records[String(v.labels.reason ?? 'unknown')] = v.value;
  const packets: Record<string, number> = {};
  const s = meshStats?.();
  for (const k of PACKET_REJECTS) if (typeof s?.[k] === 'number') packets[k] = s[k] as number;
  return { records, packets };
}
