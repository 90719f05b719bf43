/**
 * The pure datapath planner: this node plus validated remote nodes -> the WireGuard device, its
 * addresses and the routes the kernel should have. Fail-closed by construction: the only routes it
 * ever emits send the configured cluster CIDRs into the WireGuard interface, so a pod whose node
 * is unknown is unreachable (WireGuard has no peer for it) rather than reached in clear. No I/O, no
 * clock; the output is deterministic (sorted) for the same input in any order.
 */
import type { DesiredPeer, DesiredRoute, DesiredState, NodeInfo, RemoteNode } from '../model.ts';
import { canonicalCIDR, compareCIDR, familyOf, formatEndpoint, hostCIDR, parseEndpoint, tryParseIP, type Family } from './cidr.ts';
import { endpointsForPeer } from './nat.ts';
import { chooseRelay } from '../relay/choose.ts';
import { relayCandidates, type RelayInputs, type RelaySession } from '../relay/records.ts';

/** Persistent keepalive on both sides of a relayed link: the relay's NAT mappings must stay up. */
export const RELAY_KEEPALIVE_S = 25;

/** The relay facts the planner reads (validated by `src/relay/records.ts`). */
export type RelayPlanInput = Pick<RelayInputs, 'offers' | 'sessions' | 'states'>;

/** WireGuard's per-packet overhead over an IPv4 underlay (20 IP + 8 UDP + 32 WireGuard). */
export const WG_OVERHEAD_V4 = 60;
/** WireGuard's per-packet overhead over an IPv6 underlay (40 IP + 8 UDP + 32 WireGuard). */
export const WG_OVERHEAD_V6 = 80;
/** Smallest MTU the planner will emit (IPv4 minimum reassembly size). */
export const MIN_MTU = 576;
/** Smallest MTU that still carries IPv6 (RFC 8200); required when a cluster CIDR is IPv6. */
export const MIN_MTU_V6 = 1280;

/** Planner inputs that come from configuration and from the local host (read by the caller). */
export interface DatapathConfig {
  /** WireGuard interface name (`--ifname`). */
  readonly ifname: string;
  /** WireGuard listen port (`--wg-port`). */
  readonly listenPort: number;
  /** Canonical cluster CIDRs, at most one per family; each is routed into `ifname`. */
  readonly clusterCIDRs: readonly string[];
  /** A fixed MTU, or 'auto' to derive it from the underlay. */
  readonly mtu: number | 'auto';
  /** MTU of the underlay interface the WireGuard packets leave by (needed for 'auto'). */
  readonly underlayMTU: number;
  /**
   * Underlay families this node can reach peers over, preferred first (the family of the local
   * underlay address first). Endpoints of other families are never chosen.
   */
  readonly underlayFamilies: readonly Family[];
}

/** The planner was called with an impossible configuration (a caller bug, not network input). */
export class PlanError extends Error {
  override name = 'PlanError';
}

/** The MTU to apply: the override, or the underlay MTU minus WireGuard's overhead for the preferred underlay family. */
export function planMTU(config: Pick<DatapathConfig, 'mtu' | 'underlayMTU' | 'underlayFamilies' | 'clusterCIDRs'>): number {
  let mtu: number;
  if (config.mtu === 'auto') {
    if (!Number.isInteger(config.underlayMTU) || config.underlayMTU < MIN_MTU || config.underlayMTU > 65535) {
      throw new PlanError(`plan: underlay MTU ${config.underlayMTU} is not an integer in ${MIN_MTU}..65535`);
    }
    const family = config.underlayFamilies[0] ?? 4;
    mtu = config.underlayMTU - (family === 6 ? WG_OVERHEAD_V6 : WG_OVERHEAD_V4);
  } else {
    mtu = config.mtu;
  }
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > 65535) throw new PlanError(`plan: MTU ${mtu} is not an integer in ${MIN_MTU}..65535`);
  if (mtu < MIN_MTU_V6 && config.clusterCIDRs.some((c) => familyOf(c) === 6)) {
    throw new PlanError(`plan: MTU ${mtu} is below ${MIN_MTU_V6}, which an IPv6 cluster CIDR needs`);
  }
  return mtu;
}

/** The first endpoint of the most preferred reachable family, canonical; undefined when there is none. */
export function chooseEndpoint(endpoints: readonly string[], families: readonly Family[]): string | undefined {
  const parsed = endpoints.map((e) => parseEndpoint(e));
  for (const fam of families) {
    const hit = parsed.find((e) => e !== null && e.family === fam);
    if (hit) return formatEndpoint(hit);
  }
  return undefined;
}

/** The keepalive a node asks for, when it is a valid one (1..65535), else 0. */
const keepaliveOf = (n: NodeInfo): number => (Number.isInteger(n.keepalive) && n.keepalive > 0 && n.keepalive <= 65535 ? n.keepalive : 0);

/**
 * A lookup peer name -> relayed endpoint for this node, built once per plan from the sessions that
 * name this node (so peers without one cost a map miss, and the hashing runs only for those with one).
 */
