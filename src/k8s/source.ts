/**
 * The agent's Kubernetes source: what the API server knows that helps the agent, slimmed to plain
 * model types and delivered as immutable snapshots. It never sits on the datapath: the agent plans
 * from the mesh, and uses this source only for its pod subnet, its endpoints, its seeds and the DNS
 * clean-up of pods whose CNI DEL was missed. While the API server is unreachable the last known
 * state stays and the snapshot says `connected: false`.
 *
 * Informers:
 * - Nodes (all of them, one watch): this node's `spec.podCIDRs` and InternalIP/ExternalIP, and the
 *   other nodes' addresses as mesh seeds. One watch on all nodes gives the agent's own Node too, so
 *   there is no second watch with `metadata.name=<self>` (it would double the apiserver's watch
 *   fan-out for the same data).
 * - Pods with `spec.nodeName=<self>`: slimmed to {@link KubePod}.
 *
 * It also keeps this node's informational annotations (`weft.dev/public-key`, `weft.dev/mesh-ip`)
 * in place: level-triggered, a JSON merge patch is sent whenever the observed Node differs from the
 * wanted values, retried with backoff while the API server is unreachable.
 */
import { CoreV1Api, type KubeConfig, PatchStrategy, Watch, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { type BackoffPolicy, type Clock, DEFAULT_BACKOFF, type TimerHandle, backoffDelay, systemClock } from './clock.ts';
import { type ListWatchTransport, Reflector, type ReflectorStats } from './reflector.ts';
import {
  ANNOTATION_MESH_IP,
  ANNOTATION_PUBLIC_KEY,
  type KubeNode,
  type KubePod,
  canonicalIP,
  hostPort,
  slimNode,
  slimPod,
} from './slim.ts';

/** One immutable view of what the Kubernetes source knows. */
export interface KubeSnapshot {
  /** Increases by one with every snapshot delivered. */
  readonly version: number;
  /** Both informers have listed successfully and their watches are established right now. */
  readonly connected: boolean;
  /** Both informers have listed successfully at least once (the data below is real, maybe stale). */
  readonly synced: boolean;
  /** This node's Node object; undefined until seen (or when it does not exist). */
  readonly self: KubeNode | undefined;
  /** This node's `spec.podCIDRs`; empty = not set, the agent claims a block through the mesh. */
  readonly podCIDRs: readonly string[];
  /** This node's underlay addresses for its mesh endpoints: InternalIPs first, then ExternalIPs. */
  readonly endpointIPs: readonly string[];
  /** Other nodes as mesh seeds, "ip:meshPort" (first InternalIP, else first ExternalIP), sorted. */
  readonly seeds: readonly string[];
  /** All nodes, by name. */
  readonly nodes: readonly KubeNode[];
  /** Pods scheduled to this node, by namespace/name. */
  readonly pods: readonly KubePod[];
  /**
   * When (source clock, ms) the pod informer last heard from the API server (list, event or
   * bookmark); undefined before its first list. Lets the pod clean-up tell a current view from one
   * frozen by a silent network partition that the connection has not noticed yet.
   */
  readonly podsFreshAt: number | undefined;
}

/** Counters of the source, for metrics and status. */
export interface KubeSourceStats {
  readonly nodes: Readonly<ReflectorStats>;
  readonly pods: Readonly<ReflectorStats>;
  readonly annotationPatches: number;
  readonly annotationPatchErrors: number;
  readonly listenerErrors: number;
}

/** The values the agent publishes on its Node. Informational only: the mesh is the source of truth. */
export interface NodeAnnotations {
  readonly publicKey: string;
  readonly meshIP: string;
}

/** The calls the source makes to the API server; the default uses `@kubernetes/client-node`. */
export interface KubeTransport {
  readonly nodes: ListWatchTransport;
  readonly pods: ListWatchTransport;
  /** JSON merge patch of this node's annotations (null value = remove). */
  patchNodeAnnotations(annotations: Record<string, string | null>): Promise<void>;
}

/** Options of {@link KubeSource}. */
export interface KubeSourceOptions {
  /** This node's name (the Node object's name). */
  readonly nodeName: string;
  /** The mesh (gossip) port, appended to other nodes' addresses to make seeds. */
  readonly meshPort: number;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly random?: () => number;
  readonly backoff?: BackoffPolicy;
  /** Bound on a list call (default 30 s). */
  readonly listTimeoutMs?: number;
  /** A watch shorter than this that delivered nothing counts as failed (default 1 s). */
  readonly minWatchMs?: number;
}

/** Listener of {@link KubeSource.subscribe}. */
export type KubeSnapshotListener = (snapshot: KubeSnapshot) => void;

/** Options of {@link clientTransport}. */
export interface ClientTransportOptions {
  /** Server-side watch timeout range in seconds; each watch draws one (default 300-600, as client-go). */
  readonly watchTimeoutSeconds?: readonly [number, number];
  /** Client-side inactivity timeout of a watch stream in ms (default 90 s; bookmarks keep it alive). */
  readonly watchInactivityMs?: number;
  readonly random?: () => number;
}

/** The real transport over `@kubernetes/client-node`: typed list calls, its `Watch`, and a merge patch. */
export function clientTransport(kc: KubeConfig, nodeName: string, opts: ClientTransportOptions = {}): KubeTransport {
  const api = kc.makeApiClient(CoreV1Api);
  const watch = new Watch(kc);
  // The client's inactivity timeout is a plain field, private only in its typings; its 30 s default
  // would reconnect quiet watches twice a minute (bookmarks come about once a minute).
  (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = opts.watchInactivityMs ?? 90_000;
  const [tMin, tMax] = opts.watchTimeoutSeconds ?? [300, 600];
  const random = opts.random ?? Math.random;
  const podSelector = `spec.nodeName=${nodeName}`;
  const watcher =
    (path: string, fieldSelector?: string): ListWatchTransport['watch'] =>
    async (resourceVersion, onEvent, onDone) => {
      const params: Record<string, string | boolean | number> = {
        allowWatchBookmarks: true,
        timeoutSeconds: Math.floor(tMin + (tMax - tMin) * random()),
      };
      if (resourceVersion !== '') params.resourceVersion = resourceVersion;
      if (fieldSelector !== undefined) params.fieldSelector = fieldSelector;
      const controller = await watch.watch(path, params, (type: string, obj: unknown) => onEvent(type, obj), onDone);
      return { abort: () => controller.abort() };
    };
  return {
    nodes: {
      async list() {
        const r = await api.listNode();
        return { items: r.items, resourceVersion: r.metadata?.resourceVersion ?? '' };
      },
      watch: watcher('/api/v1/nodes'),
    },
    pods: {
      async list() {
        const r = await api.listPodForAllNamespaces({ fieldSelector: podSelector });
        return { items: r.items, resourceVersion: r.metadata?.resourceVersion ?? '' };
      },
      watch: watcher('/api/v1/pods', podSelector),
    },
    async patchNodeAnnotations(annotations) {
      await api.patchNode(
        { name: nodeName, body: { metadata: { annotations } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    },
  };
}

/** An error from the annotation patch, with context prefix. */
export class KubePatchError extends Error {
  override name = 'KubePatchError';
}

/**
 * The Kubernetes source. Contract for subscribers:
 * - snapshots are delivered in order, each complete and frozen; changes made in the same tick are
 *   coalesced into one snapshot (delivered from a microtask), so a relist of 1000 pods is one call;
 * - a listener must not block and should not throw (a throw is caught, logged and counted; the
 *   other listeners still run);
 * - a listener added with `subscribe` gets the current snapshot at once, then every later one.
 */
export class KubeSource {
  private readonly opts: KubeSourceOptions;
  private readonly transport: KubeTransport;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoffPolicy: BackoffPolicy;
  private readonly log: Logger;
  private readonly nodes: Reflector<KubeNode>;
  private readonly pods: Reflector<KubePod>;
  private readonly listeners = new Set<KubeSnapshotListener>();
  private current: KubeSnapshot;
  private scheduled = false;
  private running = false;
  private wanted: NodeAnnotations | undefined;
  private patchInFlight = false;
  private patchTimer: TimerHandle | undefined;
  private patchAttempt = 0;
  private counters = { annotationPatches: 0, annotationPatchErrors: 0, listenerErrors: 0 };

  constructor(transport: KubeTransport, opts: KubeSourceOptions) {
    this.opts = opts;
    this.transport = transport;
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.backoffPolicy = opts.backoff ?? DEFAULT_BACKOFF;
    this.log = opts.logger;
    const common = {
      clock: this.clock,
      random: this.random,
      backoff: this.backoffPolicy,
      listTimeoutMs: opts.listTimeoutMs ?? 30_000,
      minWatchMs: opts.minWatchMs ?? 1_000,
      onChange: () => this.schedule(),
    };
    this.nodes = new Reflector<KubeNode>({
      ...common,
      name: 'nodes',
      transport: transport.nodes,
      slim: slimNode,
      key: (n) => n.name,
      logger: opts.logger.child({ informer: 'nodes' }),
    });
    this.pods = new Reflector<KubePod>({
      ...common,
      name: 'pods',
      transport: transport.pods,
      slim: slimPod,
      key: (p) => `${p.namespace}/${p.name}`,
      logger: opts.logger.child({ informer: 'pods' }),
    });
    this.current = this.build(0);
  }

  /** Starts both informers. Idempotent; never throws (errors are retried with backoff). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.nodes.start();
    this.pods.start();
  }

  /** Stops the informers and the annotation retries. The last snapshot stays readable. */
  async stop(): Promise<void> {
    this.running = false;
    this.patchTimer?.cancel();
    this.patchTimer = undefined;
    await Promise.all([this.nodes.stop(), this.pods.stop()]);
  }

  /** The latest snapshot (never blocks, never touches the network). */
  snapshot(): KubeSnapshot {
    return this.current;
  }

  /** Subscribes to snapshots (see the class contract). Returns the unsubscribe function. */
  subscribe(listener: KubeSnapshotListener): () => void {
    this.listeners.add(listener);
    this.call(listener, this.current);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolves with the first snapshot that is synced, or with the current (unsynced) one after
   * `timeoutMs` on the source's clock. Never rejects. For the agent's start-up: wait a bounded
   * time for the podCIDR and the seeds, then go on from flags and the mesh alone.
   */
  waitForSync(timeoutMs: number): Promise<KubeSnapshot> {
    return new Promise((resolve) => {
      let settled = false;
      let unsubscribe: (() => void) | undefined;
      const finish = (snap: KubeSnapshot) => {
        if (settled) return;
        settled = true;
        timer.cancel();
        unsubscribe?.();
        resolve(snap);
      };
      const timer = this.clock.setTimer(() => finish(this.current), timeoutMs);
      unsubscribe = this.subscribe((snap) => {
        if (snap.synced) finish(snap);
      });
      if (settled) unsubscribe();
    });
  }

  /** Counters for metrics. */
  stats(): KubeSourceStats {
    return { nodes: { ...this.nodes.stats }, pods: { ...this.pods.stats }, ...this.counters };
  }

  /**
   * Sets the annotations this node should carry. Non-blocking: the patch is sent in the background
   * when the observed Node differs, and retried with backoff on failure. Idempotent.
   */
  setNodeAnnotations(annotations: NodeAnnotations): void {
    const meshIP = canonicalIP(annotations.meshIP);
    if (meshIP === undefined || !/^[A-Za-z0-9+/]{42,43}=?$/.test(annotations.publicKey)) {
      throw new KubePatchError(`k8s: annotate ${this.opts.nodeName}: invalid public key or mesh IP`);
    }
    this.wanted = { publicKey: annotations.publicKey, meshIP };
    this.patchAttempt = 0;
    this.maybePatch();
  }

  private call(listener: KubeSnapshotListener, snap: KubeSnapshot): void {
    try {
      listener(snap);
    } catch (err) {
      this.counters.listenerErrors++;
      this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'snapshot listener threw');
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.current = this.build(this.current.version + 1);
      for (const l of [...this.listeners]) this.call(l, this.current);
      this.maybePatch();
    });
  }

  private build(version: number): KubeSnapshot {
    const nodes = this.nodes.values();
    const self = nodes.find((n) => n.name === this.opts.nodeName);
    const seeds = nodes
      .filter((n) => n.name !== this.opts.nodeName)
      .map((n) => n.internalIPs[0] ?? n.externalIPs[0])
      .filter((ip): ip is string => ip !== undefined)
      .map((ip) => hostPort(ip, this.opts.meshPort))
      .sort();
    return Object.freeze({
      version,
      connected: this.nodes.connected && this.pods.connected,
      synced: this.nodes.synced && this.pods.synced,
      self,
      podCIDRs: self?.podCIDRs ?? [],
      endpointIPs: Object.freeze(self ? [...self.internalIPs, ...self.externalIPs.filter((ip) => !self.internalIPs.includes(ip))] : []),
      seeds: Object.freeze([...new Set(seeds)]),
      nodes: Object.freeze(nodes),
      pods: Object.freeze(this.pods.values()),
      podsFreshAt: this.pods.freshAt,
    });
  }

  /** Sends the annotation patch when wanted values differ from the observed Node. */
  private maybePatch(): void {
    const want = this.wanted;
    if (!this.running || want === undefined || this.patchInFlight || this.patchTimer !== undefined) return;
    const self = this.current.self;
    if (!this.current.synced || self === undefined) return; // wait for our Node to appear
    if (self.publicKey === want.publicKey && self.meshIP === want.meshIP) return;
    this.patchInFlight = true;
    this.counters.annotationPatches++;
    this.transport
      .patchNodeAnnotations({ [ANNOTATION_PUBLIC_KEY]: want.publicKey, [ANNOTATION_MESH_IP]: want.meshIP })
      .then(
        () => {
          this.patchInFlight = false;
          this.patchAttempt = 0;
          this.log.info({ node: this.opts.nodeName, meshIP: want.meshIP }, 'node annotated');
          // The informer delivers the patched Node; maybePatch runs again then and finds it equal.
        },
        (err: unknown) => {
          this.patchInFlight = false;
          this.counters.annotationPatchErrors++;
          const delay = backoffDelay(this.backoffPolicy, this.patchAttempt++, this.random);
          this.log.warn({ node: this.opts.nodeName, err: err instanceof Error ? err.message : String(err), delayMs: delay }, 'k8s: annotate node failed');
          if (!this.running) return;
          this.patchTimer = this.clock.setTimer(() => {
            this.patchTimer = undefined;
            this.maybePatch();
          }, delay);
        },
      );
  }
}
