/**
 * The small slice of rtnetlink the datapath reconciler needs (links, addresses, routes), as an
 * injected interface with an in-memory fake. The real implementation on the `netlink` package's
 * rtnetlink socket lives in `rtnetlink-linux.ts`.
 *
 * Ownership: every route weft installs carries the route protocol {@link WEFT_RT_PROTO}. Route
 * removal always names that protocol, so the kernel itself refuses to delete anyone else's route.
 */

/**
 * weft's route protocol number (`rtm_protocol`), 0x93 = 147. Unassigned in the kernel's
 * `include/uapi/linux/rtnetlink.h` and in iproute2's `rt_protos` (which stop at 99 for
 * user daemons such as bird/zebra, plus 186-192 for bgp/isis/ospf/rip/eigrp). Add the line
 * `147 weft` to `/etc/iproute2/rt_protos.d/weft.conf` to see `proto weft` in `ip route`.
 */
export const WEFT_RT_PROTO = 147;

/**
 * Metric of weft's fallback blackhole routes. Next to every cluster-CIDR route into the WireGuard
 * interface, weft keeps a `blackhole <cidr> metric 2147483647 proto weft` route. While the
 * interface route exists it wins (lower metric); when the interface vanishes (wireguard-go crashed,
 * the link was deleted by hand) its routes vanish with it and the blackhole drops cluster traffic
 * instead of letting it fall through to the default route in clear.
 */
export const WEFT_FALLBACK_METRIC = 0x7fffffff;

/** The main routing table (RT_TABLE_MAIN); weft only ever touches this one. */
export const RT_TABLE_MAIN = 254;

/** A network interface as rtnetlink reports it. */
export interface RtLink {
  readonly index: number;
  readonly name: string;
  readonly mtu: number;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  /** IFLA_INFO_KIND (e.g. "wireguard", "bridge"), when the kernel reports one. */
  readonly kind?: string;
}

/** A unicast or blackhole route in the main table. */
export interface RtRoute {
  /** Canonical destination CIDR. */
  readonly dst: string;
  readonly type: 'unicast' | 'blackhole';
  /** Output interface name, when the route has one and it still exists. */
  readonly dev?: string;
  readonly ifindex?: number;
  readonly gateway?: string;
  readonly protocol: number;
  readonly table: number;
  /** Route priority (metric), 0 when unset. */
  readonly metric: number;
}

/**
 * A route weft installs: a destination through an interface (never a gateway on the underlay), or
 * a blackhole fallback for it at {@link WEFT_FALLBACK_METRIC}.
 */
export type RtRouteSpec =
  | { readonly dst: string; readonly dev: string; readonly blackhole?: undefined }
  | { readonly dst: string; readonly blackhole: true; readonly metric: number };

/** Which weft route to delete: by destination, plus its device (unicast) or its metric (blackhole). */
export type RtRouteKey =
  | { readonly dst: string; readonly dev?: string; readonly blackhole?: undefined }
  | { readonly dst: string; readonly blackhole: true; readonly metric: number };

/** A failed rtnetlink operation. `code` is the errno name when the kernel returned one (e.g. "EEXIST"). */
export class RtNetlinkError extends Error {
  override name = 'RtNetlinkError';
  readonly code: string | undefined;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options);
    this.code = options?.code;
  }
}

/**
 * The rtnetlink operations of the datapath. Addresses are "ip/len" (the interface address and its
 * prefix, e.g. "10.244.3.1/32"). Routes added, replaced and deleted always carry
 * {@link WEFT_RT_PROTO} and live in the main table. Deletes of missing objects succeed.
 */
export interface RtNetlink {
  /** One link by name; null when it does not exist. */
  getLink(name: string): Promise<RtLink | null>;
  /** All links. */
  listLinks(): Promise<RtLink[]>;
  /** Sets the MTU and/or the up flag; only the fields given are touched. */
  setLink(name: string, change: { readonly mtu?: number; readonly up?: boolean }): Promise<void>;
  /** Deletes a link; succeeds when it is already gone. */
  deleteLink(name: string): Promise<void>;
  /** Addresses on a link, "ip/len", canonical text. */
  listAddresses(name: string): Promise<string[]>;
  /** Adds an address ("ip/len"); succeeds when it is already there. */
  addAddress(name: string, address: string): Promise<void>;
  /** Removes an address; succeeds when it is not there. */
  delAddress(name: string, address: string): Promise<void>;
  /** Unicast and blackhole routes of the main table, both families unless one is given. */
  listRoutes(family?: 4 | 6): Promise<RtRoute[]>;
  /** Adds a weft route; rejects with code EEXIST when the destination (at that metric) is taken. */
  addRoute(route: RtRouteSpec): Promise<void>;
  /** Adds or replaces the route to `dst` at the same metric (whoever owned it) with a weft route. */
  replaceRoute(route: RtRouteSpec): Promise<void>;
  /** Deletes the weft route named; never a route of another protocol; succeeds when there is none. */
  delRoute(route: RtRouteKey): Promise<void>;
  /** Releases the socket. */
  close(): Promise<void>;
}
