/**
 * The agent core: joins the mesh, owns this node's pod block and published record, and on every
 * mesh change and periodic resync runs `snapshot -> plan -> datapath.apply` and refreshes the DNS
 * table. All I/O goes through injected ports (see `ports.ts`); real implementations are wired in
 * `wire.ts`. One reconcile runs at a time; triggers that arrive meanwhile coalesce into one more
 * pass. A failed step is logged, counted and retried at the next trigger; it never escapes the loop.
 */
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { MeshHandle, MeshSnapshot } from '../../mesh/api.ts';
import type { Config } from '../config.ts';
import { NODE_ENTRY_KEY, type DesiredState, type NodeInfo, type PodRecord, type RemoteNode } from '../model.ts';
import type { WgDevice } from '../wireguard/backend.ts';
import type { Health } from '../observe/health.ts';
import { peerLink, type PeerLink } from '../observe/peers.ts';
import type { AgentMetrics } from '../observe/metrics.ts';
import type { BlockClaim, BlockStore, DatapathPort, DnsPort, HostNetPort, PlanFn, RelayPort } from './ports.ts';
import { chooseBlock, gatewayOf } from '../ipam/blocks.ts';
import { LinkProber, type ProbeSender } from '../relay/prober.ts';
import type { LinkTarget } from '../relay/links.ts';
import { blockConflict, buildNodeInfo, formatBlockConflict, diffPodEntries, ownPodEntries, takenBlocks } from './records.ts';

/**
 * Persistent keepalive (s) a node behind NAT asks its peers for, and uses towards them (the planner
 * keeps alive a link when either side asks): it holds the NAT mappings open. Nodes with a public
 * address ask for none, so public <-> public links carry no keepalive traffic. Two things keepalive
 * used to do for every link are the link prober's job now (`src/relay/prober.ts`): an idle link is
 * probed before status would flag it, and a peer added without a session (a new node, a rotated
 * key, or re-added after its agent restarted) is probed right after the reconcile that added it,
 * which starts a handshake at once instead of after WireGuard's own retry.
 */
export const DEFAULT_KEEPALIVE_S = 25;

/** The agent could not start (no free block, bad state file...). Fatal at startup only. */
export class AgentStartError extends Error {
  override name = 'AgentStartError';
}

/** Timer functions, injectable so tests can drive time. */
export interface Timers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Everything the agent core needs. */
export interface AgentDeps {
  readonly config: Config;
  /** Root logger; the agent derives `component` children from it. */
  readonly logger: Logger;
  /** ms since the epoch. */
  readonly clock: () => number;
  readonly random: () => number;
  readonly timers?: Timers;
  readonly mesh: MeshHandle;
  readonly wgPublicKey: string;
  readonly backendKind: string;
  /** This node's WireGuard endpoints as published ("ip:port"). */
  readonly endpoints: readonly string[];
  readonly plan: PlanFn;
  readonly datapath: DatapathPort;
  readonly blockStore: BlockStore;
  readonly hostNet: HostNetPort;
  readonly dns?: DnsPort;
  readonly metrics?: AgentMetrics;
  readonly health?: Health;
  /** Reads the WireGuard device, for status. */
  readonly readDevice?: () => Promise<WgDevice | null>;
  /** When this node's WireGuard key was created (ms since the epoch), for the key age in status. */
  readonly wgKeyCreatedAt?: number;
  /** Called after the block changed (first claim or re-claim), before the new record is published. */
  readonly onBlockChanged?: (claim: BlockClaim, previous: BlockClaim | undefined) => Promise<void> | void;
  /**
   * Persistent keepalive (s) this node asks its peers for while it is behind NAT (it publishes an
   * observed endpoint); default {@link DEFAULT_KEEPALIVE_S}, 0 = never. Without NAT it asks for none.
   */
  readonly keepalive?: number;
  /**
   * The link prober (`src/relay/prober.ts`): probes planned peers without a recent handshake and
   * reports failed direct links to `relay`. Off when absent (tests); needs `readDevice`.
   */
  readonly prober?: { readonly sender: ProbeSender; readonly intervalMs?: number; readonly relayAfterMs?: number };
  /** Relaying (issue 7, `src/relay/service.ts`): fed every plan and the prober's failed links; stopped with the agent. */
  readonly relay?: RelayPort;
  /**
   * After start, how long an existing datapath is left untouched while no other member has been
   * heard from (restart adoption). Default max(2 x resync, 60 s).
   */
  readonly adoptGraceMs?: number;
  /** How long to gossip before claiming a block when none is fixed or persisted. Default 1500 ms. */
  readonly initialSyncMs?: number;
}

