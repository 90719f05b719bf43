/**
 * weft's gossip mesh: membership (SWIM + Lifeguard), signed replicated entries, encrypted
 * transport, and an in-memory simulated network. Imports nothing from src/.
 */
import { Mesh } from './mesh.ts';
import type { MeshOptions } from './mesh.ts';
import { NetTransport } from './net-transport.ts';
import { DEFAULT_LIMITS } from './options.ts';

export type { MeshEntry, MeshHandle, MeshSnapshot, MeshStats, MemberState, MemberView } from './api.ts';
export { Mesh, MeshInputError, MeshJoinError } from './mesh.ts';
export type { MeshOptions, MeshObserver, MeshDetailedStats } from './mesh.ts';
export { Keyring, VerifyCache, generateIdentity, identityFromSeed, signWith, MeshKeyError } from './crypto.ts';
export type { Identity } from './crypto.ts';
export { LAN_TIMING, WAN_TIMING, DEFAULT_LIMITS, resolveTiming } from './options.ts';
export type { Timing, Limits } from './options.ts';
export { NetTransport } from './net-transport.ts';
export type { NetTransportOptions } from './net-transport.ts';
export { SimNetwork, SimClock, SimTransport } from './sim.ts';
export type { SimOptions } from './sim.ts';
export { TransportError, parseAddress, formatAddress } from './transport.ts';
export type { Address, Transport, TransportHandlers } from './transport.ts';
export { systemClock, seededRandom } from './clock.ts';
export type { Clock, Random, Timer } from './clock.ts';
export { compareEntries, mergeEntry, mergeStores } from './entries.ts';
export type { SignedEntry } from './entries.ts';
export { sharedMemberView } from './member-table.ts';
export type { MemberRecord, SharedMemberView } from './member-table.ts';

/**
 * Creates a mesh member (not yet started: call `start(seeds)`). Without `opts.transport` it listens
 * on UDP and TCP at `bindAddr:bindPort`.
 */
export function createMesh(opts: MeshOptions): Mesh {
  const transport =
    opts.transport ??
    new NetTransport({
      bindAddr: opts.bindAddr,
      bindPort: opts.bindPort,
      maxPacketBytes: opts.limits?.maxPacketBytes ?? DEFAULT_LIMITS.maxPacketBytes,
      maxFrameBytes: opts.limits?.maxStreamBytes ?? DEFAULT_LIMITS.maxStreamBytes,
      maxConnections: opts.limits?.maxConcurrentStreams ?? DEFAULT_LIMITS.maxConcurrentStreams,
    });
  return new Mesh(opts, transport);
}
