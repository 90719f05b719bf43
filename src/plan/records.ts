/**
 * Mesh snapshot -> validated remote nodes. Every byte here came from the network (signed, but by a
 * node that may be buggy or hostile), so every field is checked and bounded; what fails is dropped
 * and reported in `rejected` for the agent to log and count. Conflicting pod-CIDR claims resolve
 * with the IPAM rules (`src/ipam/claims.ts`), so every member keeps the same winner. Pure.
 */
import type { MemberView, MeshSnapshot } from '../../mesh/api.ts';
import { NODE_ENTRY_KEY, POD_ENTRY_PREFIX, type NodeInfo, type PodRecord, type RemoteNode } from '../model.ts';
import { analyzeClaims, type BlockClaim } from '../ipam/claims.ts';
import { isValidKey } from '../wireguard/keys.ts';
import {
  canonicalCIDR,
  canonicalIP,
  cidrContains,
  cidrHas,
  formatEndpoint,
  parseEndpoint,
  tryParseCIDR,
  tryParseIP,
  type Cidr,
  type ParsedIP,
} from './cidr.ts';

/** The node payload format versions this build understands. */
export const KNOWN_NODE_FORMATS: readonly number[] = [1];

/** Bounds on what one node may publish; anything beyond is dropped and reported. */
export interface RecordLimits {
  /** Largest `node` payload in bytes. */
  readonly maxNodePayload: number;
  /** Largest `pod/...` payload in bytes. */
  readonly maxPodPayload: number;
  /** Endpoints kept per node (the first ones, in published order). */
  readonly maxEndpoints: number;
  /** Pod CIDRs accepted per node. */
  readonly maxPodCIDRs: number;
  /** Pods kept per node (in key order). */
  readonly maxPodsPerNode: number;
  /** Addresses accepted per pod. */
  readonly maxPodIPs: number;
}

/** Default {@link RecordLimits}: generous for a real node, small enough to bound planning cost. */
export const DEFAULT_RECORD_LIMITS: RecordLimits = Object.freeze({
  maxNodePayload: 16 * 1024,
  maxPodPayload: 2 * 1024,
  maxEndpoints: 8,
  maxPodCIDRs: 2,
  maxPodsPerNode: 1024,
  maxPodIPs: 2,
});

/** What the records pass needs to know about the cluster. */
export interface RecordsConfig {
  /** Canonical cluster CIDRs; every pod CIDR must lie inside one of them. */
  readonly clusterCIDRs: readonly string[];
  readonly limits?: Partial<RecordLimits>;
  /**
   * Optional memo owned by the caller (create one per agent and pass it on every call): payloads
   * already parsed in an earlier call (same bytes object) are not decoded and validated again.
   * Results are identical with or without it.
   */
  readonly cache?: RecordsCache;
}

interface NodeMemo {
  readonly member: string;
  readonly parsed: { info: NodeInfo; cidrs: Cidr[] } | null;
  readonly reasons: readonly string[];
}

/** A pod entry after the checks that do not depend on its node's held CIDRs. */
interface PodShape {
  readonly name: string;
  readonly namespace: string;
  readonly ips: readonly ParsedIP[];
  readonly text: readonly string[];
}

interface PodMemo {
  readonly key: string;
  readonly shape: PodShape | null;
  readonly reason?: string;
}

/**
 * Memo of parsed mesh payloads, keyed by payload identity (mesh entries are immutable, so an
 * unchanged entry keeps its bytes object across snapshots). Held weakly: dropped entries go away
 * with their payloads. Reset automatically when the cluster CIDRs or limits change.
 */
