/**
 * The boundary between Kubernetes objects and weft: Node and Pod objects from the API server are
 * slimmed to small, validated, frozen plain types here and nowhere else. Pure; no I/O.
 *
 * Everything from the API server is treated as untrusted input: strings are length-bounded,
 * addresses and CIDRs are validated, lists are capped. A field that fails validation is dropped
 * (and counted by the caller through {@link SlimResult.dropped}), never thrown past the informer.
 */
import { isIP } from 'node:net';

/** Annotation on the Node carrying the agent's WireGuard public key (informational). */
export const ANNOTATION_PUBLIC_KEY = 'weft.dev/public-key';
/** Annotation on the Node carrying the agent's mesh IP (informational). */
export const ANNOTATION_MESH_IP = 'weft.dev/mesh-ip';

/** Upper bounds applied to every slimmed object. */
export const LIMITS = {
  nameLength: 253,
  addressesPerNode: 16,
  cidrsPerNode: 4,
  ipsPerPod: 4,
  annotationValueLength: 256,
} as const;

/** A Kubernetes Node as weft needs it. */
export interface KubeNode {
  readonly name: string;
  readonly uid: string;
  /** `spec.podCIDRs` (or `spec.podCIDR` when the list is absent), canonical, validated. */
  readonly podCIDRs: readonly string[];
  /** `status.addresses` of type InternalIP, in API order. */
  readonly internalIPs: readonly string[];
  /** `status.addresses` of type ExternalIP, in API order. */
  readonly externalIPs: readonly string[];
  /** The weft annotations as last seen (undefined when absent). */
  readonly publicKey?: string;
  readonly meshIP?: string;
}

/** A Pod scheduled to this node, as the DNS reconciliation needs it. */
export interface KubePod {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  /** `status.podIPs` (or `status.podIP`), validated. */
  readonly ips: readonly string[];
  /** `status.phase`: Pending, Running, Succeeded, Failed or Unknown. */
  readonly phase: string;
  /** True once `metadata.deletionTimestamp` is set (the pod is terminating). */
  readonly deleted: boolean;
}

/** A slimmed object, or the reason it was dropped. */
export type SlimResult<T> = { readonly ok: true; readonly value: T; readonly dropped: number } | { readonly ok: false; readonly reason: string };

const NAME_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const POD_PHASES = new Set(['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown']);

type Loose = Record<string, unknown> | undefined;

const rec = (v: unknown): Loose => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
const str = (v: unknown, max: number): string | undefined => (typeof v === 'string' && v.length > 0 && v.length <= max ? v : undefined);

function validName(v: unknown): string | undefined {
  const s = str(v, LIMITS.nameLength);
  return s !== undefined && NAME_RE.test(s) ? s : undefined;
}

/** Returns the canonical form of an IP literal (IPv4 dotted, IPv6 lower case), or undefined. */
export function canonicalIP(v: unknown): string | undefined {
  const s = str(v, 45);
  if (s === undefined) return undefined;
  const family = isIP(s);
  if (family === 4) return s.split('.').map((o) => String(Number(o))).join('.');
  if (family === 6) return new URL(`http://[${s}]/`).hostname.slice(1, -1);
  return undefined;
}

/** Returns the canonical form of a CIDR ("10.244.3.0/24"), or undefined when invalid or host bits are set. */
export function canonicalCIDR(v: unknown): string | undefined {
  const s = str(v, 50);
  if (s === undefined) return undefined;
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = canonicalIP(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (ip === undefined || !/^\d{1,3}$/.test(lenText)) return undefined;
  const len = Number(lenText);
  const bits = isIP(ip) === 4 ? 32 : 128;
  if (len > bits) return undefined;
  if (bits === 32) {
    const n = ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(o), 0n);
    const hostMask = (1n << BigInt(32 - len)) - 1n;
    if ((n & hostMask) !== 0n) return undefined;
  }
  return `${ip}/${len}`;
}

