/**
 * Adapters from the agent's ports to the modules other folders own: WireGuard backend + rtnetlink
 * + reconciler (datapath), the mesh, the CNI handler, the DNS server, the pod gateway device. Each adapter
 * is a thin translation; when a module's API changes, only this file follows.
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import type { MeshHandle } from '../../mesh/api.ts';
import { Keyring, createMesh, identityFromSeed } from '../../mesh/index.ts';
import { LinuxRtNetlink } from '../datapath/rtnetlink-linux.ts';
import type { ApiServer } from '../api/server.ts';
import type { Config, HostPort } from '../config.ts';
import { DatapathReconciler } from '../datapath/reconciler.ts';
import type { RtNetlink } from '../datapath/rtnetlink.ts';
import { buildTable, type DnsTable } from '../dns/table.ts';
import { DnsServer } from '../dns/server.ts';
import { Forwarder, type ListenAddress } from '../dns/forwarder.ts';
import { createCniHandler, type CniHandler } from '../cni/handler.ts';
import { LEGACY_BRIDGE } from '../cni/devices.ts';
import { createIprouteNetnsOps, type NetnsOps } from '../cni/netns.ts';
import { PodIpam } from '../ipam/pods.ts';
import type { NodeInfo, PodRecord, RemoteNode } from '../model.ts';
import { planMTU } from '../plan/datapath.ts';
import type { WgDevice, WireGuardBackend } from '../wireguard/backend.ts';
import { createWireGuardBackend } from '../wireguard/index.ts';
import type { Agent } from './agent.ts';
import type { DatapathPort, DatapathStats, DnsPort, HostNetPort } from './ports.ts';
import type { Underlay } from './underlay.ts';

/** The datapath port plus what status needs: the backend kind and a device read. */
export interface Datapath extends DatapathPort {
  readonly backendKind: string;
  readDevice(): Promise<WgDevice | null>;
}

/**
 * Opens the WireGuard backend for `config.backend` (`src/wireguard/index.ts`: auto = kernel when
 * the module is there, else wireguard-go). A userspace device whose process dies triggers a
 * reconcile, which starts a new one.
 */
export async function createBackend(config: Config, logger: Logger, onDeviceLost: () => void): Promise<WireGuardBackend> {
  return createWireGuardBackend({
    kind: config.backend,
    // In auto mode a host with the kernel module adopts a wireguard-go already serving this name.
    ifname: config.ifname,
    logger,
    userspace: {
      stateDir: `${config.runDir}/wireguard-go`,
      onDeviceLost: (name, reason) => {
        logger.warn({ ifname: name, reason }, 'wireguard-go exited; reconciling');
        onDeviceLost();
      },
    },
  });
}

/** The real rtnetlink handle (in this process's network namespace). */
export async function createRt(): Promise<RtNetlink> {
  return new LinuxRtNetlink();
}

/** Backend + rtnetlink + reconciler, started (periodic resync on). */
export async function createDatapath(config: Config, logger: Logger, privateKey: string, onDeviceLost: () => void): Promise<Datapath> {
  const wg = await createBackend(config, logger, onDeviceLost);
  let rt: RtNetlink;
  try {
    rt = await createRt();
  } catch (err) {
    await wg.close();
    throw err;
  }
  logger.info({ backend: wg.kind }, 'datapath ready');
  return datapathFrom(wg, rt, config, logger, privateKey);
}

/** The {@link Datapath} over a given backend and rtnetlink (tests pass fakes); the reconciler's resync is started. */
export function datapathFrom(wg: WireGuardBackend, rt: RtNetlink, config: Pick<Config, 'ifname' | 'resyncMs'>, logger: Logger, privateKey: string): Datapath {
  const rec = new DatapathReconciler({ wg, rt, logger, privateKey, resyncMs: config.resyncMs });
  rec.start();
  return {
    backendKind: wg.kind,
    apply: (d) => rec.apply(d),
    stats: (): DatapathStats => rec.stats(),
    async setPrivateKey(key) {
      const r = await rec.setPrivateKey(key);
      if (r && r.ok === false) throw new Error(`datapath: the new key was not applied: ${rec.stats().lastError ?? 'see the datapath log'}`);
    },
    readDevice: () => wg.getDevice(config.ifname),
    uninstall: (ifname) => rec.uninstall(ifname),
    async stop() {
      await rec.stop();
      await wg.close();
      await rt.close();
    },
  };
}