export class RecordsCache {
  /** Parsed `node` payloads (with the member name they were parsed for). */
  nodes = new WeakMap<Uint8Array, NodeMemo>();
  /** Pod payloads after the checks that do not depend on the node's held CIDRs. */
  pods = new WeakMap<Uint8Array, PodMemo>();
  /** Cluster CIDRs and limits the memo was built with; a change empties it. */
  fingerprint = '';
  /**
   * The last result with what it was computed from: the snapshot's self name and, per member, its
   * name, state and every entry's payload object and deleted flag. A snapshot equal in all of
   * these gets the same (frozen) result back without claim analysis or pod checks: the steady
   * state of a large mesh, where most passes (resyncs, gossip of unrelated changes) change nothing.
   * Holds one result only, so departed nodes go with the next change.
   */
  last: { readonly inputs: readonly unknown[]; readonly result: RecordsResult } | undefined;
}

/** What a {@link RecordsResult} depends on in a snapshot, flattened for an identity comparison. */
function snapshotInputs(snapshot: MeshSnapshot): unknown[] {
  const inputs: unknown[] = [snapshot.self, snapshot.members.length];
  for (const m of snapshot.members) {
    inputs.push(m.name, m.state, m.entries.size);
    for (const [key, e] of m.entries) inputs.push(key, e.payload, e.deleted);
  }
  return inputs;
}

