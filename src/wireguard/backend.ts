/**
 * The one interface every WireGuard implementation (kernel generic netlink, wireguard-go UAPI, the
 * in-memory fake) provides. Keys are base64 here whatever the wire format underneath.
 */

/** A peer as read back from a device. */
export interface WgPeer {
  readonly publicKey: string;
  readonly presharedKey?: string;
  /** "ip:port" or "[ipv6]:port". */
  readonly endpoint?: string;
  /** Canonical CIDRs, in the order the device reports them. */
  readonly allowedIPs: readonly string[];
  /** Seconds, 0 = off. */
  readonly persistentKeepalive: number;
  /** Seconds since the epoch of the last handshake, 0 = never. */
  readonly lastHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
}

/** A {@link WgPeer} being assembled (parsing a dump or reply, or held by the fake backend): every field writable. */
export type MutableWgPeer = { -readonly [K in keyof WgPeer]: WgPeer[K] } & { allowedIPs: string[] };

/** A device as read back; `privateKey` is present only when the caller may see it. */
export interface WgDevice {
  readonly name: string;
  readonly publicKey?: string;
  readonly privateKey?: string;
  readonly listenPort: number;
  readonly fwmark: number;
  readonly peers: readonly WgPeer[];
}

/** A change to one peer. Without `remove`, the peer is created if missing. */
export interface WgPeerUpdate {
  readonly publicKey: string;
  readonly remove?: boolean;
  /** Set the endpoint; undefined leaves it as it is. */
  readonly endpoint?: string;
  /** Seconds; undefined leaves it as it is. */
  readonly persistentKeepalive?: number;
  /** With `replaceAllowedIPs`, the exact list; otherwise these are added. Undefined leaves them. */
  readonly allowedIPs?: readonly string[];
  readonly replaceAllowedIPs?: boolean;
  /**
   * Only change the peer if it already exists; never create it (WGPEER_F_UPDATE_ONLY, UAPI
   * `update_only=true`). Ignored with `remove`.
   */
  readonly updateOnly?: boolean;
}

/** A change to a device: only the fields given are touched; peers not named are left alone. */
export interface WgDeviceUpdate {
  readonly privateKey?: string;
  readonly listenPort?: number;
  readonly fwmark?: number;
  readonly peers?: readonly WgPeerUpdate[];
  /**
   * Remove every existing peer before applying `peers` (WGDEVICE_F_REPLACE_PEERS, UAPI
   * `replace_peers=true`). Kept peers are re-created and lose their sessions, so a reconciler
   * diffs per peer instead; this is for tools and tests. Sent with the first request only.
   */
  readonly replacePeers?: boolean;
}

/** Which implementation is in use, reported in logs, status and benchmarks. */
export type WgBackendKind = 'kernel' | 'userspace' | 'fake';

/**
 * A WireGuard implementation. Every method is idempotent where it can be (`ensureDevice` on an
 * existing device adopts it; `deleteDevice` on a missing one succeeds) and rejects with a named
 * error carrying `{ cause }` otherwise.
 */
export interface WireGuardBackend {
  readonly kind: WgBackendKind;
  /** Creates the interface if it does not exist; adopts it, untouched, if it does. */
  ensureDevice(name: string): Promise<void>;
  /** Reads the whole device (all peers, across multi-part dumps); null when it does not exist. */
  getDevice(name: string): Promise<WgDevice | null>;
  /** Applies a patch. Large patches are split as the implementation needs; not atomic. */
  setDevice(name: string, update: WgDeviceUpdate): Promise<void>;
  /** Removes the interface (and, for userspace, stops the process weft started for it). */
  deleteDevice(name: string): Promise<void>;
  /** Releases sockets; leaves devices in place. */
  close(): Promise<void>;
}