/**
 * The mesh member for this node: UDP+TCP on `addr:--mesh-port`, signed with the identity seed,
 * sealed with the mesh key. Not started (the agent calls `start(seeds)`).
 */
export async function createMeshFromConfig(config: Config, addr: string, identitySeed: Uint8Array, meshKey: Uint8Array | Keyring, logger: Logger): Promise<MeshHandle> {
  return createMesh({
    name: config.name,
    identity: identityFromSeed(identitySeed),
    // A Keyring is shared live (mesh-key rotation changes it under the running mesh).
    keyring: meshKey instanceof Keyring ? meshKey : new Keyring(meshKey),
    bindAddr: addr,
    bindPort: config.meshPort,
    profile: config.meshProfile,
    logger,
  });
}

/** One address on one interface of the node. */
export interface NodeAddress {
  readonly ifname: string;
  readonly addr: string;
}

/**
 * The `--dns-listen` addresses weft must add to its gateway device so the DNS server can bind them:
 * every literal IP (not a wildcard) that no interface other than weft's own (`owned`: the gateway
 * device, and the legacy bridge an upgraded node may still have) carries, as a /32 or /128. The
 * CoreDNS stub forwards to a link-local address (169.254.20.11) that exists nowhere else; an address
 * already on the node (loopback, the underlay) is left alone. Pure; ordered as given, no duplicates.
 */
export function missingDnsAddresses(dnsListen: readonly HostPort[], nodeAddrs: readonly NodeAddress[], owned: string | readonly string[]): string[] {
  const ours = new Set(typeof owned === 'string' ? [owned] : owned);
  const elsewhere = new Set(nodeAddrs.filter((a) => !ours.has(a.ifname)).map((a) => a.addr.toLowerCase()));
  const out: string[] = [];
  for (const { host } of dnsListen) {
    const fam = isIP(host);
    if (fam === 0 || host === '0.0.0.0' || host === '::' || elsewhere.has(host.toLowerCase())) continue;
    const cidr = `${host.toLowerCase()}/${fam === 4 ? 32 : 128}`;
    if (!out.includes(cidr)) out.push(cidr);
  }
  return out;
}

/** Every address on every interface of this network namespace (`ip -j addr show`). */
export async function listNodeAddresses(): Promise<NodeAddress[]> {
  const { stdout } = await promisify(execFile)('ip', ['-j', 'addr', 'show'], { timeout: 10_000, maxBuffer: 16 * 1024 * 1024 });
  const links = JSON.parse(stdout) as { ifname?: string; addr_info?: { local?: string }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).filter((a) => typeof a.local === 'string').map((a) => ({ ifname: l.ifname ?? '', addr: a.local! })));
}

/**
 * Wraps the gateway operations so that every `ensureGateway` (the agent's drift repair and the CNI
 * handler's) also keeps the `--dns-listen` addresses the node lacks on the gateway device: weft
 * owns them, they go with the device on `--uninstall`, and a repair never strips them (the ops
 * remove unlisted addresses of the same family).
 */
export function withDnsAddresses(ops: NetnsOps, dnsListen: readonly HostPort[], logger: Logger, list: () => Promise<NodeAddress[]> = listNodeAddresses): NetnsOps {
  if (dnsListen.length === 0) return ops;
  return {
    async ensureGateway(dev, gatewayCidrs, mtu) {
      const extra = missingDnsAddresses(dnsListen, await list(), [dev, LEGACY_BRIDGE]);
      if (extra.length > 0) logger.debug({ dev, addresses: extra }, 'dns listen addresses kept on the gateway device');
      await ops.ensureGateway(dev, [...gatewayCidrs, ...extra.filter((c) => !gatewayCidrs.includes(c))], mtu);
    },
    removeDevice: (dev) => ops.removeDevice(dev),
    removeIdleBridge: (name) => ops.removeIdleBridge(name),
    addPod: (spec) => ops.addPod(spec),
    delPod: (hostIfname) => ops.delPod(hostIfname),
    checkPod: (spec) => ops.checkPod(spec),
  };
}

