/**
 * The agent side of CNI: the plugin forwards each runtime call here over the local API, and this
 * handler allocates addresses (src/ipam/pods.ts), wires the pod with {@link NetnsOps}, and answers
 * with a spec 1.1.0 result (the plugin converts it down for older versions). It tells the agent
 * when the set of local pods changes so DNS names are republished.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ApiError, type ApiHandler, type ApiRequest } from '../api/server.ts';
import type { PodRecord } from '../model.ts';
import { gatewayOf } from '../ipam/blocks.ts';
import { IpamExhaustedError, IpamStateError, type PodAllocation, type PodIpam } from '../ipam/pods.ts';
import { drainDelQueue, type QueuedDel } from './del-queue.ts';
import { GATEWAY_DEVICE } from './devices.ts';
import type { NetnsOps } from './netns.ts';
import { CNI_LIMITS, CniCode, CniError, CURRENT_VERSION, hostVethName, type CniResult, type ForwardedRequest } from './spec.ts';

/** Options of {@link createCniHandler}. */
export interface CniHandlerOptions {
  readonly ipam: PodIpam;
  readonly netns: NetnsOps;
  readonly logger: Logger;
  /** Called after every change of the local pod set (ADD, DEL, GC, drain); must not block or throw. */
  readonly onPodsChanged?: (pods: PodRecord[]) => void;
  /** Pod interface MTU (the agent passes the overlay MTU). Default 1420. */
  readonly mtu?: number;
  /** DNS zone for the result's search domains. Default `weft.local`. */
  readonly dnsZone?: string;
  /** State directory holding the DEL queue (see {@link drainDelQueue}). */
  readonly stateDir: string;
  /** Node-side device carrying the gateway addresses. Default {@link GATEWAY_DEVICE}. */
  readonly gatewayDevice?: string;
  /** Random bytes (injected for tests); used for locally administered MAC addresses. */
  readonly randomBytes?: (n: number) => Uint8Array;
}

/** Counters for status and metrics. */
export interface CniStats {
  adds: number;
  dels: number;
  checks: number;
  gcs: number;
  errors: number;
}

/** A mountable route: method, path and the API server handler. */
export interface CniRoute {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly handler: ApiHandler;
}

/** The handler: one method per CNI command, plus the routes for the API server. */
export interface CniHandler {
  add(req: ForwardedRequest): Promise<CniResult>;
  del(req: ForwardedRequest): Promise<void>;
  check(req: ForwardedRequest): Promise<void>;
  gc(req: ForwardedRequest): Promise<{ released: number }>;
  /** Resolves when ADD can be served; throws {@link CniError} code 50 otherwise. */
  status(): Promise<void>;
  /** Releases DELs the plugin queued while the agent was down. Call at start (before serving) and on resync. */
  drainDelQueue(): Promise<{ drained: number; failed: number; dropped: number }>;
  /** Creates/adopts the gateway device with the gateway address of every current block. Idempotent. */
  ensureGateway(): Promise<void>;
  stats(): Readonly<CniStats>;
  /** `POST /v1/cni/{add,del,check,gc}` and `GET /v1/cni/status`, to mount with `ApiServer.route` (unix socket only). */
  routes(): CniRoute[];
}

