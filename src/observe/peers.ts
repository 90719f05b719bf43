/**
 * Peer health as operators see it (issue 9): a peer is relayed when its endpoint is a relay (issue 7),
 * connected when its last WireGuard handshake is recent, handshaking while it has an endpoint to try,
 * unreachable without one. A relayed peer without a recent handshake is still `relayed`; status
 * flags it by its handshake age like any other.
 */

/** WireGuard link state of a peer. */
export type PeerLink = 'connected' | 'handshaking' | 'unreachable' | 'relayed';

/** A handshake older than this (seconds) no longer counts as connected (WireGuard re-keys every 2 minutes). */
export const HANDSHAKE_FRESH_S = 180;

/** Classifies a peer's link from its endpoint, relay and last handshake (seconds since the epoch) at `now`. */
export function peerLink(p: { endpoint?: string; lastHandshake: number; relay?: string }, now: number): PeerLink {
  if (p.relay !== undefined) return 'relayed';
  if (p.lastHandshake > 0 && now - p.lastHandshake <= HANDSHAKE_FRESH_S) return 'connected';
  return p.endpoint ? 'handshaking' : 'unreachable';
}
