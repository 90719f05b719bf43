/**
 * Endpoint choice between nodes behind NAT (issue 7), pure. A node behind NAT publishes the address
 * members observe it at first, then its own (private) address. Two nodes behind the same NAT see the same
 * public address first in each other's records; aiming at it would need hairpin NAT, which most routers
 * (Linux masquerade included) do not do. So when a remote's first endpoint has the same host as this
 * node's own first endpoint, and the remote offers another, that one (its private address) is used.
 */
import { parseEndpoint } from './cidr.ts';

/** The remote's endpoints in the order this node should try them (see the file comment). Never empty-ing. */
export function endpointsForPeer(remote: readonly string[], self: readonly string[]): readonly string[] {
  if (remote.length < 2 || self.length < 2) return remote;
  const mine = parseEndpoint(self[0]);
  const theirs = parseEndpoint(remote[0]);
  if (!mine || !theirs || mine.family !== theirs.family || mine.value !== theirs.value) return remote;
  return [...remote.slice(1), remote[0]!];
}