/** Validates a forwarded request body; throws {@link CniError} with code 4 (env) or 7 (config). */
export function parseForwarded(body: unknown, command: ForwardedRequest['command']): ForwardedRequest {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new CniError(CniCode.decoding, 'cni: request body must be a JSON object');
  const b = body as Record<string, unknown>;
  const str = (k: string, max: number, required: boolean): string => {
    const v = b[k];
    if (v === undefined || v === '') {
      if (required) throw new CniError(CniCode.invalidEnv, `cni: ${k} is required for ${command}`);
      return '';
    }
    if (typeof v !== 'string' || v.length > max || /[\u0000-\u001f]/.test(v)) throw new CniError(CniCode.invalidEnv, `cni: ${k} must be a string of at most ${max} printable characters`);
    return v;
  };
  const needsTarget = command === 'ADD' || command === 'DEL' || command === 'CHECK';
  const containerId = str('containerId', CNI_LIMITS.containerId, needsTarget);
  const ifname = str('ifname', CNI_LIMITS.ifname, needsTarget);
  const netns = str('netns', CNI_LIMITS.netns, command === 'ADD' || command === 'CHECK');
  if (ifname && !/^[^\s/:]{1,15}$/.test(ifname)) throw new CniError(CniCode.invalidEnv, 'cni: ifname must be 1..15 characters without whitespace, "/" or ":"');
  const args: Record<string, string> = {};
  if (b.args !== undefined) {
    if (!b.args || typeof b.args !== 'object' || Array.isArray(b.args)) throw new CniError(CniCode.invalidEnv, 'cni: args must be an object');
    const entries = Object.entries(b.args as Record<string, unknown>);
    if (entries.length > CNI_LIMITS.argPairs) throw new CniError(CniCode.invalidEnv, 'cni: too many args');
    for (const [k, v] of entries) if (typeof v === 'string' && v.length <= 253) args[k] = v;
  }
  const config = b.config;
  if (!config || typeof config !== 'object' || Array.isArray(config)) throw new CniError(CniCode.invalidConfig, 'cni: config must be an object');
  return { command, containerId, ifname, netns, args, config: config as Record<string, unknown>, ...(b.prevResult !== undefined ? { prevResult: b.prevResult } : {}) };
}