/**
 * The node's pod gateway device (CNI's iproute2 ops, plus the `--dns-listen` addresses the node
 * lacks) and forwarding. `ensureGateway` also retires the legacy pod bridge of an upgraded node once
 * its last pod is gone (until then that bridge's block route keeps its pods reachable); a failure
 * there is logged, never thrown, since the gateway itself is fine.
 */
export function createHostNet(gatewayDevice: string, config: Config, underlay: Underlay, logger: Logger, forwarding: (f: readonly (4 | 6)[]) => Promise<void>, netns: NetnsOps = createIprouteNetnsOps()): HostNetPort {
  const ops = withDnsAddresses(netns, config.dnsListen, logger);
  const mtu = planMTU({ mtu: config.mtu, underlayMTU: underlay.mtu, underlayFamilies: [underlay.family], clusterCIDRs: config.clusterCIDRs });
  let legacyGone = false;
  let legacyLogged = false;
  return {
    async ensureGateway(gatewayCIDRs) {
      await ops.ensureGateway(gatewayDevice, gatewayCIDRs, mtu);
      logger.info({ dev: gatewayDevice, gateways: gatewayCIDRs, mtu }, 'gateway device ready');
      if (legacyGone) return;
      try {
        legacyGone = await ops.removeIdleBridge(LEGACY_BRIDGE);
        if (legacyGone) logger.info({ bridge: LEGACY_BRIDGE }, 'legacy pod bridge gone');
        else if (!legacyLogged) logger.info({ bridge: LEGACY_BRIDGE }, 'legacy pod bridge still has pods; removed once they are gone');
        legacyLogged = true;
      } catch (err) {
        logger.warn({ err, bridge: LEGACY_BRIDGE }, 'cannot check the legacy pod bridge');
      }
    },
    enableForwarding: forwarding,
    async removeGateway() {
      await ops.removeDevice(gatewayDevice);
      await ops.removeDevice(LEGACY_BRIDGE);
    },
  };
}

/**
 * Sources allowed to have out-of-zone names forwarded: the cluster (pods, and nodes through their
 * gateway addresses), loopback, and the `--dns-listen` addresses themselves (a host-network process
 * querying 169.254.20.11 sends from it; only this node can). Everyone else gets REFUSED for them,
 * so the node's DNS is never an open resolver; in-zone names are answered to any source.
 */
export function dnsForwardFrom(config: Pick<Config, 'clusterCIDRs' | 'dnsListen'>): string[] {
  const own = config.dnsListen.filter((h) => isIP(h.host) !== 0 && h.host !== '0.0.0.0' && h.host !== '::').map((h) => `${h.host}/${isIP(h.host) === 4 ? 32 : 128}`);
  return [...new Set([...config.clusterCIDRs, '127.0.0.0/8', '::1/128', ...own])];
}

/** The DNS port plus the server's flat counters. */
export interface Dns extends DnsPort {
  stats(): Record<string, number>;
  /** The server, once bound (for metrics registration and tests). */
  server(): DnsServer | undefined;
}

/**
 * The DNS port: rebuilds the table on every plan and serves it on `<gateway>:53` plus
 * `--dns-listen`. The server is (re)bound when the gateway changes; a failed bind is logged,
 * counted and retried at the next plan. `update` never blocks.
 */
