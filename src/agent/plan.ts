/**
 * The agent's pure planning step: mesh snapshot -> validated records (`src/plan/records.ts`) ->
 * desired datapath (`src/plan/datapath.ts`). No I/O, no clock; the underlay facts are read once at
 * startup by the caller and passed in.
 */
import type { Config } from '../config.ts';
import { RecordsCache, recordsFromSnapshot } from '../plan/records.ts';
import { planDatapath, type DatapathConfig } from '../plan/datapath.ts';
import type { PlanFn } from './ports.ts';
import { withoutRevoked } from '../token/store.ts';
import { RelayRecordsCache, relayInputsFromSnapshot } from '../relay/records.ts';

/** Facts about the local underlay the planner needs. */
export interface UnderlayFacts {
  /** MTU of the interface carrying the listen address. */
  readonly mtu: number;
  /** Families reachable on the underlay, preferred first. */
  readonly families: readonly (4 | 6)[];
}

/** Builds the agent's {@link PlanFn} from the configuration and the underlay facts. */
export function makePlanFn(config: Config, underlay: UnderlayFacts): PlanFn {
  const dp: DatapathConfig = {
    ifname: config.ifname,
    listenPort: config.wgPort,
    clusterCIDRs: config.clusterCIDRs,
    mtu: config.mtu,
    underlayMTU: underlay.mtu,
    underlayFamilies: underlay.families,
  };
  // Parsed records memoized by payload identity: a plan per mesh change re-parses only what changed.
  const cache = new RecordsCache();
  // Relay entries (issue 7): parsed apart from the node records; the same object while they are unchanged.
  const relayCache = new RelayRecordsCache();
  // The cache hands back the same frozen records for an unchanged mesh; the plan of those records
  // for the same self record is then the last one (same object, so the datapath can skip its diff).
  let last: { records: object; self: object; relay: object; out: ReturnType<PlanFn> } | undefined;
  return (snapshot, self) => {
    // Removed nodes and losers of a token race (issue 7) are dropped before any record is read.
    const admitted = withoutRevoked(snapshot);
    const records = recordsFromSnapshot(admitted, { clusterCIDRs: config.clusterCIDRs, cache });
    const relay = relayInputsFromSnapshot(admitted, relayCache);
    if (last && last.records === records && last.self === self && last.relay === relay) return last.out;
    const desired = planDatapath(self, records.nodes, dp, relay);
    const out = { desired, remotes: records.nodes, rejected: relay.rejected.length > 0 ? [...records.rejected, ...relay.rejected] : records.rejected, relay };
    last = { records, self, relay, out };
    return out;
  };
}