function mac(rand: (n: number) => Uint8Array): string {
  const b = Array.from(rand(6));
  b[0] = (b[0]! & 0xfe) | 0x02; // unicast, locally administered
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Maps a CNI error code to the HTTP status of the local API. */
export function httpStatusOf(code: number): number {
  if (code === CniCode.tryAgainLater || code === CniCode.pluginNotAvailable || code === CniCode.limitedConnectivity) return 503;
  if (code === CniCode.unknownContainer) return 404;
  if (code === CniCode.invalidEnv || code === CniCode.decoding || code === CniCode.invalidConfig || code === CniCode.unsupportedField || code === CniCode.incompatibleVersion) return 400;
  return 500;
}

/** Creates the handler. It keeps no state of its own besides counters; the allocator holds the truth. */
export function createCniHandler(opts: CniHandlerOptions): CniHandler {
  const log = opts.logger;
  const gatewayDevice = opts.gatewayDevice ?? GATEWAY_DEVICE;
  const mtu = opts.mtu ?? 1420;
  const zone = (opts.dnsZone ?? 'weft.local').replace(/\.$/, '');
  const rand = opts.randomBytes ?? ((n: number) => randomBytes(n));
  const stats: CniStats = { adds: 0, dels: 0, checks: 0, gcs: 0, errors: 0 };
  // Serializes commands per attachment (a runtime may race ADD and DEL of one container).
  const locks = new Map<string, Promise<unknown>>();
  let gatewayFor: string | undefined; // gateway set the gateway device was last ensured for

  const locked = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const prev = locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    locks.set(key, tail);
    void tail.then(() => {
      if (locks.get(key) === tail) locks.delete(key);
    });
    return run;
  };

  const changed = () => {
    try {
      opts.onPodsChanged?.(opts.ipam.pods());
    } catch (err) {
      log.error({ err }, 'onPodsChanged threw');
    }
  };

  const gateways = () => opts.ipam.blocks.map((b) => gatewayOf(b));

  const ensureGateway = async (force = false) => {
    const gw = gateways().map((g) => g.cidr);
    const key = gw.join(',');
    if (!force && gatewayFor === key) return;
    await opts.netns.ensureGateway(gatewayDevice, gw, mtu);
    gatewayFor = key;
  };

  const spec = (req: ForwardedRequest, allocs: readonly PodAllocation[], hostMac: string, podMac: string) => ({
    netns: req.netns,
    ifname: req.ifname,
    hostIfname: hostVethName(req.containerId, req.ifname),
    // Routed veth: the pod holds its address alone; everything goes via the gateway.
    addresses: allocs.map((a) => `${a.ip}/${a.ip.includes(':') ? 128 : 32}`),
    gateways: allocs.map((a) => gatewayOf(a.block).ip),
    mtu,
    hostMac,
    podMac,
  });

  const podOf = (req: ForwardedRequest) => ({ podName: req.args.K8S_POD_NAME, podNamespace: req.args.K8S_POD_NAMESPACE });

  const add = (req: ForwardedRequest): Promise<CniResult> =>
    locked(`${req.containerId}\u0000${req.ifname}`, async () => {
      const t0 = performance.now();
      if (opts.ipam.blocks.length === 0) throw new CniError(CniCode.tryAgainLater, 'cni: this node has no pod block yet; retry');
      const key = { containerId: req.containerId, ifname: req.ifname };
      const before = opts.ipam.get(key);
      if (before.length > 0) {
        // A repeated ADD (runtime retry): rebuild the link from scratch, keep the addresses.
        await opts.netns.delPod(hostVethName(req.containerId, req.ifname));
      }
      let allocs: PodAllocation[];
      try {
        allocs = await opts.ipam.allocate({ ...key, ...podOf(req) });
      } catch (err) {
        if (err instanceof IpamExhaustedError) throw new CniError(CniCode.generic, 'cni: no pod addresses left on this node', err.message, { cause: err });
        if (err instanceof IpamStateError) throw new CniError(CniCode.invalidEnv, err.message, undefined, { cause: err });
        throw err;
      }
      const s = spec(req, allocs, mac(rand), mac(rand));
      try {
        await ensureGateway();
        try {
          await opts.netns.addPod(s);
        } catch (err) {
          // The gateway device may have been removed behind our back, or a stale host veth of this
          // attachment survived an agent crash: clear both causes once and retry.
          log.warn({ err, containerId: req.containerId }, 'pod link setup failed; re-ensuring the gateway device and retrying once');
          await opts.netns.delPod(s.hostIfname);
          await ensureGateway(true);
          await opts.netns.addPod(s);
        }
      } catch (err) {
        if (before.length === 0) await opts.ipam.release(key).catch((e: unknown) => log.error({ err: e }, 'release after failed ADD failed'));
        throw new CniError(CniCode.generic, `cni: cannot set up ${req.ifname} in ${req.netns}`, (err as Error).message, { cause: err });
      }
      changed();
      stats.adds++;
      const ns = req.args.K8S_POD_NAMESPACE;
      const gw4 = s.gateways.filter((g) => !g.includes(':'));
      log.info({ containerId: req.containerId, ifname: req.ifname, pod: podOf(req), ips: allocs.map((a) => a.ip), ms: Math.round(performance.now() - t0) }, 'cni add');
      return {
        cniVersion: CURRENT_VERSION,
        interfaces: [
          { name: s.hostIfname, mac: s.hostMac, mtu },
          { name: req.ifname, mac: s.podMac, mtu, sandbox: req.netns },
        ],
        ips: s.addresses.map((address, i) => ({ address, gateway: s.gateways[i]!, interface: 1 })),
        routes: s.gateways.map((gw) => ({ dst: gw.includes(':') ? '::/0' : '0.0.0.0/0', gw })),
        dns: {
          nameservers: gw4.length > 0 ? gw4 : s.gateways,
          search: ns ? [`${ns}.pod.${zone}`, `pod.${zone}`] : [`pod.${zone}`],
        },
      };
    });

  const releaseOne = async (containerId: string, ifname: string) => {
    await opts.netns.delPod(hostVethName(containerId, ifname));
    const released = await opts.ipam.release({ containerId, ifname });
    if (released.length > 0) changed();
    return released;
  };

  const del = (req: ForwardedRequest): Promise<void> =>
    locked(`${req.containerId}\u0000${req.ifname}`, async () => {
      try {
        const released = await releaseOne(req.containerId, req.ifname);
        stats.dels++;
        log.info({ containerId: req.containerId, ifname: req.ifname, released: released.map((a) => a.ip) }, 'cni del');
      } catch (err) {
        throw new CniError(CniCode.generic, `cni: cannot remove ${req.ifname} of ${req.containerId}`, (err as Error).message, { cause: err });
      }
    });

  const check = (req: ForwardedRequest): Promise<void> =>
    locked(`${req.containerId}\u0000${req.ifname}`, async () => {
      const allocs = opts.ipam.get({ containerId: req.containerId, ifname: req.ifname });
      if (allocs.length === 0) throw new CniError(CniCode.unknownContainer, `cni: no attachment ${req.ifname} for container ${req.containerId}`);
      const s = spec(req, allocs, '', '');
      const problems = await opts.netns.checkPod(s);
      const prev = req.prevResult as { ips?: { address?: unknown }[] } | undefined;
      if (prev && Array.isArray(prev.ips)) {
        const listed = new Set(prev.ips.map((i) => i.address));
        for (const a of s.addresses) if (!listed.has(a)) problems.push(`prevResult does not list ${a}`);
      }
      stats.checks++;
      if (problems.length > 0) throw new CniError(CniCode.generic, `cni: check failed for ${req.ifname} of ${req.containerId}`, problems.join('; '));
    });

  const gc = async (req: ForwardedRequest): Promise<{ released: number }> => {
    const raw = req.config['cni.dev/valid-attachments'];
    if (!Array.isArray(raw)) throw new CniError(CniCode.invalidConfig, 'cni: GC needs cni.dev/valid-attachments (an array)');
    if (raw.length > CNI_LIMITS.attachments) throw new CniError(CniCode.invalidConfig, `cni: more than ${CNI_LIMITS.attachments} valid attachments`);
    const valid = raw
      .filter((a): a is { containerID: string; ifname: string } => !!a && typeof a === 'object' && typeof a.containerID === 'string' && typeof a.ifname === 'string')
      .map((a) => ({ containerId: a.containerID, ifname: a.ifname }));
    const gone = await opts.ipam.gc(valid);
    for (const a of gone) {
      await opts.netns.delPod(hostVethName(a.containerId, a.ifname)).catch((err: unknown) => log.warn({ err, containerId: a.containerId }, 'gc: cannot delete host veth'));
    }
    if (gone.length > 0) changed();
    stats.gcs++;
    log.info({ released: gone.length, valid: valid.length }, 'cni gc');
    return { released: gone.length };
  };

  const status = async () => {
    if (opts.ipam.blocks.length === 0) throw new CniError(CniCode.pluginNotAvailable, 'cni: the agent has no pod block yet');
  };

  const wrap =
    (fn: (req: ApiRequest) => Promise<unknown>): ApiHandler =>
    async (req) => {
      try {
        return { status: 200, json: (await fn(req)) ?? {} };
      } catch (err) {
        stats.errors++;
        if (err instanceof CniError) throw new ApiError(httpStatusOf(err.code), err.code, err.message, err.details, { cause: err });
        log.error({ err }, 'cni handler failed');
        throw new ApiError(500, CniCode.generic, 'cni: internal error', err instanceof Error ? err.message : String(err), { cause: err });
      }
    };

  return {
    add,
    del,
    check,
    gc,
    status,
    ensureGateway: () => ensureGateway(true),
    stats: () => ({ ...stats }),
    drainDelQueue: () =>
      drainDelQueue({
        stateDir: opts.stateDir,
        release: async (e: QueuedDel) => {
          await locked(`${e.containerId}\u0000${e.ifname}`, () => releaseOne(e.containerId, e.ifname));
        },
        onError: (file, err) => log.warn({ file, err }, 'cni: queued DEL not processed'),
      }),
    routes: () => [
      { method: 'POST', path: '/v1/cni/add', handler: wrap((r) => add(parseForwarded(r.body, 'ADD'))) },
      { method: 'POST', path: '/v1/cni/del', handler: wrap((r) => del(parseForwarded(r.body, 'DEL'))) },
      { method: 'POST', path: '/v1/cni/check', handler: wrap((r) => check(parseForwarded(r.body, 'CHECK'))) },
      { method: 'POST', path: '/v1/cni/gc', handler: wrap((r) => gc(parseForwarded(r.body, 'GC'))) },
      { method: 'GET', path: '/v1/cni/status', handler: wrap(async () => (await status(), { ready: true, blocks: opts.ipam.blocks })) },
    ],
  };
}
