/**
 * Desired state vs what the kernel has -> the smallest patch. Pure. The rule that matters: nothing
 * that is already right is touched, because re-setting a WireGuard peer interrupts its traffic and
 * every write costs a syscall (or a UAPI round trip) at 1,000 peers.
 *
 * {@link applyDeviceUpdate} is the reference semantics of a {@link WgDeviceUpdate} (what the kernel
 * and wireguard-go do with one), used to property-test that applying a diff yields the desired state.
 */
import type { DesiredPeer, DesiredRoute, DesiredState } from '../model.ts';
import type { WgDevice, WgDeviceUpdate, WgPeer, WgPeerUpdate } from '../wireguard/backend.ts';
import { canonicalCIDR, canonicalEndpoint, canonicalIP, compareCIDR, isLinkLocal, tryParseIP } from '../plan/cidr.ts';
import { RT_TABLE_MAIN, WEFT_FALLBACK_METRIC, WEFT_RT_PROTO, type RtLink, type RtRoute, type RtRouteKey, type RtRouteSpec } from './rtnetlink.ts';

/** Canonical CIDR text, falling back to the input when it does not parse (so it simply never matches). */
const canonCIDR = (c: string): string => canonicalCIDR(c, false) ?? c;
const canonEndpoint = (e: string | undefined): string | undefined => (e === undefined ? undefined : (canonicalEndpoint(e) ?? e));

/** Same strings as sets, for the small lists of allowed IPs (no allocation for short lists). */
function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  if (a.length <= 8) {
    for (const x of a) if (!b.includes(x)) return false;
    for (const x of b) if (!a.includes(x)) return false;
    return true;
  }
  const sb = new Set(b);
  const sa = new Set(a);
  if (sa.size !== sb.size) return false;
  for (const x of sa) if (!sb.has(x)) return false;
  return true;
}

/**
 * Peer updates turning `current` into `desired`: removals of undesired peers, then creations and
 * minimal changes (endpoint only when a desired one is given and differs; keepalive when it
 * differs; allowed IPs added when the current set is a subset, replaced otherwise, compared as sets).
 * Output is sorted by public key within each group, so it is deterministic.
 */
export function diffPeers(desired: readonly DesiredPeer[], current: readonly WgPeer[]): WgPeerUpdate[] {
  const want = new Map(desired.map((p) => [p.publicKey, p]));
  const have = new Map(current.map((p) => [p.publicKey, p]));
  const removals: WgPeerUpdate[] = [];
  for (const key of [...have.keys()].sort()) if (!want.has(key)) removals.push({ publicKey: key, remove: true });
  const changes: WgPeerUpdate[] = [];
  for (const key of [...want.keys()].sort()) {
    const d = want.get(key)!;
    const c = have.get(key);
    if (!c) {
      changes.push({
        publicKey: key,
        allowedIPs: [...new Set(d.allowedIPs.map(canonCIDR))].sort(compareCIDR),
        ...(d.endpoint !== undefined ? { endpoint: canonEndpoint(d.endpoint) } : {}),
        ...(d.persistentKeepalive > 0 ? { persistentKeepalive: d.persistentKeepalive } : {}),
      });
      continue;
    }
    // updateOnly: if the peer vanished since we read the device, do not recreate it half-configured;
    // the next pass sees it missing and creates it whole.
    const u: { -readonly [K in keyof WgPeerUpdate]: WgPeerUpdate[K] } = { publicKey: key, updateOnly: true };
    let touched = false;
    // Fast paths compare the raw strings first (planner and backends both emit canonical text);
    // parsing happens only when they differ, which keeps a 1,000-peer no-op diff cheap.
    if (d.endpoint !== undefined && d.endpoint !== c.endpoint) {
      const de = canonEndpoint(d.endpoint);
      if (de !== canonEndpoint(c.endpoint)) {
        u.endpoint = de;
        touched = true;
      }
    }
    if (d.persistentKeepalive !== c.persistentKeepalive) {
      u.persistentKeepalive = d.persistentKeepalive;
      touched = true;
    }
    if (!sameStrings(d.allowedIPs, c.allowedIPs)) {
      const wantIPs = [...new Set(d.allowedIPs.map(canonCIDR))].sort(compareCIDR);
      const haveIPs = new Set(c.allowedIPs.map(canonCIDR));
      const missing = wantIPs.filter((ip) => !haveIPs.has(ip));
      const extra = [...haveIPs].some((ip) => !wantIPs.includes(ip));
      if (extra) {
        u.allowedIPs = wantIPs;
        u.replaceAllowedIPs = true;
        touched = true;
      } else if (missing.length > 0) {
        u.allowedIPs = missing;
        touched = true;
      }
    }
    if (touched) changes.push(u);
  }
  return [...removals, ...changes];
}

