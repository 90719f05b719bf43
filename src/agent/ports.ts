/**
 * The small interfaces the agent core drives. Each is implemented by another weft folder
 * (`src/plan`, `src/datapath`, `src/ipam`, `src/cni`, `src/dns`) and adapted in
 * `src/agent/wire.ts`; tests pass fakes. Keeping them here lets the agent core stay independent of
 * the exact shapes of those modules.
 */
import type { MeshSnapshot } from '../../mesh/api.ts';
import type { DesiredState, NodeInfo, PodRecord, RemoteNode } from '../model.ts';
import type { RelayInputs } from '../relay/records.ts';
import type { RelayUpdate } from '../relay/service.ts';

/** One record the planner refused, with the reason; counted in metrics and logged at debug. */
export interface RejectedRecord {
  readonly node: string;
  readonly key: string;
  readonly reason: string;
}

/** The pure planning step: a mesh snapshot and this node's record to the datapath's desired state. */
export interface PlanResult {
  readonly desired: DesiredState;
  /** Every validated remote node, whatever its liveness (the planner only peers alive/suspect ones). */
  readonly remotes: readonly RemoteNode[];
  readonly rejected: readonly RejectedRecord[];
  /** The validated relay entries of the snapshot (issue 7), when the plan function reads them. */
  readonly relay?: RelayInputs;
}

/** Pure, synchronous, no I/O and no clock. */
export type PlanFn = (snapshot: MeshSnapshot, self: NodeInfo) => PlanResult;

/** Counters the datapath reconciler keeps. */
export interface DatapathStats {
  readonly reconciles: number;
  readonly errors: number;
  readonly writes: number;
  readonly lastDurationMs: number;
  readonly lastError?: string;
}

/**
 * The datapath reconciler. `apply` records the latest desired state and reconciles; concurrent
 * calls coalesce. It resolves when the state it was given (or a newer one) has been attempted;
 * it rejects or counts an error when applying failed (the agent treats both the same).
 */
export interface DatapathPort {
  /** Resolves `{ ok: false }` (or rejects) when a stage failed; the agent retries at the next trigger. */
  apply(desired: DesiredState): Promise<{ readonly ok: boolean } | void>;
  stats(): DatapathStats;
  /** Key rotation: switches the device to `privateKey` and resolves once a reconcile pass applied it (rejects when it failed). Optional for fakes. */
  setPrivateKey?(privateKey: string): Promise<void>;
  /** Stops timers; leaves the datapath in place. */
  stop(): Promise<void>;
  /** Removes everything weft owns in the datapath (its routes and the interface). */
  uninstall(ifname: string): Promise<void>;
}

/** A pod block decision: the CIDRs this node owns and when it first claimed them. */
export interface BlockClaim {
  readonly podCIDRs: readonly string[];
  readonly claimedAt: number;
}

/** Where the chosen block is kept between restarts. */
export interface BlockStore {
  load(): Promise<BlockClaim | undefined>;
  save(claim: BlockClaim): Promise<void>;
  clear(): Promise<void>;
}

/** The DNS server as the agent drives it: swap the table (must not block), close. */
export interface DnsPort {
  update(self: NodeInfo, localPods: readonly PodRecord[], remotes: readonly RemoteNode[]): void;
  close(): Promise<void>;
}

/** Node-level network setup the CNI side owns (the gateway device with the gateway address) plus forwarding. */
export interface HostNetPort {
  /**
   * Creates/adopts the gateway device `weftgw0` carrying the gateway addresses (e.g. 10.244.3.1/24)
   * that pods on routed veths use as next hop, DNS server and mesh IP; idempotent.
   */
  ensureGateway(gatewayCIDRs: readonly string[]): Promise<void>;
  /** Enables IPv4 (and IPv6 when dual stack) forwarding in this network namespace; idempotent. */
  enableForwarding(families: readonly (4 | 6)[]): Promise<void>;
  /** Removes the gateway device and a legacy pod bridge `weftbr0` (uninstall); absent devices are fine. */
  removeGateway(): Promise<void>;
}

/**
 * Relaying for peers that cannot reach each other (issue 7; `src/relay/service.ts`). `update` runs
 * on every reconcile, `setFailing` after every link-prober pass; neither blocks nor throws.
 */
export interface RelayPort {
  update(u: RelayUpdate): void;
  setFailing(names: readonly string[]): void;
  stop(): Promise<void>;
}
