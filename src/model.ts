/**
 * The shared vocabulary of the agent: what a node publishes in the mesh, and the desired state the
 * planner derives from it. Every source (mesh, Kubernetes, CNI) speaks in these types, and every
 * reconciler consumes them. Keep this file free of I/O and of imports from other weft folders.
 */

/** A pod as published in its node's mesh record: name, namespace and its addresses. */
export interface PodRecord {
  readonly name: string;
  readonly namespace: string;
  /** IPv4 and/or IPv6 addresses, without prefix length. */
  readonly ips: readonly string[];
}

/**
 * What one node publishes about itself (the mesh entry with key {@link NODE_ENTRY_KEY}). Only the
 * owning node can write it: the mesh verifies its signature against the node's identity key.
 */
export interface NodeInfo {
  /** Payload format version, bumped on incompatible changes; readers skip versions they do not know. */
  readonly format: 1;
  readonly name: string;
  /** Base64 WireGuard (X25519) public key. */
  readonly wgPublicKey: string;
  /** WireGuard listen port on this node's endpoints. */
  readonly listenPort: number;
  /** Underlay endpoints "ip:port" or "[ipv6]:port", best first (observed public, then configured). */
  readonly endpoints: readonly string[];
  /** The node's address inside the overlay (on the WireGuard interface), without prefix length. */
  readonly meshIP: string;
  /** The pod CIDRs this node owns (one per family at most in practice). */
  readonly podCIDRs: readonly string[];
  /**
   * When this node first claimed its pod CIDRs, in ms since the epoch. On conflicting claims the
   * older claim wins; ties break on the lower node name, so every member picks the same winner.
   */
  readonly claimedAt: number;
  /** Persistent keepalive this node asks its peers to use towards it (set when it is behind NAT), 0 = off. */
  readonly keepalive: number;
}

/** Mesh entry key under which a node publishes its {@link NodeInfo}. */
export const NODE_ENTRY_KEY = 'node';
/** Prefix of mesh entry keys under which a node publishes one {@link PodRecord} each: `pod/<namespace>/<name>`. */
export const POD_ENTRY_PREFIX = 'pod/';

/** A remote node as the planner sees it: its published info plus its pods, from a mesh snapshot. */
export interface RemoteNode {
  readonly info: NodeInfo;
  readonly pods: readonly PodRecord[];
  /** Mesh liveness: only `alive` and `suspect` nodes are planned as peers. */
  readonly state: 'alive' | 'suspect' | 'dead' | 'left';
}

/** One WireGuard peer the datapath should have. */
export interface DesiredPeer {
  /** Node name, for logs and status only (WireGuard identifies peers by key). */
  readonly name: string;
  /** Base64 public key. */
  readonly publicKey: string;
  /** "ip:port" or "[ipv6]:port"; undefined when the node has published no usable endpoint. */
  readonly endpoint?: string;
  /** CIDRs routed to this peer: its pod CIDRs and its mesh IP as a host route. */
  readonly allowedIPs: readonly string[];
  /** Seconds, 0 = off. */
  readonly persistentKeepalive: number;
  /** Name of the relay node the endpoint belongs to when the link is relayed (issue 7); for status only. */
  readonly relay?: string;
}

/** One route weft owns; always through the WireGuard interface (fail-closed: never via the underlay). */
export interface DesiredRoute {
  readonly dst: string;
  readonly dev: string;
}

/** Everything the datapath reconciler needs to make the kernel match: computed by the pure planner. */
export interface DesiredState {
  readonly ifname: string;
  readonly listenPort: number;
  readonly mtu: number;
  /** Addresses on the WireGuard interface, with prefix length (e.g. the mesh IP as /32). */
  readonly addresses: readonly string[];
  readonly peers: readonly DesiredPeer[];
  readonly routes: readonly DesiredRoute[];
}
