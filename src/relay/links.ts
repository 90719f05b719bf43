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
 * least `relayAfterMs` AND the link has needed a handshake (none, or one older than
 * {@link PROBE_AFTER_S}) for at least `relayAfterMs` without getting one: WireGuard has been trying
 * (the prober keeps it trying) for that long without an answer.
 */

/** A handshake older than this (seconds) makes the prober poke the peer. WireGuard re-keys a busy session after 120 s. */
export const PROBE_AFTER_S = 150;

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
 * Assesses every planned peer. `handshakes` maps public key -> last handshake (seconds since the
 * epoch, 0 = never), as read from the device; a planned peer the device does not have yet counts as
 * never handshaken. `now` is ms since the epoch. Peers no longer planned are forgotten.
 */
export function assessLinks(
  targets: readonly LinkTarget[],
  handshakes: ReadonlyMap<string, number>,
  now: number,
  memory: LinkMemory,
  opts: { readonly relayAfterMs: number },
): LinkAssessment {
  const next = new Map<string, LinkMemo>();
  const probe: LinkTarget[] = [];
  const failing: string[] = [];
  for (const t of [...targets].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (next.has(t.publicKey)) continue;
    const prev = memory.get(t.publicKey);
    const hs = handshakes.get(t.publicKey) ?? 0;
    const needs = !(hs > 0 && now - hs * 1000 <= PROBE_AFTER_S * 1000);
    const endpointSince = prev && prev.endpoint === t.endpoint ? prev.endpointSince : now;
    const needSince = needs ? (prev?.needSince ?? now) : undefined;
    next.set(t.publicKey, { endpoint: t.endpoint, endpointSince, needSince });
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