function relayedPeers(self: string, relay: RelayPlanInput | undefined): ((peer: string, families: readonly Family[]) => { endpoint: string; relay: string } | undefined) | undefined {
  if (!relay || relay.sessions.size === 0) return undefined;
  const mine = new Map<string, Map<string, RelaySession>>();
  for (const [r, list] of relay.sessions) {
    for (const s of list) {
      if (s.a !== self && s.b !== self) continue;
      const peer = s.a === self ? s.b : s.a;
      let m = mine.get(peer);
      if (!m) mine.set(peer, (m = new Map()));
      m.set(r, s);
    }
  }
  if (mine.size === 0) return undefined;
  const candidates = relayCandidates(relay);
  return (peer, families) => {
    const published = mine.get(peer);
    if (!published) return undefined;
    const chosen = chooseRelay(self, peer, candidates);
    const s = chosen === undefined ? undefined : published.get(chosen);
    const offer = chosen === undefined ? undefined : relay.offers.get(chosen);
    if (!s || !offer || !families.includes(offer.family)) return undefined;
    const port = s.a === self ? s.portA : s.portB;
    return { endpoint: offer.family === 6 ? `[${offer.host}]:${port}` : `${offer.host}:${port}`, relay: chosen! };
  };
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * Plans the datapath. One peer per `alive`/`suspect` remote (self and dead/left members skipped;
 * a public key seen twice keeps the first by name), allowed IPs = its pod CIDRs plus its mesh IP
 * host route, keepalive only where needed: when the remote or this node asks for it (the side behind
 * NAT publishes `keepalive`; both sides then keep the mapping alive). Addresses: this node's mesh IP as a host
 * address. Routes: every cluster CIDR via `ifname`, nothing else. Throws {@link PlanError} only
 * for a bad `self` or `config`.
 *
 * Relaying (issue 7, `src/relay/README.md`): when `relay` holds a session for {self, peer} published
 * by the pair's chosen relay (rendezvous hashing over the alive offers) and that relay is alive, the
 * peer's endpoint is the relay's host and the port for this side, with keepalive
 * {@link RELAY_KEEPALIVE_S}; the same holds on the peer's side whichever side asked.
 */
export function planDatapath(self: NodeInfo, remotes: readonly RemoteNode[], config: DatapathConfig, relay?: RelayPlanInput): DesiredState {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(config.ifname)) throw new PlanError(`plan: bad interface name ${JSON.stringify(config.ifname)}`);
  if (!Number.isInteger(config.listenPort) || config.listenPort < 1 || config.listenPort > 65535) {
    throw new PlanError(`plan: bad listen port ${config.listenPort}`);
  }
  const clusterCIDRs = config.clusterCIDRs.map((c) => {
    const k = canonicalCIDR(c);
    if (!k) throw new PlanError(`plan: bad cluster CIDR ${JSON.stringify(c)}`);
    return k;
  });
  if (clusterCIDRs.length === 0) throw new PlanError('plan: no cluster CIDR: refusing to plan a datapath that is not fail-closed');
  const selfHost = hostCIDR(self.meshIP);
  if (!selfHost) throw new PlanError(`plan: bad mesh IP ${JSON.stringify(self.meshIP)}`);
  const mtu = planMTU({ ...config, clusterCIDRs });

  const relayed = relayedPeers(self.name, relay);
  const peers: DesiredPeer[] = [];
  const keys = new Set<string>();
  for (const r of [...remotes].sort((a, b) => byName(a.info, b.info))) {
    if (r.state !== 'alive' && r.state !== 'suspect') continue;
    if (r.info.name === self.name || r.info.wgPublicKey === self.wgPublicKey || keys.has(r.info.wgPublicKey)) continue;
    keys.add(r.info.wgPublicKey);
    const allowed = new Set<string>();
    for (const c of r.info.podCIDRs) {
      const k = canonicalCIDR(c);
      if (k) allowed.add(k);
    }
    const host = hostCIDR(r.info.meshIP);
    if (host && tryParseIP(r.info.meshIP)) allowed.add(host);
    const via = relayed?.(r.info.name, config.underlayFamilies);
    const endpoint = via?.endpoint ?? chooseEndpoint(endpointsForPeer(r.info.endpoints, self.endpoints), config.underlayFamilies);
    const peer: DesiredPeer = {
      name: r.info.name,
      publicKey: r.info.wgPublicKey,
      allowedIPs: [...allowed].sort(compareCIDR),
      persistentKeepalive: via ? RELAY_KEEPALIVE_S : keepaliveOf(r.info) || keepaliveOf(self),
      ...(endpoint ? { endpoint } : {}),
      ...(via ? { relay: via.relay } : {}),
    };
    peers.push(peer);
  }

  const routes: DesiredRoute[] = clusterCIDRs.sort(compareCIDR).map((dst) => ({ dst, dev: config.ifname }));
  return {
    ifname: config.ifname,
    listenPort: config.listenPort,
    mtu,
    addresses: [selfHost],
    peers,
    routes,
  };
}
