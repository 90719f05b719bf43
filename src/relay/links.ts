/**
 * Link assessment, pure (issues 7 and 9): which planned peers the link prober should poke (so that
 * WireGuard starts a handshake) and which direct links have failed and should go through a relay.
 * No I/O and no clock: the caller passes `now` and keeps the returned memory for the next call.
 *
 * Why probing: peers between public nodes get no persistent keepalive, so an idle link never
 * handshakes and status would flag it. A peer whose last handshake is 0 or older than
 * {@link PROBE_AFTER_S} gets one datagram through the tunnel; a busy link re-keys by itself (every
 * 2 minutes) and is left alone.
 *
 * Failure: a direct link has failed when its current direct endpoint has been configured for at
 * least `relayAfterMs` AND the link has needed a handshake (none, one older than
 * {@link PROBE_AFTER_S}, or a stalled session) for at least `relayAfterMs` without getting one:
 * WireGuard has been trying (the prober keeps it trying) for that long without an answer.
 *
 * Stalled: a link that worked and then broke still shows a fresh handshake for up to 3 minutes. A
 * healthy peer always answers traffic within seconds (WireGuard sends a keepalive 10 s after
 * receiving data it has no reply for), so when this node's transmit counter grows and its receive
 * counter does not for {@link STALL_AFTER_MS}, the session is treated as needing a handshake.
 */

/** A handshake older than this (seconds) makes the prober poke the peer. WireGuard re-keys a busy session after 120 s. */
export const PROBE_AFTER_S = 150;

/** Sent without receiving anything back for this long (ms), a session counts as stalled (see the file comment). */
export const STALL_AFTER_MS = 20_000;

/** Default time a direct link must fail before a relay is asked for it. */
export const DEFAULT_RELAY_AFTER_MS = 30_000;

/** A planned peer as the prober sees it. */
export interface LinkTarget {
  readonly name: string;
  readonly publicKey: string;
  /** The peer's mesh IP (the probe's destination, routed into the WireGuard interface). */
  readonly meshIP: string;
  /** Planned endpoint; undefined when the peer published none. */
  readonly endpoint?: string;
  /** Name of the relay the link goes through, when it is relayed. */
  readonly relay?: string;
}

/** What the assessment remembers about one peer between calls (keyed by public key). */
export interface LinkMemo {
  /** The endpoint last seen planned. */
  readonly endpoint: string | undefined;
  /** When (ms) that endpoint was first seen planned. */
  readonly endpointSince: number;
  /** When (ms) the link was first seen needing a handshake; undefined while it has a fresh one. */
  readonly needSince: number | undefined;
  /** When (ms) this memo was taken. */
  readonly at: number;
  /** Byte counters at that time, when the caller passed them. */
  readonly rx?: number;
  readonly tx?: number;
  /** Since when (ms) bytes were sent with nothing received; undefined while the peer answers. */
  readonly unansweredSince?: number;
}

/** A peer's WireGuard byte counters, as read from the device. */
export interface LinkCounters {
  readonly rx: number;
  readonly tx: number;
}

/** The assessment's memory: carry it from one call to the next. */
export type LinkMemory = ReadonlyMap<string, LinkMemo>;

/** The outcome of one assessment. */
export interface LinkAssessment {
  readonly memory: LinkMemory;
  /** Peers to send one probe datagram to now (sorted by name). */
  readonly probe: readonly LinkTarget[];
  /** Names of peers whose direct link has failed (sorted). Relayed peers are never listed. */
  readonly failing: readonly string[];
}

/**
 * Since when a peer has been sent bytes without answering, from its counters now and in the
 * previous memo: cleared when it received anything (or its counters restarted: a re-created peer),
 * started at the previous assessment when only the transmit counter grew, carried over otherwise.
 */
function unansweredSince(prev: LinkMemo | undefined, c: LinkCounters | undefined): number | undefined {
  if (!prev || !c || prev.rx === undefined || prev.tx === undefined) return undefined;
  if (c.rx !== prev.rx || c.tx < prev.tx) return undefined;
  if (c.tx > prev.tx) return prev.unansweredSince ?? prev.at;
  return prev.unansweredSince;
}

/**
 * Assesses every planned peer. `handshakes` maps public key -> last handshake (seconds since the
 * epoch, 0 = never), as read from the device; a planned peer the device does not have yet counts as
 * never handshaken. `counters` (public key -> byte counters, optional) lets a broken session with a
 * recent handshake be noticed (stalled). `now` is ms since the epoch. Peers no longer planned are forgotten.
 */
export function assessLinks(
  targets: readonly LinkTarget[],
  handshakes: ReadonlyMap<string, number>,
  now: number,
  memory: LinkMemory,
  opts: { readonly relayAfterMs: number },
  counters?: ReadonlyMap<string, LinkCounters>,
): LinkAssessment {
  const next = new Map<string, LinkMemo>();
  const probe: LinkTarget[] = [];
  const failing: string[] = [];
  for (const t of [...targets].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (next.has(t.publicKey)) continue;
    const prev = memory.get(t.publicKey);
    const hs = handshakes.get(t.publicKey) ?? 0;
    const c = counters?.get(t.publicKey);
    const unanswered = unansweredSince(prev, c);
    const stalled = unanswered !== undefined && now - unanswered >= STALL_AFTER_MS;
    const needs = stalled || !(hs > 0 && now - hs * 1000 <= PROBE_AFTER_S * 1000);
    const endpointSince = prev && prev.endpoint === t.endpoint ? prev.endpointSince : now;
    const needSince = needs ? (prev?.needSince ?? now) : undefined;
    next.set(t.publicKey, { endpoint: t.endpoint, endpointSince, needSince, at: now, ...(c ? { rx: c.rx, tx: c.tx } : {}), ...(unanswered !== undefined ? { unansweredSince: unanswered } : {}) });
    if (needs && t.endpoint !== undefined) probe.push(t);
    if (
      needs &&
      t.endpoint !== undefined &&
      t.relay === undefined &&
      now - endpointSince >= opts.relayAfterMs &&
      needSince !== undefined &&
      now - needSince >= opts.relayAfterMs
    ) {
      failing.push(t.name);
    }
  }
  return { memory: next, probe, failing };
}