/**
 * The device patch: listen port when it differs, the private key when the device's public key is
 * not the one `publicKey` names (or unknown), and the peer updates of {@link diffPeers}.
 */
export function diffDevice(desired: DesiredState, current: WgDevice, keys: { readonly privateKey: string; readonly publicKey: string }): WgDeviceUpdate {
  const u: { -readonly [K in keyof WgDeviceUpdate]: WgDeviceUpdate[K] } = {};
  if (current.publicKey !== keys.publicKey) u.privateKey = keys.privateKey;
  if (current.listenPort !== desired.listenPort) u.listenPort = desired.listenPort;
  const peers = diffPeers(desired.peers, current.peers);
  if (peers.length > 0) u.peers = peers;
  return u;
}

/** True when a device update changes nothing. */
export function isEmptyUpdate(u: WgDeviceUpdate): boolean {
  return u.privateKey === undefined && u.listenPort === undefined && u.fwmark === undefined && (u.peers === undefined || u.peers.length === 0);
}

/** Number of writes an update stands for: one per peer touched plus one for device-level fields. */
export function updateWrites(u: WgDeviceUpdate): number {
  const dev = u.privateKey !== undefined || u.listenPort !== undefined || u.fwmark !== undefined ? 1 : 0;
  return dev + (u.peers?.length ?? 0);
}

/**
 * Reference semantics of a device update, as the kernel and wireguard-go apply it: fields given are
 * set; a peer named without `remove` is created if missing (unless `updateOnly`); `replaceAllowedIPs` clears its list
 * first; an allowed IP belongs to one peer at a time, so adding it to one removes it from any other.
 * `publicKey` is derived by the caller-supplied function when the private key changes.
 */
export function applyDeviceUpdate(dev: WgDevice, u: WgDeviceUpdate, publicKeyOf: (priv: string) => string): WgDevice {
  type MutPeer = { -readonly [K in keyof WgPeer]: WgPeer[K] };
  // Structural sharing: peers the update does not touch keep their objects (cheap at 1,000 peers).
  const peers = new Map<string, WgPeer>(dev.peers.map((p) => [p.publicKey, p]));
  const own = new Set<string>();
  const mut = (key: string): MutPeer | undefined => {
    const p = peers.get(key);
    if (!p) return undefined;
    if (own.has(key)) return p as MutPeer;
    const c: MutPeer = { ...p, allowedIPs: [...p.allowedIPs] };
    peers.set(key, c);
    own.add(key);
    return c;
  };
  for (const pu of u.peers ?? []) {
    if (pu.remove) {
      peers.delete(pu.publicKey);
      continue;
    }
    let p = mut(pu.publicKey);
    if (!p && pu.updateOnly) continue;
    if (!p) {
      p = { publicKey: pu.publicKey, allowedIPs: [], persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0 };
      peers.set(pu.publicKey, p);
      own.add(pu.publicKey);
    }
    if (pu.endpoint !== undefined) p.endpoint = pu.endpoint;
    if (pu.persistentKeepalive !== undefined) p.persistentKeepalive = pu.persistentKeepalive;
    if (pu.replaceAllowedIPs) p.allowedIPs = [];
    for (const ip of pu.allowedIPs ?? []) {
      const c = canonCIDR(ip);
      for (const [key, other] of peers) {
        if (key !== pu.publicKey && other.allowedIPs.includes(c)) {
          const o = mut(key)!;
          o.allowedIPs = o.allowedIPs.filter((x) => x !== c);
        }
      }
      if (!p.allowedIPs.includes(c)) p.allowedIPs = [...p.allowedIPs, c];
    }
  }
  const out: { -readonly [K in keyof WgDevice]: WgDevice[K] } = { ...dev, peers: [...peers.values()] };
  if (u.privateKey !== undefined) {
    out.privateKey = u.privateKey;
    out.publicKey = publicKeyOf(u.privateKey);
  }
  if (u.listenPort !== undefined) out.listenPort = u.listenPort;
  if (u.fwmark !== undefined) out.fwmark = u.fwmark;
  return out;
}

