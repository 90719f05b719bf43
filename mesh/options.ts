/**
 * Tuning and limits of a mesh member. Timing follows hashicorp/memberlist: {@link LAN_TIMING} is its
 * DefaultLANConfig, {@link WAN_TIMING} its DefaultWANConfig.
 */

/** Protocol timing, in milliseconds unless named otherwise. */
export interface Timing {
  /** Interval between failure-detection probes of one random member. */
  readonly probeIntervalMs: number;
  /** Time to wait for a direct ack before asking other members to probe indirectly. */
  readonly probeTimeoutMs: number;
  /** Members asked to probe indirectly when a direct probe fails. */
  readonly indirectChecks: number;
  /** Suspicion timeout multiplier: min timeout = mult * max(1, log10 N) * probe interval. */
  readonly suspicionMult: number;
  /** Max suspicion timeout = this * min timeout (Lifeguard: shrinks with confirmations). */
  readonly suspicionMaxTimeoutMult: number;
  /** Lifeguard local health: maximum awareness score (timeouts scale by score + 1). */
  readonly awarenessMaxMultiplier: number;
  /** Interval between gossip rounds. */
  readonly gossipIntervalMs: number;
  /** Members gossiped to per round. */
  readonly gossipNodes: number;
  /** Retransmit limit = mult * ceil(log10(N + 1)). */
  readonly retransmitMult: number;
  /** Base interval of the TCP full-state push/pull (scaled up in large meshes); 0 disables it. */
  readonly pushPullIntervalMs: number;
  /** memberlist's DisableTcpPings: skip the TCP fallback probe tried alongside indirect probes. */
  readonly disableTcpPings: boolean;
  /** Timeout of one TCP request (push/pull, fetch, join). */
  readonly tcpTimeoutMs: number;
  /** Dead members keep receiving gossip this long, so a wrongly declared member learns and refutes. */
  readonly gossipToTheDeadMs: number;
  /** Interval of push/pull attempts with a random dead member, so partitions heal (Serf's reconnect). */
  readonly reconnectIntervalMs: number;
  /** How long dead and left members (and their entries) are remembered before being forgotten. */
  readonly deadReapMs: number;
  /** How long a deleted entry (tombstone) is kept so it outlives any stale copy. */
  readonly tombstoneRetentionMs: number;
}

/** memberlist's DefaultLANConfig. */
export const LAN_TIMING: Timing = Object.freeze({
  probeIntervalMs: 1000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  suspicionMult: 4,
  suspicionMaxTimeoutMult: 6,
  awarenessMaxMultiplier: 8,
  gossipIntervalMs: 200,
  gossipNodes: 3,
  retransmitMult: 4,
  pushPullIntervalMs: 30_000,
  disableTcpPings: false,
  tcpTimeoutMs: 10_000,
  gossipToTheDeadMs: 30_000,
  reconnectIntervalMs: 30_000,
  deadReapMs: 15 * 60_000,
  tombstoneRetentionMs: 24 * 3600_000,
});

/** memberlist's DefaultWANConfig, for meshes spanning clouds. */
export const WAN_TIMING: Timing = Object.freeze({
  ...LAN_TIMING,
  probeIntervalMs: 5000,
  probeTimeoutMs: 3000,
  suspicionMult: 6,
  gossipIntervalMs: 500,
  gossipNodes: 4,
  pushPullIntervalMs: 60_000,
  tcpTimeoutMs: 30_000,
});

/** Size and rate bounds applied to everything a member receives. */
export interface Limits {
  /** Largest UDP datagram sent or accepted (sealed size). */
  readonly maxPacketBytes: number;
  /** Largest TCP frame (sealed), which bounds a push/pull state transfer. */
  readonly maxStreamBytes: number;
  readonly maxMembers: number;
  readonly maxEntriesPerMember: number;
  readonly maxEntryPayloadBytes: number;
  readonly maxKeyBytes: number;
  readonly maxNameBytes: number;
  /** Per-source token bucket for packets and streams: refill rate and burst. */
  readonly rateLimitPerSec: number;
  readonly rateLimitBurst: number;
  /** Packets whose send time differs from ours by more than this are dropped as replays. */
  readonly maxClockSkewMs: number;
  /**
   * Exact duplicate packets (same nonce) seen within this window are dropped. Older replays within
   * the clock-skew bound are harmless: every message is idempotent (incarnations, versions, seqs).
   */
  readonly replayWindowMs: number;
  /** Broadcasts queued beyond this are dropped (most transmitted first). */
  readonly maxQueuedBroadcasts: number;
  /** TCP requests served at once; more are refused. */
  readonly maxConcurrentStreams: number;
}

/** Default limits: 1400-byte datagrams, 16 MiB stream frames, 64 KiB entries, 16384 members. */
export const DEFAULT_LIMITS: Limits = Object.freeze({
  maxPacketBytes: 1400,
  maxStreamBytes: 16 * 1024 * 1024,
  maxMembers: 16_384,
  maxEntriesPerMember: 1024,
  maxEntryPayloadBytes: 64 * 1024,
  maxKeyBytes: 256,
  maxNameBytes: 128,
  rateLimitPerSec: 2000,
  rateLimitBurst: 4000,
  maxClockSkewMs: 2 * 60_000,
  replayWindowMs: 30_000,
  maxQueuedBroadcasts: 4096,
  maxConcurrentStreams: 32,
});

/** Resolves a profile name or partial timing to full timing (partials override LAN). */
export function resolveTiming(profile: 'lan' | 'wan' | Partial<Timing> | undefined): Timing {
  if (profile === undefined || profile === 'lan') return LAN_TIMING;
  if (profile === 'wan') return WAN_TIMING;
  return Object.freeze({ ...LAN_TIMING, ...profile });
}

/** memberlist's suspicion bounds for a mesh of `n` members: [min, max] timeout in ms. */
export function suspicionBounds(t: Timing, n: number): [number, number] {
  const min = t.suspicionMult * Math.max(1, Math.log10(Math.max(1, n))) * t.probeIntervalMs;
  return [min, min * t.suspicionMaxTimeoutMult];
}

/**
 * Lifeguard's suspicion timeout after `confirmations` independent confirmations, out of `expected`:
 * falls logarithmically from max to min.
 */
export function suspicionTimeout(min: number, max: number, confirmations: number, expected: number): number {
  if (expected <= 0) return min;
  const frac = Math.log(confirmations + 1) / Math.log(expected + 1);
  return Math.max(min, Math.floor(max - (max - min) * Math.min(1, frac)));
}

/** memberlist's retransmit limit for `n` members. */
export function retransmitLimit(t: Timing, n: number): number {
  return t.retransmitMult * Math.ceil(Math.log10(n + 1));
}

/** memberlist's push/pull scaling: the interval grows with log2(n) past 32 members. */
export function pushPullInterval(t: Timing, n: number): number {
  if (n <= 32) return t.pushPullIntervalMs;
  const mult = Math.ceil(Math.log2(n) - Math.log2(32)) + 1;
  return t.pushPullIntervalMs * mult;
}