function sameInputs(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One dropped entry or field: which member, which mesh key, and why. */
export interface Rejection {
  readonly node: string;
  readonly key: string;
  readonly reason: string;
}

/** Result of {@link recordsFromSnapshot}. */
export interface RecordsResult {
  /** Validated remote nodes (not this node), sorted by name; pod CIDRs are only the claims each node won. */
  readonly nodes: RemoteNode[];
  /** This node's own validated record as the mesh replicates it, when present (pod CIDRs filtered like the others'). */
  readonly self?: RemoteNode;
  readonly rejected: Rejection[];
}

const NAME_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const K8S_NAME_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const K8S_NS_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Parsed node record before claim resolution. */
interface Candidate {
  readonly member: MemberView;
  readonly info: NodeInfo;
  readonly cidrs: Cidr[];
}

/**
 * Validates every member's `node` and `pod/...` entries and resolves pod-CIDR conflicts.
 * - A `node` entry with an unknown `format`, bad JSON, a name other than the member's, or a bad
 *   key/port/mesh IP/claim time is rejected whole (the node is not planned).
 * - Bad endpoints and pod CIDRs outside the cluster CIDRs are dropped one by one.
 * - A pod CIDR that lost its claim is dropped; a node whose mesh IP is not inside a pod CIDR it
 *   holds is rejected (its /32 would otherwise hijack another node's addresses).
 * - A node reusing another's WireGuard key is rejected (older claim keeps it).
 * - A pod entry whose key does not match its name/namespace, or that names an address outside its
 *   node's held pod CIDRs, is rejected.
 */
export function recordsFromSnapshot(snapshot: MeshSnapshot, config: RecordsConfig): RecordsResult {
  const limits: RecordLimits = { ...DEFAULT_RECORD_LIMITS, ...config.limits };
  const cluster = config.clusterCIDRs.map((c) => tryParseCIDR(c, false)).filter((c): c is Cidr => c !== null);
  const cache = config.cache;
  if (cache) {
    const fp = JSON.stringify([config.clusterCIDRs, limits]);
    if (cache.fingerprint !== fp) {
      cache.nodes = new WeakMap();
      cache.pods = new WeakMap();
      cache.last = undefined;
      cache.fingerprint = fp;
    }
  }
  const inputs = cache ? snapshotInputs(snapshot) : undefined;
  if (cache?.last && sameInputs(cache.last.inputs, inputs!)) return cache.last.result;
  const result = computeRecords(snapshot, cluster, limits, cache);
  if (cache) cache.last = { inputs: inputs!, result };
  return result;
}

/** {@link recordsFromSnapshot} after the memo checks. */
function computeRecords(snapshot: MeshSnapshot, cluster: readonly Cidr[], limits: RecordLimits, cache: RecordsCache | undefined): RecordsResult {
  const rejected: Rejection[] = [];
  const reject = (node: string, key: string, reason: string) => rejected.push({ node, key, reason });

  const candidates: Candidate[] = [];
  const seen = new Set<string>();
  for (const member of snapshot.members) {
    if (seen.has(member.name)) {
      reject(member.name, NODE_ENTRY_KEY, 'duplicate member name in snapshot');
      continue;
    }
    seen.add(member.name);
    const entry = member.entries.get(NODE_ENTRY_KEY);
    if (!entry || entry.deleted) continue;
    let memo = cache?.nodes.get(entry.payload);
    if (!memo || memo.member !== member.name) {
      const reasons: string[] = [];
      const parsed = parseNodeInfo(member.name, entry.payload, cluster, limits, (reason) => reasons.push(reason));
      memo = { member: member.name, parsed, reasons };
      if (cache && entry.payload instanceof Uint8Array) cache.nodes.set(entry.payload, memo);
    }
    for (const r of memo.reasons) reject(member.name, NODE_ENTRY_KEY, r);
    if (memo.parsed) candidates.push({ member, ...memo.parsed });
  }

  // Claims: one per (node, CIDR). Every member computes the same winners from the same records.
  const claims: BlockClaim[] = [];
  // podCIDRs are canonical and `cidrs` holds their parses, index for index (parseNodeInfo).
  for (const c of candidates) c.info.podCIDRs.forEach((cidr, k) => claims.push({ node: c.info.name, cidr, claimedAt: c.info.claimedAt, parsed: c.cidrs[k] }));
  const analysis = analyzeClaims(claims);
  for (const l of analysis.lost) {
    reject(l.claim.node, NODE_ENTRY_KEY, `pod CIDR ${l.claim.cidr} lost to ${l.winner.node} (${l.winner.cidr})`);
  }

  // WireGuard keys must be unique: the older claim (then lower name) keeps a contested key.
  const byAge = [...candidates].sort((a, b) => a.info.claimedAt - b.info.claimedAt || (a.info.name < b.info.name ? -1 : a.info.name > b.info.name ? 1 : 0));
  const keyOwner = new Map<string, string>();
  const out: RemoteNode[] = [];
  let self: RemoteNode | undefined;
  for (const c of byAge) {
    const name = c.info.name;
    const owner = keyOwner.get(c.info.wgPublicKey);
    if (owner !== undefined) {
      reject(name, NODE_ENTRY_KEY, `WireGuard public key already used by ${owner}`);
      continue;
    }
    const held: string[] = [];
    const heldParsed: Cidr[] = [];
    c.info.podCIDRs.forEach((cidr, k) => {
      if (analysis.winners.get(cidr)?.node !== name) return;
      held.push(cidr);
      heldParsed.push(c.cidrs[k]!);
    });
    const mesh = tryParseIP(c.info.meshIP)!;
    if (!heldParsed.some((h) => cidrHas(h, mesh.family, mesh.value))) {
      reject(name, NODE_ENTRY_KEY, `mesh IP ${c.info.meshIP} is not inside a pod CIDR the node holds`);
      continue;
    }
    keyOwner.set(c.info.wgPublicKey, name);
    const info: NodeInfo = Object.freeze({ ...c.info, podCIDRs: Object.freeze(held) });
    const pods = parsePods(c.member, heldParsed, limits, reject, cache);
    const node: RemoteNode = Object.freeze({ info, pods, state: c.member.state });
    if (name === snapshot.self) self = node;
    else out.push(node);
  }
  out.sort((a, b) => (a.info.name < b.info.name ? -1 : a.info.name > b.info.name ? 1 : 0));
  Object.freeze(out);
  Object.freeze(rejected);
  return Object.freeze(self ? { nodes: out, self, rejected } : { nodes: out, rejected });
}

function decodeJSON(payload: Uint8Array, max: number, fail: (reason: string) => void): unknown {
  if (!(payload instanceof Uint8Array)) return fail('payload is not bytes'), undefined;
  if (payload.byteLength > max) return fail(`payload of ${payload.byteLength} bytes exceeds ${max}`), undefined;
  try {
    return JSON.parse(decoder.decode(payload));
  } catch {
    return fail('payload is not UTF-8 JSON'), undefined;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPort = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535;

/** Validates one `node` payload; calls `fail` for each problem and returns null when the record is unusable. */
function parseNodeInfo(
  memberName: string,
  payload: Uint8Array,
  cluster: readonly Cidr[],
  limits: RecordLimits,
  fail: (reason: string) => void,
): { info: NodeInfo; cidrs: Cidr[] } | null {
  const v = decodeJSON(payload, limits.maxNodePayload, fail);
  if (v === undefined) return null;
  if (!isObject(v)) return fail('node record is not a JSON object'), null;
  if (!KNOWN_NODE_FORMATS.includes(v.format as number)) {
    return fail(`unknown node record format ${JSON.stringify(v.format)?.slice(0, 32)}; skipped`), null;
  }
  if (v.name !== memberName) return fail(`record names ${JSON.stringify(String(v.name).slice(0, 64))}, not its member`), null;
  if (typeof v.name !== 'string' || !NAME_RE.test(v.name)) return fail('bad node name'), null;
  if (typeof v.wgPublicKey !== 'string' || !isValidKey(v.wgPublicKey)) return fail('wgPublicKey is not a base64 32-byte key'), null;
  if (!isPort(v.listenPort)) return fail('listenPort is not a port number'), null;
  if (!Number.isSafeInteger(v.claimedAt) || (v.claimedAt as number) < 0) return fail('claimedAt is not a non-negative integer'), null;
  if (!Number.isInteger(v.keepalive) || (v.keepalive as number) < 0 || (v.keepalive as number) > 65535) {
    return fail('keepalive is not an integer in 0..65535'), null;
  }
  const meshIP = canonicalIP(v.meshIP);
  if (!meshIP) return fail('meshIP is not an IP address'), null;
  if (!Array.isArray(v.endpoints)) return fail('endpoints is not an array'), null;
  if (!Array.isArray(v.podCIDRs)) return fail('podCIDRs is not an array'), null;

  const endpoints: string[] = [];
  for (const raw of v.endpoints.slice(0, limits.maxEndpoints)) {
    const e = parseEndpoint(raw);
    if (!e) {
      fail(`endpoint ${JSON.stringify(raw)?.slice(0, 80)} dropped: not ip:port`);
      continue;
    }
    // An endpoint inside the overlay would route WireGuard's own packets into WireGuard.
    if (cluster.some((c) => cidrHas(c, e.family, e.value))) {
      fail(`endpoint ${formatEndpoint(e)} dropped: inside the cluster CIDR`);
      continue;
    }
    const text = formatEndpoint(e);
    if (!endpoints.includes(text)) endpoints.push(text);
  }
  if (v.endpoints.length > limits.maxEndpoints) fail(`${v.endpoints.length - limits.maxEndpoints} endpoints beyond ${limits.maxEndpoints} dropped`);

  const podCIDRs: string[] = [];
  const cidrs: Cidr[] = [];
  for (const raw of v.podCIDRs.slice(0, limits.maxPodCIDRs)) {
    const text = canonicalCIDR(raw);
    const c = text ? tryParseCIDR(text) : null;
    if (!text || !c) {
      fail(`pod CIDR ${JSON.stringify(raw)?.slice(0, 80)} dropped: not a CIDR with host bits zero`);
      continue;
    }
    if (!cluster.some((k) => cidrContains(k, c))) {
      fail(`pod CIDR ${text} dropped: not inside the cluster CIDR`);
      continue;
    }
    if (!podCIDRs.includes(text)) {
      podCIDRs.push(text);
      cidrs.push(c);
    }
  }
  if (v.podCIDRs.length > limits.maxPodCIDRs) fail(`${v.podCIDRs.length - limits.maxPodCIDRs} pod CIDRs beyond ${limits.maxPodCIDRs} dropped`);

  const info: NodeInfo = Object.freeze({
    format: 1,
    name: v.name,
    wgPublicKey: v.wgPublicKey,
    listenPort: v.listenPort,
    endpoints: Object.freeze(endpoints),
    meshIP,
    podCIDRs: Object.freeze(podCIDRs),
    claimedAt: v.claimedAt as number,
    keepalive: v.keepalive as number,
  });
  return { info, cidrs };
}

/** Validates a member's `pod/<ns>/<name>` entries against the pod CIDRs it holds. */
function parsePods(
  member: MemberView,
  held: readonly Cidr[],
  limits: RecordLimits,
  reject: (node: string, key: string, reason: string) => void,
  cache: RecordsCache | undefined,
): readonly PodRecord[] {
  const keys = [...member.entries.keys()].filter((k) => k.startsWith(POD_ENTRY_PREFIX)).sort();
  const pods: PodRecord[] = [];
  for (const key of keys) {
    const entry = member.entries.get(key)!;
    if (entry.deleted) continue;
    if (pods.length >= limits.maxPodsPerNode) {
      reject(member.name, key, `more than ${limits.maxPodsPerNode} pods; dropped`);
      continue;
    }
    let memo = cache?.pods.get(entry.payload);
    if (!memo || memo.key !== key) {
      memo = podShape(key, entry.payload, limits);
      if (cache && entry.payload instanceof Uint8Array) cache.pods.set(entry.payload, memo);
    }
    if (!memo.shape) {
      reject(member.name, key, memo.reason!);
      continue;
    }
    const { shape } = memo;
    const outside = shape.ips.findIndex((ip) => !held.some((h) => cidrHas(h, ip.family, ip.value)));
    if (outside >= 0) {
      reject(member.name, key, `pod IP ${shape.text[outside]} is outside the node's pod CIDRs`);
      continue;
    }
    pods.push(Object.freeze({ name: shape.name, namespace: shape.namespace, ips: shape.text }));
  }
  return Object.freeze(pods);
}

/** The checks of a pod entry that depend only on its key and bytes (memoizable). */
function podShape(key: string, payload: Uint8Array, limits: RecordLimits): PodMemo {
  let reason: string | undefined;
  const fail = (r: string) => {
    reason ??= r;
  };
  const rest = key.slice(POD_ENTRY_PREFIX.length).split('/');
  if (rest.length !== 2 || !K8S_NS_RE.test(rest[0]!) || !K8S_NAME_RE.test(rest[1]!)) return { key, shape: null, reason: 'pod key is not pod/<namespace>/<name>' };
  const v = decodeJSON(payload, limits.maxPodPayload, fail);
  if (v === undefined) return { key, shape: null, reason: reason! };
  if (!isObject(v)) return { key, shape: null, reason: 'pod record is not a JSON object' };
  if (v.namespace !== rest[0] || v.name !== rest[1]) return { key, shape: null, reason: 'pod record name/namespace does not match its key' };
  if (!Array.isArray(v.ips) || v.ips.length === 0 || v.ips.length > limits.maxPodIPs) {
    return { key, shape: null, reason: `pod ips must be an array of 1..${limits.maxPodIPs} addresses` };
  }
  const ips: ParsedIP[] = [];
  const text: string[] = [];
  for (const raw of v.ips) {
    const ip = tryParseIP(raw);
    if (!ip) return { key, shape: null, reason: `pod IP ${JSON.stringify(raw)?.slice(0, 64)} is not an address` };
    ips.push(ip);
    text.push(canonicalIP(raw)!);
  }
  return { key, shape: Object.freeze({ name: rest[1]!, namespace: rest[0]!, ips, text: Object.freeze(text) }) };
}