/** Link changes: MTU when it differs, up when it is down. */
export function diffLink(desired: DesiredState, link: RtLink): { mtu?: number; up?: boolean } {
  const c: { mtu?: number; up?: boolean } = {};
  if (link.mtu !== desired.mtu) c.mtu = desired.mtu;
  if (!link.up) c.up = true;
  return c;
}

/**
 * Address changes on the WireGuard interface. weft owns that interface, so addresses it does not
 * want are removed, except link-local ones (the kernel or wireguard-go may add those).
 */
export function diffAddresses(desired: readonly string[], current: readonly string[]): { add: string[]; del: string[] } {
  const canon = (a: string): string => {
    const slash = a.indexOf('/');
    const ip = canonicalIP(slash < 0 ? a : a.slice(0, slash));
    return ip ? `${ip}/${slash < 0 ? (ip.includes(':') ? 128 : 32) : Number(a.slice(slash + 1))}` : a;
  };
  const want = [...new Set(desired.map(canon))];
  const have = new Set(current.map(canon));
  const add = want.filter((a) => !have.has(a));
  const del = [...have].filter((a) => {
    if (want.includes(a)) return false;
    const ip = tryParseIP(a.slice(0, a.indexOf('/') < 0 ? a.length : a.indexOf('/')));
    return !(ip && isLinkLocal(ip));
  });
  return { add: add.sort(compareCIDR), del: del.sort(compareCIDR) };
}

/** Route changes. `replaceForeign` lists routes of other protocols weft is about to replace (to log). */
export interface RouteDiff {
  readonly add: RtRouteSpec[];
  readonly replace: RtRouteSpec[];
  readonly del: RtRouteKey[];
  readonly replaceForeign: RtRoute[];
}

/**
 * Route changes in the main table. For every desired route weft wants two routes: the route into
 * the WireGuard interface, and a blackhole fallback at `fallbackMetric` that keeps the CIDR
 * fail-closed while the interface is missing. A desired route already present as a weft route on
 * the right device is left alone; a weft route on the wrong device is replaced; a route of another
 * protocol with the same destination is replaced too (the cluster CIDR must go into WireGuard) and
 * reported. Weft routes nobody wants any more are deleted; other protocols' routes never are.
 */
export function diffRoutes(desired: readonly DesiredRoute[], current: readonly RtRoute[], fallbackMetric = WEFT_FALLBACK_METRIC): RouteDiff {
  const want = new Map<string, string>();
  for (const d of desired) want.set(canonCIDR(d.dst), d.dev);
  const main = current.filter((r) => r.table === RT_TABLE_MAIN);
  const kept = new Set<string>();
  const keptFallback = new Set<string>();
  const ownWrongDev = new Set<string>();
  const del: RtRouteKey[] = [];
  for (const r of main) {
    if (r.protocol !== WEFT_RT_PROTO) continue;
    const dev = want.get(r.dst);
    if (r.type === 'blackhole') {
      if (dev !== undefined && r.metric === fallbackMetric && !keptFallback.has(r.dst)) keptFallback.add(r.dst);
      else del.push({ dst: r.dst, blackhole: true, metric: r.metric });
      continue;
    }
    if (dev !== undefined && dev === r.dev && !kept.has(r.dst)) kept.add(r.dst);
    else if (dev !== undefined && !kept.has(r.dst) && !ownWrongDev.has(r.dst)) ownWrongDev.add(r.dst);
    else del.push(r.dev !== undefined ? { dst: r.dst, dev: r.dev } : { dst: r.dst });
  }
  const add: RtRouteSpec[] = [];
  const replace: RtRouteSpec[] = [];
  const replaceForeign: RtRoute[] = [];
  for (const [dst, dev] of [...want].sort((a, b) => compareCIDR(a[0], b[0]))) {
    if (!keptFallback.has(dst)) add.push({ dst, blackhole: true, metric: fallbackMetric });
    if (kept.has(dst)) continue;
    if (ownWrongDev.has(dst)) {
      replace.push({ dst, dev });
      continue;
    }
    const foreign = main.filter((r) => r.dst === dst && r.protocol !== WEFT_RT_PROTO);
    if (foreign.length > 0) {
      replace.push({ dst, dev });
      replaceForeign.push(...foreign);
    } else add.push({ dst, dev });
  }
  return { add, replace, del, replaceForeign };
}
