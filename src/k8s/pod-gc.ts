/**
 * Pure reconciliation of the pods the CNI plugin reported on this node against the pods the API
 * server has scheduled here: which pod names the agent should drop from DNS (and from its mesh
 * record) because the pod is gone even though no CNI DEL arrived (kubelet crash, node reboot,
 * force-deleted pod...). No I/O; the clock is an argument.
 */
import type { KubePod } from './slim.ts';

/** A pod as the CNI handler recorded it on this node. */
export interface CniPod {
  /** Identifies the attachment for the caller (e.g. "<containerId>/<ifname>"); not used in decisions. */
  readonly key?: string;
  readonly namespace: string;
  readonly name: string;
  /** K8S_POD_UID from CNI_ARGS, when the runtime passed it. */
  readonly uid?: string;
  /** When the CNI ADD happened (ms since the epoch). */
  readonly addedAt: number;
}

/** What the Kubernetes source knows about pods, from its snapshot. */
export interface KubePodView {
  /** The informer is listed and watching right now; its set is current. */
  readonly connected: boolean;
  readonly synced: boolean;
  readonly pods: readonly KubePod[];
  /** When the pod informer last heard from the API server (same clock as `now` and `addedAt`). */
  readonly podsFreshAt: number | undefined;
}

/** Why a pod's name is removed. */
export type RemovalReason = 'not-found' | 'uid-mismatch' | 'terminal';

/** One removal decision. */
export interface PodRemoval {
  readonly pod: CniPod;
  readonly reason: RemovalReason;
}

/**
 * A CNI pod is only judged once the pod informer has heard from the API server at least this long
 * after its CNI ADD: the pod object exists before the kubelet runs CNI ADD, so an informer that is
 * current as of later than that must have seen it, allowing this much for watch delivery lag. A
 * name therefore never flaps away right after the pod starts, nor while a silent partition has
 * frozen the watch (no events or bookmarks arrive, so the view never becomes fresh enough).
 */
export const DEFAULT_GRACE_MS = 30_000;

/**
 * Returns the CNI-reported pods whose names should be removed:
 * - `not-found`: no pod of that namespace/name is scheduled to this node any more;
 * - `uid-mismatch`: a pod of that name exists but is another incarnation (recreated StatefulSet
 *   pod), and the CNI record carries the old uid;
 * - `terminal`: the pod has finished (Succeeded/Failed): its sandbox is going away.
 *
 * It decides nothing unless the view is synced and connected (a stale or partial set would delete
 * names of pods created while the API server was unreachable), and nothing for a pod until both
 * `now` and the view's `podsFreshAt` are at least `graceMs` past its CNI ADD. Terminating pods (deletionTimestamp set) keep their names: they still serve during
 * their grace period. The result is sorted by namespace/name. Pure.
 */
export function podsToRemove(cni: readonly CniPod[], view: KubePodView, now: number, graceMs: number = DEFAULT_GRACE_MS): PodRemoval[] {
  if (!view.synced || !view.connected) return [];
  const byName = new Map<string, KubePod>();
  for (const p of view.pods) byName.set(`${p.namespace}/${p.name}`, p);
  const out: PodRemoval[] = [];
  for (const pod of cni) {
    if (now - pod.addedAt < graceMs) continue;
    if (view.podsFreshAt === undefined || view.podsFreshAt - pod.addedAt < graceMs) continue;
    const k = byName.get(`${pod.namespace}/${pod.name}`);
    if (k === undefined) out.push({ pod, reason: 'not-found' });
    else if (pod.uid !== undefined && pod.uid !== '' && k.uid !== '' && k.uid !== pod.uid) out.push({ pod, reason: 'uid-mismatch' });
    else if (k.phase === 'Succeeded' || k.phase === 'Failed') out.push({ pod, reason: 'terminal' });
  }
  return out.sort((a, b) => {
    const ka = `${a.pod.namespace}/${a.pod.name}`;
    const kb = `${b.pod.namespace}/${b.pod.name}`;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
}

/** The fields of an IPAM allocation (`src/ipam/pods.ts` PodAllocation) this module needs. */
export interface AllocationLike {
  readonly containerId: string;
  readonly ifname: string;
  readonly podName?: string;
  readonly podNamespace?: string;
  readonly allocatedAt: number;
}

/**
 * CNI pods from IPAM allocations: one per named pod (attachments without a pod name carry no DNS
 * name and are skipped), keyed "<containerId>/<ifname>"; a pod with several attachments counts
 * from its oldest one.
 */
export function cniPodsFromAllocations(allocations: readonly AllocationLike[]): CniPod[] {
  const byPod = new Map<string, CniPod>();
  for (const a of allocations) {
    if (a.podName === undefined || a.podNamespace === undefined || a.podName === '' || a.podNamespace === '') continue;
    const k = `${a.podNamespace}/${a.podName}`;
    const prev = byPod.get(k);
    if (prev === undefined || a.allocatedAt < prev.addedAt) {
      byPod.set(k, { key: `${a.containerId}/${a.ifname}`, namespace: a.podNamespace, name: a.podName, addedAt: a.allocatedAt });
    }
  }
  return [...byPod.values()];
}