function uniqueValid<T>(values: readonly unknown[], check: (v: unknown) => T | undefined, cap: number): { out: T[]; dropped: number } {
  const out: T[] = [];
  let dropped = 0;
  for (const v of values) {
    const c = check(v);
    if (c === undefined || out.length >= cap) dropped++;
    else if (!out.includes(c)) out.push(c);
  }
  return { out, dropped };
}

/** Slims a Node object (as deserialized by the client or as raw JSON) to a {@link KubeNode}. */
export function slimNode(obj: unknown): SlimResult<KubeNode> {
  const o = rec(obj);
  const meta = rec(o?.metadata);
  const name = validName(meta?.name);
  if (name === undefined) return { ok: false, reason: 'node without a valid metadata.name' };
  const uid = str(meta?.uid, LIMITS.nameLength) ?? '';
  const spec = rec(o?.spec);
  const rawCIDRs = Array.isArray(spec?.podCIDRs) ? (spec.podCIDRs as unknown[]) : spec?.podCIDR !== undefined ? [spec.podCIDR] : [];
  const cidrs = uniqueValid(rawCIDRs, canonicalCIDR, LIMITS.cidrsPerNode);
  const addrs = Array.isArray(rec(o?.status)?.addresses) ? (rec(o?.status)?.addresses as unknown[]) : [];
  const internal: unknown[] = [];
  const external: unknown[] = [];
  for (const a of addrs.slice(0, LIMITS.addressesPerNode * 4)) {
    const r = rec(a);
    if (r?.type === 'InternalIP') internal.push(r.address);
    else if (r?.type === 'ExternalIP') external.push(r.address);
  }
  const int = uniqueValid(internal, canonicalIP, LIMITS.addressesPerNode);
  const ext = uniqueValid(external, canonicalIP, LIMITS.addressesPerNode);
  const ann = rec(meta?.annotations);
  const publicKey = str(ann?.[ANNOTATION_PUBLIC_KEY], LIMITS.annotationValueLength);
  const meshIP = str(ann?.[ANNOTATION_MESH_IP], LIMITS.annotationValueLength);
  const node: KubeNode = Object.freeze({
    name,
    uid,
    podCIDRs: Object.freeze(cidrs.out),
    internalIPs: Object.freeze(int.out),
    externalIPs: Object.freeze(ext.out),
    ...(publicKey !== undefined ? { publicKey } : {}),
    ...(meshIP !== undefined ? { meshIP } : {}),
  });
  return { ok: true, value: node, dropped: cidrs.dropped + int.dropped + ext.dropped };
}

/** Slims a Pod object to a {@link KubePod}. Pods on the host network carry no pod IPs of their own and are still returned (callers filter). */
export function slimPod(obj: unknown): SlimResult<KubePod> {
  const o = rec(obj);
  const meta = rec(o?.metadata);
  const name = validName(meta?.name);
  const namespace = validName(meta?.namespace);
  if (name === undefined || namespace === undefined) return { ok: false, reason: 'pod without a valid metadata.name/namespace' };
  const uid = str(meta?.uid, LIMITS.nameLength) ?? '';
  const st = rec(o?.status);
  const rawIPs: unknown[] = Array.isArray(st?.podIPs)
    ? (st.podIPs as unknown[]).map((p) => rec(p)?.ip)
    : st?.podIP !== undefined
      ? [st.podIP]
      : [];
  const ips = uniqueValid(rawIPs, canonicalIP, LIMITS.ipsPerPod);
  const phase = typeof st?.phase === 'string' && POD_PHASES.has(st.phase) ? st.phase : 'Unknown';
  const deleted = meta?.deletionTimestamp !== undefined && meta.deletionTimestamp !== null;
  return {
    ok: true,
    value: Object.freeze({ name, namespace, uid, ips: Object.freeze(ips.out), phase, deleted }),
    dropped: ips.dropped,
  };
}

/** Formats "ip:port", bracketing IPv6. */
export function hostPort(ip: string, port: number): string {
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}
