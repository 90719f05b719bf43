/**
 * Wires the real agent from a {@link Config}: keys, mesh, WireGuard backend, rtnetlink, datapath
 * reconciler, CNI handler, DNS server, local API, health and metrics; and the offline uninstall.
 * Only construction and ordering live here; behaviour lives in the modules wired.
 */
import { existsSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import type { MeshHandle } from '../../mesh/api.ts';
import { ApiClient, ApiClientError } from '../api/client.ts';
import { ApiError, ApiServer } from '../api/server.ts';
import type { Config } from '../config.ts';
import { Health, mountHealthRoutes } from '../observe/health.ts';
import { apiRequestObserver, createAgentMetrics, mountMetricsRoute } from '../observe/metrics.ts';
import { readRejections, startRejectionAudit } from '../observe/audit.ts';
import { KeyRotator } from './rotation.ts';
import { MeshKeyStore, mountMeshKeyRoutes } from './mesh-keys.ts';
import { generateKeyPair, loadOrCreatePrivateKey } from '../wireguard/keys.ts';
import { Agent } from './agent.ts';
import { startTokenService } from '../token/service.ts';
import { FileBlockStore } from './block-store.ts';
import { makePlanFn } from './plan.ts';
import { udpProbeSender } from '../relay/prober.ts';
import { RelayService } from '../relay/service.ts';
import { registerRelayMetrics } from '../relay/metrics.ts';
import type { HostNetPort } from './ports.ts';
import { planMTU } from '../plan/datapath.ts';
import { registerDnsMetrics, type DnsServer } from '../dns/server.ts';
import { loadOrCreateSecretFile, requireSecretFile } from './secrets.ts';
import { followKubeSeeds, mergeKubeSnapshot } from './kube.ts';
import { cniPodsFromAllocations, podsToRemove } from '../k8s/pod-gc.ts';
import { delQueueDir } from '../cni/del-queue.ts';
import { GATEWAY_DEVICE } from '../cni/devices.ts';
import { createIprouteNetnsOps } from '../cni/netns.ts';
import { hostVethName } from '../cni/spec.ts';
import { PodIpam } from '../ipam/pods.ts';
import { LinuxRtNetlink } from '../datapath/rtnetlink-linux.ts';
import { detectUnderlay, enableForwarding, endpointOf, resolveSeeds, systemLookup } from './underlay.ts';
import { createMeshFromConfig, createDatapath, createHostNet, createDns, mountCni, type CniMount, type Datapath, type Dns } from './components.ts';

/** An interface's MTU from rtnetlink in this process's network namespace (one short-lived socket). */
async function rtnetlinkMtu(ifname: string): Promise<number | undefined> {
  const rt = new LinuxRtNetlink();
  try {
    return (await rt.getLink(ifname))?.mtu;
  } finally {
    await rt.close();
  }
}

/** A running agent process: its logger and a graceful stop (keeps the datapath; leaves the mesh only with --leave-on-exit). */
export interface RunningAgent {
  readonly agent: Agent;
  readonly logger: Logger;
  readonly api: ApiServer;
  stop(): Promise<void>;
}

/** Keys never appear in logs: these paths are redacted wherever they occur. */
const REDACT = ['privateKey', '*.privateKey', 'meshKey', '*.meshKey', 'seed', '*.seed', 'identity', '*.identity', 'token', '*.token', 'keyring', '*.keyring'];

/** The agent's root logger: pino JSON on stdout, secrets redacted. */
export function createLogger(config: Pick<Config, 'logLevel' | 'name'>, destination?: pino.DestinationStream): Logger {
  const opts = { level: config.logLevel, base: { node: config.name }, redact: { paths: REDACT, censor: '[redacted]' } };
  return destination ? pino(opts, destination) : pino(opts);
}

/**
 * Starts the agent. Order: state dirs and keys, underlay, datapath (adopts what exists), API socket
 * (CNI calls get "try again later" until the block is settled), mesh + agent start (claims the block,
 * publishes, first reconcile), then CNI routes, DEL-queue drain and DNS.
 */
export async function runAgent(flagConfig: Config, opts: { logger?: Logger } = {}): Promise<RunningAgent> {
  let config = flagConfig;
  // Set once the agent exists; callbacks wired before that (device lost, metrics) see undefined.
  let agentRef: Agent | undefined;
  const logger = opts.logger ?? createLogger(config);
  const log = logger.child({ component: 'agent' });
  if (!config.meshKeyFile) throw new Error('agent: --mesh-key-file (WEFT_MESH_KEY_FILE) is required: gossip is always encrypted');
  const meshKey = await requireSecretFile(config.meshKeyFile);
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  await mkdir(config.runDir, { recursive: true, mode: 0o755 });
  const wgKey = await loadOrCreatePrivateKey(join(config.stateDir, 'wg.key'));
  const identitySeed = await loadOrCreateSecretFile(join(config.stateDir, 'identity.key'));
  if (wgKey.created) log.info({ publicKey: wgKey.publicKey }, 'created a new WireGuard key');
  if (identitySeed.created) log.info('created a new mesh identity');

  const underlay = await detectUnderlay(config.listenAddr, [config.ifname], rtnetlinkMtu);
  log.info({ addr: underlay.addr, ifname: underlay.ifname, mtu: underlay.mtu }, 'underlay');

  // Kubernetes (in a pod, or with --kubeconfig): wait a bounded time for the node's podCIDR and
  // the other nodes as seeds; without it the agent runs from flags and the mesh alone.
  // The Kubernetes client costs about 90 MB of memory to load, so it is imported only where there
  // is Kubernetes to talk to (the same rule loadKubeConfig applies).
  const wantsKube = config.kubeconfig !== undefined || (process.env.KUBERNETES_SERVICE_HOST ?? '') !== '';
  const kube = wantsKube ? (await import('../k8s/start.ts')).startKubeSource(config, logger) : undefined;
  if (kube) {
    const snap = await kube.waitForSync(10_000);
    const merged = mergeKubeSnapshot(config, snap);
    config = merged.config;
    log.info({ synced: snap.synced, podCIDRsFrom: merged.podCIDRsFrom, podCIDRs: config.podCIDRs, addedSeeds: merged.addedSeeds }, 'kubernetes source');
    for (const why of merged.ignored) log.warn({ why }, 'ignored a value from kubernetes');
  }

  if (config.seeds.some((s) => isIP(s.host) === 0)) {
    const r = await resolveSeeds(config.seeds, systemLookup());
    for (const f of r.failed) log.warn(f, 'seed name does not resolve; skipped');
    config = Object.freeze({ ...config, seeds: Object.freeze(r.seeds) });
  }

  const health = new Health({ clock: Date.now, maxLoopAgeMs: Math.max(3 * config.resyncMs, 60_000) });
  let mesh: MeshHandle | undefined;
  let datapath: Datapath | undefined;
  let dns: Dns | undefined;
  const metrics = createAgentMetrics({
    mesh: () => (mesh ? { snapshot: mesh.snapshot(), stats: mesh.stats() } : undefined),
    datapath: () => datapath?.stats(),
    peers: async () => (agentRef ? agentRef.status() : undefined),
  });
  // The DNS server's own metrics, registered once, reading whichever server is bound now.
  let dnsServer: DnsServer | undefined;
  let dnsRegistered = false;
  const dnsMetrics = (srv: DnsServer): void => {
    dnsServer = srv;
    if (dnsRegistered) return;
    dnsRegistered = true;
    registerDnsMetrics(metrics.registry, { stats: () => dnsServer!.stats() });
  };

  const api = new ApiServer({ logger: logger.child({ component: 'api' }), onRequest: apiRequestObserver(metrics, () => knownRoutes) });
  const knownRoutes = new Set(['/healthz', '/readyz', '/metrics', '/v1/status', '/v1/cni/add', '/v1/cni/del', '/v1/cni/check', '/v1/cni/gc', '/v1/cni/status', '/v1/status/dns', '/v1/status/ipam']);
  mountHealthRoutes(api, health);
  mountMetricsRoute(api, metrics);
  const notYet = (): never => {
    throw new ApiError(503, 11, 'weft agent is starting; try again later');
  };
  for (const p of ['add', 'del', 'check', 'gc']) api.route('POST', `/v1/cni/${p}`, notYet);
  api.route('GET', '/v1/cni/status', notYet);
  api.route('GET', '/v1/status', notYet);

  const cleanups: (() => Promise<void>)[] = [];
  try {
    const dp = await createDatapath(config, logger.child({ component: 'datapath' }), wgKey.privateKey, () => agentRef?.trigger('device-lost'));
    datapath = dp;
    cleanups.push(() => dp.stop());
    await api.listenUnix(config.socketPath, 0o660);
    cleanups.push(() => api.close());
    if (config.metricsAddr) await api.listenTcp(config.metricsAddr.host, config.metricsAddr.port);

    const meshKeys = await MeshKeyStore.open(config.stateDir, meshKey, log);
    mountMeshKeyRoutes(api, meshKeys);
    mesh = await createMeshFromConfig(config, underlay.addr, identitySeed.value, meshKeys.keyring, logger.child({ component: 'mesh' }));
    cleanups.push(() => mesh!.stop());
    const hostNet: HostNetPort = createHostNet(GATEWAY_DEVICE, config, underlay, logger.child({ component: 'cni' }), enableForwarding);
    dns = createDns(config, logger.child({ component: 'dns' }), { onServer: (srv) => dnsMetrics(srv) });
    cleanups.push(() => dns!.close());

    let cni: CniMount | undefined;
    // Relaying (issue 7): offers on the underlay address, asks for relays, forwards when chosen.
    const relay = new RelayService({
      name: config.name, mode: config.relay, ports: config.relayPorts, host: underlay.addr, families: [underlay.family], mesh,
      clock: Date.now, logger: logger.child({ component: 'relay' }), retrigger: () => agentRef?.trigger('relay'),
      ...(mesh.directAcks ? { directAcks: (name: string) => mesh!.directAcks!(name) } : {}), retryMs: config.relayRetryMs,
    });
    cleanups.push(() => relay.stop());
    registerRelayMetrics(metrics.registry, { relay: () => relay.stats(), prober: () => agentRef?.prober?.stats() });
    let kubeCleanup: (() => Promise<void>) | undefined;
    const agent: Agent = new Agent({
      config,
      logger,
      clock: Date.now,
      random: Math.random,
      mesh,
      wgPublicKey: wgKey.publicKey,
      wgKeyCreatedAt: await stat(join(config.stateDir, 'wg.key')).then((st) => st.mtimeMs, () => undefined),
      backendKind: dp.backendKind,
      endpoints: [endpointOf(underlay.addr, config.wgPort)],
      plan: makePlanFn(config, { mtu: underlay.mtu, families: [underlay.family] }),
      datapath: dp,
      blockStore: new FileBlockStore(config.stateDir),
      hostNet,
      dns,
      metrics,
      health,
      readDevice: () => dp.readDevice(),
      prober: { sender: udpProbeSender(), intervalMs: config.probeIntervalMs, relayAfterMs: config.relayAfterMs },
      relay,
      onBlockChanged: async (claim, previous) => {
        if (previous) await cni?.blockChanged(claim.podCIDRs);
      },
    });
    agentRef = agent;
    await agent.start();
    cleanups.unshift(() => agent.stop({ leave: config.leaveOnExit }));
    // Join tokens (issue 7): the join listener on <underlay>:--join-port and the /v1/token, /v1/node routes.
    const tokens = await startTokenService({ name: config.name, mesh, identitySeed: identitySeed.value, meshKey, keyring: meshKeys.keyring, api, logger: logger.child({ component: 'token' }), listenAddr: underlay.addr, joinPort: config.joinPort, clusterCIDRs: config.clusterCIDRs });
    cleanups.unshift(() => tokens.close());
    // In-cluster, tokens are also mirrored into a Secret (src/k8s/token-secret.ts): write-through, resync, read-back.
    const tokenMirror = kube && config.tokenSecret ? (await import('../k8s/token-secret.ts')).startAgentTokenMirror({ kubeconfig: config.kubeconfig, secretName: config.tokenSecret, mesh, self: config.name, meshKeys: () => [meshKeys.keyring.primary(), meshKey], logger: logger.child({ component: 'token-secret' }) }) : undefined;
    if (tokenMirror) {
      tokens.onTokensChanged((e) => tokenMirror.trigger(`token-${e.kind}`));
      (await import('../k8s/token-secret.ts')).registerTokenMirrorMetrics(metrics.registry, tokenMirror);
      cleanups.unshift(() => tokenMirror.stop());
    }
    // Audit trail: rejected records and packets, aggregated per minute (never a line per packet).
    const rejections = startRejectionAudit({ logger: log, intervalMs: 60_000, read: () => readRejections(metrics.rejectedRecords, () => mesh?.stats() as unknown as Record<string, unknown> | undefined) });
    cleanups.unshift(async () => rejections.stop());
    // WireGuard key rotation: on demand (POST /v1/keys/rotate, `weft rotate-key`) and on --key-rotation.
    const rotator = new KeyRotator({ keyPath: join(config.stateDir, 'wg.key'), target: agent, logger: log, everyMs: config.keyRotationMs });
    rotator.start();
    cleanups.unshift(async () => rotator.stop());
    api.route('POST', '/v1/keys/rotate', async () => {
      try {
        return { status: 200, json: await rotator.rotate('api') };
      } catch (err) {
        log.error({ err }, 'key rotation failed');
        throw new ApiError(500, 999, 'key rotation failed', (err as Error).message);
      }
    });
    // Informational Node annotations (the mesh stays the source of truth).
    if (kube && agent.self) kube.setNodeAnnotations({ publicKey: wgKey.publicKey, meshIP: agent.self.meshIP });

    const podMTU = planMTU({ mtu: config.mtu, underlayMTU: underlay.mtu, underlayFamilies: [underlay.family], clusterCIDRs: config.clusterCIDRs });
    cni = await mountCni(api, config, agent, podMTU, logger.child({ component: 'cni' }));
    if (kube) {
      // Pods deleted in Kubernetes without a CNI DEL lose their names (decided by src/k8s/pod-gc.ts),
      // re-evaluated on every Kubernetes snapshot and every resync (the decision has a grace time).
      const ipam = cni.ipam;
      const gc = (): void => {
        const snap = kube.snapshot();
        const removals = podsToRemove(cniPodsFromAllocations(ipam.list()), snap, Date.now());
        agent.setHiddenPods(removals.map((r) => `${r.pod.namespace}/${r.pod.name}`));
      };
      const unsubscribe = kube.subscribe(() => gc());
      // Nodes that appear after startup become mesh seeds (the startup snapshot's are in config.seeds).
      const unfollow = kube.subscribe(followKubeSeeds(config, (seeds) => mesh!.join(seeds), log));
      const timer = setInterval(gc, config.resyncMs);
      timer.unref();
      cleanups.unshift(async () => {
        unsubscribe();
        unfollow();
        clearInterval(timer);
      });
      kubeCleanup = async () => {
        unsubscribe();
        unfollow();
        clearInterval(timer);
      };
    }
    api.route('GET', '/v1/status', async () => ({ status: 200, json: await agent.status() }));
    const ipamView = cni.ipam;
    const dnsView = dns;
    api.route('GET', '/v1/status/ipam', () => ({
      status: 200,
      json: {
        podCIDRs: agent.claim?.podCIDRs ?? [],
        claimedAt: agent.claim?.claimedAt ?? 0,
        gateway: agent.self?.meshIP,
        allocations: ipamView.list().map((a) => ({ ip: a.ip, block: a.block, pod: a.podName, namespace: a.podNamespace, containerId: a.containerId, ifname: a.ifname, allocatedAt: a.allocatedAt })),
      },
    }));
    api.route('GET', '/v1/status/dns', () => {
      const srv = dnsView.server();
      return {
        status: 200,
        json: { zone: config.dnsZone, ttl: config.dnsTtl, listen: srv?.addresses() ?? [], table: srv?.table().stats, counters: dnsView.stats() },
      };
    });
    log.info({ socket: config.socketPath, block: agent.claim?.podCIDRs, meshIP: agent.self?.meshIP }, 'agent running');

    return {
      agent,
      logger,
      api,
      async stop() {
        rejections.stop();
        await rotator.stop();
        await rejections.flush();
        await kubeCleanup?.();
        await tokens.close();
        await tokenMirror?.stop();
        await agent.stop({ leave: config.leaveOnExit });
        await api.close();
        await cni?.close();
        await kube?.stop();
      },
    };
  } catch (err) {
    for (const c of cleanups) await c().catch(() => {});
    await kube?.stop().catch(() => {});
    throw err;
  }
}

/**
 * Removes everything weft created on this node: its routes and WireGuard interface (through the
 * datapath reconciler, which only removes what carries weft's marks), the host ends of the pod veths
 * weft's address store lists (their host routes and neighbour entries go with them), the pod gateway
 * device `weftgw0` and a legacy pod bridge `weftbr0`, the API
 * socket, the pod block claim and the pod address store. The keys stay so that a reinstalled
 * node keeps its mesh identity (members pin it on first join); `purge` removes the whole state
 * directory too.
 */
export async function uninstall(config: Config, opts: { purge?: boolean; logger?: Logger } = {}): Promise<void> {
  const logger = opts.logger ?? createLogger(config);
  const log = logger.child({ component: 'agent' });
  // Uninstalling under a running agent would race its reconciler, which would rebuild everything.
  const live = await new ApiClient({ socketPath: config.socketPath, timeoutMs: 1000 }).get('/healthz').then(
    () => true,
    (err: unknown) => err instanceof ApiClientError,
  );
  if (live) throw new Error(`an agent is running on ${config.socketPath}; stop it before --uninstall`);
  const errors: string[] = [];
  const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
      log.info({ what }, 'removed');
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
      log.error({ err, what }, 'uninstall step failed');
    }
  };
  // The reconciler needs a key to construct; uninstall never writes it, so a throwaway one will do when none is stored.
  const keyPath = join(config.stateDir, 'wg.key');
  const wgKey = existsSync(keyPath) ? await loadOrCreatePrivateKey(keyPath).catch(() => generateKeyPair()) : generateKeyPair();
  await step('datapath', async () => {
    const dp = await createDatapath(config, logger.child({ component: 'datapath' }), wgKey.privateKey, () => {});
    try {
      await dp.uninstall(config.ifname);
    } finally {
      await dp.stop();
    }
  });
  await step('pod veths', async () => {
    if (!existsSync(join(config.stateDir, 'ipam'))) return;
    const ipam = await PodIpam.open({ stateDir: config.stateDir, blocks: [], logger: logger.child({ component: 'ipam' }) });
    const ops = createIprouteNetnsOps();
    for (const name of new Set(ipam.list().map((a) => hostVethName(a.containerId, a.ifname)))) await ops.delPod(name);
  });
  await step('gateway device', async () => {
    const underlay = { addr: '', family: 4 as const, ifname: '', mtu: 1500 };
    await createHostNet(GATEWAY_DEVICE, config, underlay, logger.child({ component: 'cni' }), enableForwarding).removeGateway();
  });
  await step('socket', () => rm(config.socketPath, { force: true }));
  // wireguard-go's pid file and log (the process itself went with the device above).
  await step('runtime files', () => rm(join(config.runDir, 'wireguard-go'), { recursive: true, force: true }));
  if (opts.purge) {
    await step('state', () => rm(config.stateDir, { recursive: true, force: true }));
  } else {
    await step('block', () => new FileBlockStore(config.stateDir).clear());
    await step('pod addresses', () => rm(join(config.stateDir, 'ipam'), { recursive: true, force: true }));
    await step('queued CNI DELs', () => rm(delQueueDir(config.stateDir), { recursive: true, force: true }));
  }
  if (errors.length > 0) throw new Error(`uninstall incomplete: ${errors.join('; ')}`);
}
