/**
 * Peer health as operators see it (issue 9): a peer is connected when its last WireGuard
 * handshake is recent, handshaking while it has an endpoint to try, unreachable without one.
 */

/** WireGuard link state of a peer: handshake within 3 minutes, trying, or no endpoint to try. */
export type PeerLink = 'connected' | 'handshaking' | 'unreachable';

/** A handshake older than this (seconds) no longer counts as connected (WireGuard re-keys every 2 minutes). */
export const HANDSHAKE_FRESH_S = 180;

/** Classifies a peer's link from its endpoint and last handshake (seconds since the epoch) at `now`. */
export function peerLink(p: { endpoint?: string; lastHandshake: number }, now: number): PeerLink {
  if (p.lastHandshake > 0 && now - p.lastHandshake <= HANDSHAKE_FRESH_S) return 'connected';
  return p.endpoint ? 'handshaking' : 'unreachable';
}