/** One peer row of the status view. */
export interface PeerStatus {
  readonly name: string;
  readonly publicKey: string;
  readonly endpoint: string | undefined;
  readonly allowedIPs: readonly string[];
  /** Seconds since the epoch, 0 = never. */
  readonly lastHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  /** Mesh liveness of the node, or 'unknown' for a device peer weft did not plan. */
  readonly state: string;
  /** WireGuard link state, see {@link peerLink}. */
  readonly link: PeerLink;
  /** The relay node the link goes through, when it is `relayed`. */
  readonly relay?: string;
}

/** What `GET /v1/status` returns. */
export interface AgentStatus {
  readonly node: {
    readonly name: string;
    readonly backend: string;
    readonly publicKey: string;
    readonly meshIP: string | undefined;
    readonly podCIDRs: readonly string[];
    readonly listenPort: number;
    readonly mtu: number | undefined;
    readonly ifname: string;
    readonly endpoints: readonly string[];
    /** When the WireGuard key was created (ms since the epoch), when known. */
    readonly keyCreatedAt?: number;
  };
  readonly ready: boolean;
  readonly mesh: { readonly members: Readonly<Record<string, number>> };
  readonly datapath: ReturnType<DatapathPort['stats']>;
  readonly peers: readonly PeerStatus[];
  /** Seconds since the epoch. */
  readonly now: number;
}

