/**
 * What the agent takes from Kubernetes at startup (through `src/k8s`): the node's podCIDR as a
 * fixed block when no `--pod-cidr` is given, and the other nodes as extra mesh seeds. Pure: the
 * caller passes the source's snapshot.
 */
import type { Logger } from 'pino';
import type { Config, HostPort } from '../config.ts';
import { validatePodCidr } from '../ipam/blocks.ts';
import type { KubeSnapshot } from '../k8s/source.ts';

/** The merged configuration and what was taken from Kubernetes (for the start-up log). */
export interface KubeMerge {
  readonly config: Config;
  readonly podCIDRsFrom: 'flag' | 'kubernetes' | 'mesh';
  readonly addedSeeds: number;
  /** Values from Kubernetes that were ignored, with the reason. */
  readonly ignored: readonly string[];
}

/**
 * Merges a Kubernetes snapshot into the configuration. Flags win: a `--pod-cidr` is kept as is; the
 * node's `spec.podCIDRs` are used otherwise, each validated against the cluster CIDRs and block size
 * (invalid ones are ignored and reported). Seeds are the union of `--seeds` and the other nodes.
 */
export function mergeKubeSnapshot(config: Config, snap: Pick<KubeSnapshot, 'podCIDRs' | 'seeds' | 'endpointIPs'>): KubeMerge {
  const ignored: string[] = [];
  let podCIDRs = config.podCIDRs;
  let from: KubeMerge['podCIDRsFrom'] = config.podCIDRs.length > 0 ? 'flag' : 'mesh';
  if (config.podCIDRs.length === 0 && snap.podCIDRs.length > 0) {
    const ok: string[] = [];
    for (const c of snap.podCIDRs.slice(0, 2)) {
      try {
        ok.push(validatePodCidr(c, config.clusterCIDRs, config.blockSize));
      } catch (err) {
        ignored.push(`podCIDR ${c}: ${(err as Error).message}`);
      }
    }
    if (ok.length > 0) {
      podCIDRs = ok;
      from = 'kubernetes';
    }
  }
  const seen = new Set(config.seeds.map((s) => `${s.host}|${s.port}`));
  const own = new Set(snap.endpointIPs);
  const seeds: HostPort[] = [...config.seeds];
  for (const s of snap.seeds.slice(0, 1000)) {
    const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([0-9.]+):(\d{1,5})$/.exec(s);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65_535) {
      ignored.push(`seed ${s}: not ip:port`);
      continue;
    }
    if (own.has(m[1]!) || seen.has(`${m[1]}|${port}`)) continue;
    seen.add(`${m[1]}|${port}`);
    seeds.push(Object.freeze({ host: m[1]!, port }));
  }
  const merged = Object.freeze({ ...config, podCIDRs: Object.freeze([...podCIDRs]), seeds: Object.freeze(seeds) });
  return { config: merged, podCIDRsFrom: from, addedSeeds: seeds.length - config.seeds.length, ignored };
}

/** `host:port`, bracketing IPv6 hosts (the mesh's seed syntax). */
export function formatSeed(s: HostPort): string {
  return s.host.includes(':') ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

/**
 * Follows the Kubernetes source after startup: every snapshot's seeds that were not known yet
 * (flags, the startup snapshot, earlier snapshots; this node's own addresses excluded) are handed to
 * `join` (the mesh's `join`), so Nodes that appear later become seeds without a restart. Returns the
 * listener to pass to `subscribe`. Never blocks and never throws: a failed join is logged (the mesh
 * keeps the seeds and retries them itself).
 */
export function followKubeSeeds(config: Config, join: (seeds: string[]) => Promise<void>, logger: Logger): (snap: Pick<KubeSnapshot, 'podCIDRs' | 'seeds' | 'endpointIPs'>) => void {
  let known: readonly HostPort[] = config.seeds;
  return (snap) => {
    const merged = mergeKubeSnapshot({ ...config, seeds: known }, { podCIDRs: [], seeds: snap.seeds, endpointIPs: snap.endpointIPs });
    const added = merged.config.seeds.slice(known.length);
    if (added.length === 0) return;
    known = merged.config.seeds;
    const seeds = added.map(formatSeed);
    logger.info({ seeds }, 'new seeds from kubernetes; joining them');
    join(seeds).catch((err: unknown) => logger.warn({ err, seeds }, 'no new kubernetes seed answered yet; the mesh keeps retrying them'));
  };
}