export function createDns(config: Config, logger: Logger, opts: { onServer?: (s: DnsServer) => void; port?: number } = {}): Dns {
  let table: DnsTable | undefined;
  let server: DnsServer | undefined;
  let forwarder: Forwarder | undefined;
  let boundFor: string | undefined;
  let starting: Promise<void> | undefined;
  let failures = 0;
  let closed = false;

  const start = async (gateway: string): Promise<void> => {
    const listen: ListenAddress[] = [{ address: gateway, port: opts.port ?? 53 }, ...config.dnsListen.map((h) => ({ address: h.host, port: h.port }))];
    await stop();
    const fwd = new Forwarder({ selfAddresses: listen, logger });
    await fwd.start();
    const srv = new DnsServer({ listen, table: table!, forwarder: fwd, forwardFrom: dnsForwardFrom(config), ttl: config.dnsTtl, logger });
    try {
      await srv.start();
    } catch (err) {
      await fwd.close?.();
      throw err;
    }
    if (closed) {
      await srv.close();
      await fwd.close?.();
      return;
    }
    server = srv;
    forwarder = fwd;
    boundFor = gateway;
    server.setTable(table!);
    opts.onServer?.(srv);
    logger.info({ listen: srv.addresses(), zone: config.dnsZone }, 'dns serving');
  };
  const stop = async (): Promise<void> => {
    const [s, f] = [server, forwarder];
    server = undefined;
    forwarder = undefined;
    boundFor = undefined;
    await s?.close();
    await f?.close?.();
  };

  return {
    update(self: NodeInfo, localPods: readonly PodRecord[], remotes: readonly RemoteNode[]) {
      table = buildTable({ zone: config.dnsZone, self: { info: self, pods: localPods }, remotes, clusterCIDRs: config.clusterCIDRs });
      if (server && boundFor === self.meshIP) {
        server.setTable(table);
        return;
      }
      if (starting || closed) return;
      starting = start(self.meshIP)
        .catch((err: unknown) => {
          failures++;
          logger.error({ err, failures }, 'dns server could not bind; retrying at the next plan');
        })
        .finally(() => {
          starting = undefined;
        });
    },
    stats: () => ({ ...(server?.counters() ?? {}), bindFailures: failures }),
    server: () => server,
    async close() {
      closed = true;
      await starting;
      await stop();
    },
  };
}

/** What the CNI mount gives back to the wiring. */
export interface CniMount {
  readonly handler: CniHandler;
  /** The pod address store (its allocations name the pods CNI knows). */
  readonly ipam: PodIpam;
  /** The pod block changed (lost to an older claim): re-point IPAM; pods left outside must restart. */
  blockChanged(podCIDRs: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens the pod address store on the agent's block, creates the CNI handler (the agent republishes
 * pods on every change), publishes the pods already allocated, drains the DEL queue the plugin
 * filled while the agent was down, and mounts the CNI routes on the API (unix socket only).
 */
export async function mountCni(api: ApiServer, config: Config, agent: Agent, mtu: number, logger: Logger, netns: NetnsOps = createIprouteNetnsOps()): Promise<CniMount> {
  const blocks = agent.claim?.podCIDRs ?? [];
  const ipam = await PodIpam.open({ stateDir: config.stateDir, blocks, logger });
  const handler = createCniHandler({
    ipam,
    netns: withDnsAddresses(netns, config.dnsListen, logger),
    logger,
    mtu,
    dnsZone: config.dnsZone,
    stateDir: config.stateDir,
    onPodsChanged: (pods) => agent.setLocalPods(pods),
  });
  agent.setLocalPods(ipam.pods());
  // DELs the plugin queued while the agent was down: released now, and again on every resync in
  // case the plugin queued one during a short API outage.
  let draining = false;
  const drain = async (): Promise<void> => {
    if (draining) return;
    draining = true;
    try {
      const d = await handler.drainDelQueue();
      if (d.drained + d.failed + d.dropped > 0) logger.info(d, 'drained queued CNI DELs');
    } catch (err) {
      logger.error({ err }, 'cannot drain the CNI DEL queue; retrying at the next resync');
    } finally {
      draining = false;
    }
  };
  await drain();
  const timer = setInterval(() => void drain(), config.resyncMs);
  timer.unref();
  for (const r of handler.routes()) api.route(r.method, r.path, r.handler);
  return {
    handler,
    ipam,
    async blockChanged(podCIDRs) {
      const outside = ipam.setBlocks(podCIDRs);
      if (outside.length > 0) {
        logger.warn({ pods: outside.slice(0, 10).map((a) => `${a.podNamespace ?? '?'}/${a.podName ?? a.containerId}`), count: outside.length }, 'pods hold addresses outside the new block and must be restarted');
      }
      await handler.ensureGateway();
    },
    async close() {
      clearInterval(timer);
    },
  };
}