const realTimers: Timers = {
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** The agent. Create, `start()`, feed local pods with `setLocalPods`, `stop()` on SIGTERM. */
export class Agent {
  readonly #d: AgentDeps;
  readonly #log: Logger;
  readonly #ipamLog: Logger;
  readonly #dpLog: Logger;
  readonly #timers: Timers;
  #claim: BlockClaim | undefined;
  /** The error line last logged for a conflicting fixed --pod-cidr, so it is logged once per conflict. */
  #fixedConflict: string | undefined;
  #self: NodeInfo | undefined;
  #publishedNode: string | undefined;
  #publishedPods = new Map<string, string>();
  #localPods: readonly PodRecord[] = [];
  #podsKnown = false;
  #hiddenPods = new Set<string>();
  #lastDesired: DesiredState | undefined;
  #lastRemotes: readonly RemoteNode[] = [];
  #running = false;
  #pending = false;
  #idle: Promise<void> = Promise.resolve();
  #resyncTimer: unknown;
  #stopped = false;
  #started = false;
  #ready = false;
  #joined = false;
  #holding = false;
  #holdUntil = 0;
  #wgPublicKey: string;
  #keyCreatedAt: number | undefined;
  readonly #prober: LinkProber | undefined;
  readonly #onChange = (): void => this.trigger('mesh');

  constructor(deps: AgentDeps) {
    this.#d = deps;
    this.#timers = deps.timers ?? realTimers;
    this.#wgPublicKey = deps.wgPublicKey;
    this.#keyCreatedAt = deps.wgKeyCreatedAt;
    this.#log = deps.logger.child({ component: 'agent' });
    this.#ipamLog = deps.logger.child({ component: 'ipam' });
    this.#dpLog = deps.logger.child({ component: 'datapath' });
    const readDevice = deps.readDevice;
    if (deps.prober && readDevice) {
      this.#prober = new LinkProber({
        targets: () => this.#linkTargets(),
        readDevice,
        sender: deps.prober.sender,
        clock: deps.clock,
        timers: this.#timers,
        logger: deps.logger.child({ component: 'prober' }),
        intervalMs: deps.prober.intervalMs,
        relayAfterMs: deps.prober.relayAfterMs,
        onFailing: (names) => this.#onFailingLinks(names),
      });
    }
    deps.health?.watch('reconcile');
    deps.health?.setReady('mesh', false, 'not joined');
    deps.health?.setReady('datapath', false, 'not applied');
  }

  /** This node's current record (after start). */
  get self(): NodeInfo | undefined {
    return this.#self;
  }

  /** The pod block this node owns (after start). */
  get claim(): BlockClaim | undefined {
    return this.#claim;
  }

  /** The last desired state planned. */
  get lastDesired(): DesiredState | undefined {
    return this.#lastDesired;
  }

  /** Resolves when no reconcile pass is running or pending. */
  idle(): Promise<void> {
    return this.#idle;
  }

  /**
   * Joins the mesh, settles the pod block, publishes the node record, prepares the host network
   * and runs the first reconcile. Rejects (fatal) only for problems a retry cannot fix.
   */
  async start(): Promise<void> {
    const { config, mesh } = this.#d;
    try {
      await mesh.start(config.seeds.map((s) => (s.host.includes(':') ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`)));
      this.#d.health?.setReady('mesh', true, config.seeds.length > 0 ? 'joined through a seed' : 'listening (no seeds: first member)');
      this.#log.info({ seeds: config.seeds.length }, 'mesh started');
    } catch (err) {
      // The member stays up and keeps retrying its seeds; until it hears from another member, the
      // agent does not let an empty view strip an existing datapath (see #reconcileOnce).
      if ((err as Error).name !== 'MeshJoinError') throw err;
      this.#log.warn({ err, seeds: config.seeds.length }, 'no seed answered yet; running alone and retrying');
      this.#d.health?.setReady('mesh', false, 'no seed answered yet');
    }

    // Until another member is heard from, an existing datapath is left alone for a grace period:
    // a restarted node (above all one without seeds) must not strip its peers from an empty view.
    this.#holdUntil = this.#d.clock() + (this.#d.adoptGraceMs ?? Math.max(2 * config.resyncMs, 60_000));

    const claim = await this.#initialClaim();
    await this.#adoptClaim(claim, undefined);
    // Pod entries are only touched once the local pod set is known (first setLocalPods), so a
    // restart does not withdraw and republish every name.
    this.#publishedPods = ownPodEntries(mesh.snapshot());
    if (this.#podsKnown) this.#publishPods();

    mesh.on('change', this.#onChange);
    this.#resyncTimer = this.#timers.setInterval(() => this.trigger('resync'), config.resyncMs);
    this.#started = true;
    this.trigger('start');
    await this.idle();
    this.#prober?.start();
  }

  /** The link prober, when one is configured (its counters feed metrics). */
  get prober(): LinkProber | undefined {
    return this.#prober;
  }

  /** The planned peers as the link prober sees them: name, key, mesh IP, endpoint and relay. */
  #linkTargets(): LinkTarget[] {
    const meshIPs = new Map(this.#lastRemotes.map((r) => [r.info.wgPublicKey, r.info.meshIP]));
    const out: LinkTarget[] = [];
    for (const p of this.#lastDesired?.peers ?? []) {
      const meshIP = meshIPs.get(p.publicKey);
      if (meshIP === undefined) continue;
      out.push({ name: p.name, publicKey: p.publicKey, meshIP, ...(p.endpoint !== undefined ? { endpoint: p.endpoint } : {}), ...(p.relay !== undefined ? { relay: p.relay } : {}) });
    }
    return out;
  }

  #onFailingLinks(names: readonly string[]): void {
    if (!this.#stopped) this.#d.relay?.setFailing(names);
  }

  /** Replaces the set of local pods (from the CNI handler); publishes only what changed. Never blocks. */
  setLocalPods(pods: readonly PodRecord[]): void {
    this.#localPods = [...pods];
    this.#podsKnown = true;
    if (this.#started && !this.#stopped) {
      this.#publishPods();
      this.trigger('pods');
    }
  }

  /**
   * Pods (as "namespace/name") whose names must not be published although CNI still holds them:
   * Kubernetes says they are gone (deleted without a CNI DEL). Replaces the previous set. Never blocks.
   */
  setHiddenPods(keys: Iterable<string>): void {
    const next = new Set(keys);
    if (next.size === this.#hiddenPods.size && [...next].every((k) => this.#hiddenPods.has(k))) return;
    for (const k of next) if (!this.#hiddenPods.has(k)) this.#log.info({ audit: true, event: 'pod-name-removed', pod: k }, 'pod gone in Kubernetes without a CNI DEL; its name is withdrawn');
    this.#hiddenPods = next;
    if (this.#started && !this.#stopped && this.#podsKnown) {
      this.#publishPods();
      this.trigger('pods');
    }
  }

  #visiblePods(): readonly PodRecord[] {
    if (this.#hiddenPods.size === 0) return this.#localPods;
    return this.#localPods.filter((p) => !this.#hiddenPods.has(`${p.namespace}/${p.name}`));
  }

  /** Asks for a reconcile pass. Never blocks; passes coalesce. */
  trigger(reason: string): void {
    if (this.#stopped) return;
    this.#pending = true;
    if (this.#running) return;
    this.#running = true;
    this.#idle = this.#loop(reason);
  }

  async #loop(reason: string): Promise<void> {
    try {
      while (this.#pending && !this.#stopped) {
        this.#pending = false;
        await this.#reconcileOnce(reason);
        reason = 'coalesced';
      }
    } finally {
      this.#running = false;
    }
  }

  async #reconcileOnce(reason: string): Promise<void> {
    const { metrics, health } = this.#d;
    const started = performance.now();
    metrics?.reconciles.inc();
    try {
      let snapshot = this.#d.mesh.snapshot();
      this.#sweepStalePods(snapshot);
      this.#publishObservedEndpoint(snapshot);
      if (reason === 'resync' && this.#claim) {
        // Drift repair for the node side too: a deleted gateway device or gateway address comes back.
        try {
          await this.#d.hostNet.ensureGateway(this.#claim.podCIDRs.map((c) => gatewayOf(c).cidr));
        } catch (err) {
          metrics?.reconcileErrors.inc({ stage: 'gateway' });
          this.#log.child({ component: 'cni' }).error({ err }, 'cannot repair the pod gateway device; retrying at the next resync');
        }
      }
      let result = this.#plan(snapshot);
      if (result === undefined) return;
      const conflict = this.#claim ? blockConflict(this.#d.config.name, this.#claim, result.remotes) : undefined;
      if (conflict !== undefined && this.#d.config.podCIDRs.length === 0) {
        await this.#reclaim(conflict.holder, result.remotes);
        snapshot = this.#d.mesh.snapshot();
        result = this.#plan(snapshot);
        if (result === undefined) return;
      } else {
        this.#reportFixedConflict(conflict);
      }
      if (!this.#joined && snapshot.members.some((m) => m.name !== snapshot.self && (m.state === 'alive' || m.state === 'suspect'))) {
        this.#joined = true;
        health?.setReady('mesh', true, 'joined');
        this.#log.info('heard from another member');
      }
      if (result.relay && this.#d.relay) {
        try {
          this.#d.relay.update({ snapshot, self: this.#self!, behindNAT: this.behindNAT, remotes: result.remotes, relay: result.relay });
        } catch (err) {
          metrics?.reconcileErrors.inc({ stage: 'relay' });
          this.#log.child({ component: 'relay' }).error({ err }, 'relay update failed');
        }
      }
      const added = this.#auditPeers(result.desired);
      this.#lastDesired = result.desired;
      this.#lastRemotes = result.remotes;
      try {
        this.#d.dns?.update(this.#self!, this.#visiblePods(), result.remotes);
      } catch (err) {
        metrics?.reconcileErrors.inc({ stage: 'dns' });
        this.#log.child({ component: 'dns' }).error({ err }, 'dns table update failed');
      }
      try {
        const wait = this.#holdUntil - this.#d.clock();
        if (!this.#joined && wait > 0 && (await this.#deviceHasPeers())) {
          if (!this.#holding) {
            this.#holding = true;
            this.#dpLog.info({ graceMs: Math.round(wait) }, 'no other member heard yet and the device has peers: leaving the datapath untouched');
            this.#timers.setTimeout(() => this.trigger('adopt-grace'), wait + 1);
          }
          return;
        }
        const out = await this.#d.datapath.apply(result.desired);
        if (out && out.ok === false) throw new Error(`datapath reconcile failed: ${this.#d.datapath.stats().lastError ?? 'see datapath log'}`);
        if (!this.#ready) this.#dpLog.info({ peers: result.desired.peers.length, routes: result.desired.routes.length }, 'datapath applied');
        // A peer added (a new node, or a peer's rotated key) has no session and no keepalive: probe it
        // now so WireGuard handshakes at once, not at the next prober tick (a rotation mid-transfer
        // would otherwise stall the transfer for seconds).
        if (added) this.#prober?.kick();
        this.#ready = true;
        health?.setReady('datapath', true, 'applied');
      } catch (err) {
        metrics?.reconcileErrors.inc({ stage: 'datapath' });
        this.#dpLog.error({ err, reason }, 'datapath apply failed; retrying at the next trigger');
        if (!this.#ready) health?.setReady('datapath', false, (err as Error).message);
      }
      this.#dpLog.debug({ reason, peers: result.desired.peers.length, ms: Math.round(performance.now() - started) }, 'reconciled');
    } catch (err) {
      metrics?.reconcileErrors.inc({ stage: 'plan' });
      this.#log.error({ err, reason }, 'reconcile failed; retrying at the next trigger');
    } finally {
      metrics?.planDuration.observe((performance.now() - started) / 1000);
      health?.tick('reconcile');
    }
  }

  /**
   * A fixed --pod-cidr is never moved, so a conflict is the operator's to fix: one error line per
   * distinct conflict (not one per reconcile), and the node stays not ready ('ipam') until it clears.
   */
  #reportFixedConflict(conflict: ReturnType<typeof blockConflict>): void {
    if (conflict === undefined) {
      if (this.#fixedConflict === undefined) return;
      this.#fixedConflict = undefined;
      this.#ipamLog.info({ block: this.#claim?.podCIDRs }, 'the fixed pod block no longer conflicts');
      this.#d.health?.setReady('ipam', true, 'pod block held');
      return;
    }
    const line = `fixed --pod-cidr refused: ${formatBlockConflict(conflict)} (older claim); give --pod-cidr a block no other node holds`;
    if (line === this.#fixedConflict) return;
    this.#fixedConflict = line;
    this.#d.metrics?.reconcileErrors.inc({ stage: 'ipam' });
    this.#ipamLog.error({ block: conflict.mine, overlaps: conflict.theirs, holder: conflict.holder }, line);
    this.#d.health?.setReady('ipam', false, line);
  }

  #plan(snapshot: MeshSnapshot): ReturnType<PlanFn> | undefined {
    if (!this.#self) return undefined;
    const result = this.#d.plan(snapshot, this.#self);
    for (const r of result.rejected) {
      this.#d.metrics?.rejectedRecords.inc({ reason: r.reason.split(':')[0]!.slice(0, 40) });
      this.#log.debug({ node: r.node, key: r.key, reason: r.reason }, 'mesh record rejected');
    }
    return result;
  }

  /** Fixed --pod-cidr, else the persisted claim, else a fresh claim after a short initial sync. */
  async #initialClaim(): Promise<BlockClaim> {
    const { config, blockStore, clock } = this.#d;
    let stored: BlockClaim | undefined;
    try {
      stored = await blockStore.load();
    } catch (err) {
      this.#ipamLog.warn({ err }, 'cannot read the stored pod block; claiming a new one');
    }
    if (config.podCIDRs.length > 0) {
      const same = stored && sameSet(stored.podCIDRs, config.podCIDRs);
      const claim = { podCIDRs: [...config.podCIDRs], claimedAt: same ? stored!.claimedAt : clock() };
      this.#ipamLog.info({ block: claim.podCIDRs }, 'using the fixed pod block');
      return claim;
    }
    if (stored && stored.podCIDRs.length > 0) {
      this.#ipamLog.info({ block: stored.podCIDRs }, 'adopting the stored pod block');
      return stored;
    }
    await this.#sleep(this.#d.initialSyncMs ?? 1500);
    return this.#chooseClaim(takenBlocks(this.#d.mesh.snapshot()));
  }

  /** First claims start at hash(name); re-claims (`avoid` given) start at a random block so colliding names do not collide again. */
  #chooseClaim(taken: readonly string[], avoid?: readonly string[]): BlockClaim {
    const { config, random, clock } = this.#d;
    const v4 = config.clusterCIDRs.find((c) => !c.includes(':'));
    if (!v4) throw new AgentStartError('agent: no IPv4 cluster CIDR to claim a block from; give --pod-cidr');
    let block: string;
    try {
      block = chooseBlock({ clusterCidr: v4, prefix: config.blockSize, node: config.name, taken, avoid, random: avoid ? random : undefined });
    } catch (err) {
      throw new AgentStartError(`agent: cannot claim a pod block: ${(err as Error).message}`, { cause: err });
    }
    this.#ipamLog.info({ block, taken: taken.length }, 'claimed a pod block');
    return { podCIDRs: [block], claimedAt: clock() };
  }

  async #reclaim(winner: string, remotes: readonly RemoteNode[]): Promise<void> {
    const previous = this.#claim!;
    const taken = new Set(takenBlocks(this.#d.mesh.snapshot()));
    for (const r of remotes) for (const c of r.info.podCIDRs) taken.add(c);
    const next = this.#chooseClaim([...taken].sort(), previous.podCIDRs);
    this.#d.metrics?.blockReclaims.inc();
    this.#ipamLog.warn({ lost: previous.podCIDRs, winner, block: next.podCIDRs }, 'lost the pod block to an older claim; re-claimed; pods on the old block must restart');
    await this.#adoptClaim(next, previous);
  }

  async #adoptClaim(claim: BlockClaim, previous: BlockClaim | undefined): Promise<void> {
    const { config, blockStore, hostNet } = this.#d;
    await blockStore.save(claim);
    this.#claim = claim;
    if (this.#d.onBlockChanged && (!previous || !sameSet(previous.podCIDRs, claim.podCIDRs))) await this.#d.onBlockChanged(claim, previous);
    const families = [...new Set(claim.podCIDRs.map((c) => (c.includes(':') ? 6 : 4) as 4 | 6))];
    await hostNet.ensureGateway(claim.podCIDRs.map((c) => gatewayOf(c).cidr));
    await hostNet.enableForwarding(families);
    this.#self = buildNodeInfo({
      name: config.name,
      wgPublicKey: this.#wgPublicKey,
      listenPort: config.wgPort,
      endpoints: this.#d.endpoints,
      claim,
      keepalive: this.#keepalive(),
    });
    this.#publishNode();
  }

  /**
   * NAT (issue 7): when other members see this node's probes come from another address than its own
   * (`observedSelf`), that address with the WireGuard port (which port-preserving NATs such as Linux
   * masquerade keep) goes first in the published endpoints, so peers aim at the NAT instead of an
   * unreachable private address and the datapath does not undo WireGuard's roaming on every resync.
   */
  #publishObservedEndpoint(snapshot: MeshSnapshot): void {
    const o = snapshot.observedSelf;
    if (!this.#self) return;
    // Sticky: a member on the same private LAN acks from our own address; that must not withdraw the NAT
    // address the members outside saw (observedSelf is whichever ack came last).
    if (o && isIP(o.addr) !== 0) {
      const seen = isIP(o.addr) === 6 ? `[${o.addr}]:${this.#d.config.wgPort}` : `${o.addr}:${this.#d.config.wgPort}`;
      if (!this.#d.endpoints.includes(seen)) this.#natEndpoint = seen;
    }
    const observed = this.#natEndpoint;
    if (observed === undefined) return;
    const next = [observed, ...this.#d.endpoints];
    const keepalive = this.#keepalive();
    if (next.join(',') === this.#self.endpoints.join(',') && keepalive === this.#self.keepalive) return;
    this.#log.info({ observed, endpoints: next, keepalive }, 'members see this node behind NAT; publishing the observed endpoint first');
    this.#self = { ...this.#self, endpoints: next, keepalive };
    this.#publishNode();
  }

  /** The NAT address members outside this node's LAN see it at (with the WireGuard port), once learned. */
  #natEndpoint: string | undefined;

  /** Keepalive only where needed: asked for while this node is behind NAT, never otherwise. */
  #keepalive(): number {
    return this.#natEndpoint !== undefined ? (this.#d.keepalive ?? DEFAULT_KEEPALIVE_S) : 0;
  }

  /** True once members see this node behind NAT (it publishes an observed endpoint). */
  get behindNAT(): boolean {
    return this.#natEndpoint !== undefined;
  }

  #publishNode(): void {
    const payload = JSON.stringify(this.#self);
    if (payload === this.#publishedNode) return;
    this.#d.mesh.setLocal(NODE_ENTRY_KEY, new TextEncoder().encode(payload));
    this.#publishedNode = payload;
    this.#log.info({ meshIP: this.#self!.meshIP, podCIDRs: this.#self!.podCIDRs, endpoints: this.#self!.endpoints }, 'published node record');
  }

  #publishPods(): void {
    const ops = diffPodEntries(this.#publishedPods, this.#visiblePods());
    const enc = new TextEncoder();
    // The mesh refuses entries over its limits (size, count); such a pod is dropped and counted,
    // and the rest are still published: this runs from the CNI handler, which must not see a throw.
    const dropped = [...ops.dropped];
    for (const { key, payload } of ops.set) {
      try {
        this.#d.mesh.setLocal(key, enc.encode(payload));
        this.#publishedPods.set(key, payload);
      } catch (err) {
        dropped.push(key);
        this.#log.debug({ err, key }, 'mesh refused a pod entry');
      }
    }
    for (const key of ops.del) {
      try {
        this.#d.mesh.deleteLocal(key);
        this.#publishedPods.delete(key);
      } catch (err) {
        this.#log.warn({ err, key }, 'cannot withdraw a pod entry; retrying at the next change');
      }
    }
    if (dropped.length > 0) {
      this.#d.metrics?.podEntriesDropped.inc(dropped.length);
      this.#log.warn({ dropped: dropped.slice(0, 5), count: dropped.length }, 'some pods are not published (entry too large, malformed or over the mesh limits)');
    }
  }

  /**
   * Key rotation (issue 9, see `rotation.ts`): puts the new private key on the device, then
   * publishes the new public key so every peer replaces this node's peer entry. The caller has
   * already persisted the key. Rejects when the datapath cannot take the key (the record is then
   * not changed, so peers keep matching the device).
   */
  async rotateKey(next: { privateKey: string; publicKey: string; createdAt: number }, trigger: string): Promise<void> {
    if (this.#stopped) throw new Error('agent: stopped');
    if (!this.#d.datapath.setPrivateKey) throw new Error('agent: this datapath cannot change its key');
    const previous = this.#wgPublicKey;
    await this.#d.datapath.setPrivateKey(next.privateKey);
    this.#wgPublicKey = next.publicKey;
    this.#keyCreatedAt = next.createdAt;
    if (this.#self) {
      this.#self = { ...this.#self, wgPublicKey: next.publicKey };
      this.#publishNode();
    }
    this.#log.info({ audit: true, event: 'key-rotated', trigger, publicKey: next.publicKey, previousPublicKey: previous }, 'WireGuard key rotated');
    this.trigger('key-rotated');
  }

  /**
   * Audit trail (issue 9): one `audit: true` line per node that becomes or stops being a peer, or
   * changes its key, against the last desired state. Returns true when a peer was added or re-keyed:
   * that WireGuard peer has no session yet.
   */
  #auditPeers(next: DesiredState): boolean {
    // The planner hands back its last plan object while nothing changed: nothing to compare.
    if (next === this.#lastDesired) return false;
    const before = new Map((this.#lastDesired?.peers ?? []).map((p) => [p.name, p]));
    const after = new Map(next.peers.map((p) => [p.name, p]));
    let fresh = false;
    for (const [name, p] of after) {
      const was = before.get(name);
      if (!was) this.#log.info({ audit: true, event: 'peer-added', peer: name, publicKey: p.publicKey, endpoint: p.endpoint, allowedIPs: p.allowedIPs }, 'peer added');
      else if (was.publicKey !== p.publicKey) this.#log.info({ audit: true, event: 'peer-key-changed', peer: name, publicKey: p.publicKey }, 'peer key changed');
      else continue;
      fresh = true;
    }
    for (const name of before.keys()) {
      if (!after.has(name)) {
        const r = this.#d.mesh.snapshot().members.find((m) => m.name === name);
        this.#log.info({ audit: true, event: 'peer-removed', peer: name, meshState: r?.state ?? 'gone' }, 'peer removed');
      }
    }
    return fresh;
  }

  async #deviceHasPeers(): Promise<boolean> {
    if (!this.#d.readDevice) return false;
    try {
      return ((await this.#d.readDevice())?.peers.length ?? 0) > 0;
    } catch {
      return true;
    }
  }

  /** Withdraws pod entries this node owns in the mesh but no longer publishes (left over from before a restart). */
  #sweepStalePods(snapshot: MeshSnapshot): void {
    if (!this.#podsKnown) return;
    for (const key of ownPodEntries(snapshot).keys()) {
      if (!this.#publishedPods.has(key)) {
        this.#d.mesh.deleteLocal(key);
        this.#log.info({ key }, 'withdrew a stale pod entry');
      }
    }
  }

  /** The status view: this node, mesh counts, datapath counters and one row per WireGuard peer. */
  async status(): Promise<AgentStatus> {
    const { config } = this.#d;
    const snapshot = this.#d.mesh.snapshot();
    const members: Record<string, number> = { alive: 0, suspect: 0, dead: 0, left: 0 };
    for (const m of snapshot.members) members[m.state] = (members[m.state] ?? 0) + 1;
    const byKey = new Map<string, RemoteNode>();
    for (const r of this.#lastRemotes) byKey.set(r.info.wgPublicKey, r);
    const relays = new Map<string, string>();
    for (const p of this.#lastDesired?.peers ?? []) if (p.relay !== undefined) relays.set(p.publicKey, p.relay);
    const device = this.#d.readDevice ? await this.#d.readDevice().catch(() => null) : null;
    const nowS = Math.floor(this.#d.clock() / 1000);
    const peers: PeerStatus[] = [];
    if (device) {
      for (const p of device.peers) {
        const r = byKey.get(p.publicKey);
        const relay = relays.get(p.publicKey);
        peers.push({
          name: r?.info.name ?? '?', publicKey: p.publicKey, endpoint: p.endpoint, allowedIPs: p.allowedIPs,
          lastHandshake: p.lastHandshake, rxBytes: p.rxBytes, txBytes: p.txBytes, state: r?.state ?? 'unknown', link: peerLink({ ...p, relay }, nowS),
          ...(relay !== undefined ? { relay } : {}),
        });
      }
    } else {
      for (const p of this.#lastDesired?.peers ?? []) {
        peers.push({ name: p.name, publicKey: p.publicKey, endpoint: p.endpoint, allowedIPs: p.allowedIPs, lastHandshake: 0, rxBytes: 0, txBytes: 0, state: byKey.get(p.publicKey)?.state ?? 'unknown', link: peerLink({ endpoint: p.endpoint, lastHandshake: 0, relay: p.relay }, nowS), ...(p.relay !== undefined ? { relay: p.relay } : {}) });
      }
    }
    // Code-point order, not localeCompare: the order only makes the output stable (node names are
    // DNS labels, so both orders agree), and a collator would load ICU's collation data into the
    // agent's resident memory on the first status call (~3-4 MB of VmRSS; bench/README.md).
    peers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return {
      node: {
        name: config.name, backend: this.#d.backendKind, publicKey: this.#wgPublicKey, meshIP: this.#self?.meshIP,
        podCIDRs: this.#claim?.podCIDRs ?? [], listenPort: config.wgPort, mtu: this.#lastDesired?.mtu, ifname: config.ifname,
        endpoints: this.#d.endpoints,
        keyCreatedAt: this.#keyCreatedAt,
      },
      ready: this.#ready,
      mesh: { members },
      datapath: this.#d.datapath.stats(),
      peers,
      now: nowS,
    };
  }

  /**
   * Stops the agent. With `leave`, announces a graceful leave first so peers drop this node at
   * once. The datapath (interface, peers, routes) stays in place either way.
   */
  async stop(opts: { leave?: boolean; leaveTimeoutMs?: number } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#d.mesh.off('change', this.#onChange);
    if (this.#resyncTimer !== undefined) this.#timers.clearInterval(this.#resyncTimer);
    await this.#prober?.stop();
    await this.#idle.catch(() => {});
    if (opts.leave) {
      try {
        await this.#d.mesh.leave(opts.leaveTimeoutMs ?? 2000);
      } catch (err) {
        this.#log.warn({ err }, 'mesh leave failed');
      }
    }
    const steps: [string, () => Promise<void>][] = [
      ['mesh', () => this.#d.mesh.stop()],
      ['datapath', () => this.#d.datapath.stop()],
      ['dns', () => this.#d.dns?.close() ?? Promise.resolve()],
      ['relay', () => this.#d.relay?.stop() ?? Promise.resolve()],
    ];
    for (const [what, fn] of steps) {
      try {
        await fn();
      } catch (err) {
        this.#log.warn({ err, what }, 'stop step failed');
      }
    }
    this.#log.info('agent stopped; datapath left in place');
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.#timers.setTimeout(resolve, ms));
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
