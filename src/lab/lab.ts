/**
 * The lab: N simulated nodes on one underlay bridge, each a network namespace plus a mount
 * namespace running a real `weft agent`, and M pods per node, each a network namespace wired by the
 * real CNI plugin called exactly as a container runtime calls it. Built on {@link LabHost}, which
 * records every object so `down` removes exactly what the lab created.
 *
 * Topology of lab `P` (all inside namespaces the lab creates; no host interface is touched):
 *
 *   netns P-ul: bridge br0  <-veth->  netns P-n<i>: eth0 198.18.x.(10+i)/24  (agent, weft0, weftgw0)
 *                                          routed veth <-> netns P-n<i>-p<j>: eth0 (from the CNI plugin)
 */
import { randomBytes, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../api/client.ts';
import { DEFAULT_RELAY_PORTS } from '../config.ts';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../agent/node-flags.ts';
import type { AgentStatus } from '../agent/agent.ts';
import { checkRequirements, LabHost, LabStateError, type NodeHandle, type NsTarget, type Runner, type CommandResult } from './host.ts';
import { classifyCapture, isWireGuardMessage, parsePcap, type CaptureSummary } from './pcap.ts';
import { argvPort, cloud2Netns, CLOUD2, LAB_JOIN_PORT, upCloud2 } from './clouds.ts';

/** The repository root (two levels above this file). */
export const REPO_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Ports and ranges every lab uses (inside its own namespaces, so labs never collide). */
export const LAB_DEFAULTS = Object.freeze({ meshPort: 7946, wgPort: 51820, clusterCIDR: '10.244.0.0/16', podNamespace: 'default', cniIfname: 'eth0' });

/** A failure of a lab operation (agent did not become ready, CNI ADD failed...), with context. */
export class LabError extends Error {
  override name = 'LabError';
}

/** A node as the lab reports it. */
export interface LabNode {
  readonly name: string;
  readonly netns: string;
  readonly index: number;
  readonly underlayIP: string;
  /** Empty until the agent has a block. */
  readonly podCIDR: string;
  readonly meshIP: string;
  /** The agent's argv (without the nsenter wrapper), so it can be restarted identically. */
  readonly agentArgv: readonly string[];
  /** 2 for a node behind the NAT of `--clouds 2` (src/lab/clouds.ts); absent means cloud 1. */
  readonly cloud?: 1 | 2;
}

/** A pod as the lab reports it. */
export interface LabPod {
  /** Network namespace name, `<prefix>-n<i>-p<j>`. */
  readonly netns: string;
  readonly node: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly ip: string;
  readonly containerId: string;
}

/** What the lab keeps in its state file's metadata. */
export interface LabMeta {
  readonly version: 1;
  readonly subnet: string;
  readonly backend: 'auto' | 'kernel' | 'userspace';
  readonly clusterCIDR: string;
  readonly meshPort: number;
  readonly wgPort: number;
  readonly cniBinDir: string;
  readonly fixedPodCIDRs: boolean;
  /** Agents run with `--kubeconfig` this file and get blocks and seeds from Kubernetes (no `--pod-cidr`, no `--seeds`). */
  readonly kubeconfig?: string;
  /** Extra arguments every agent gets (e.g. `--dns-listen`). */
  readonly agentArgs?: readonly string[];
  /** 2 once the NATed second cloud exists (src/lab/clouds.ts). */
  readonly clouds?: 1 | 2;
  /** Highest node index ever used: a node added later gets a new index, name and block. */
  readonly lastIndex: number;
  readonly nodes: LabNode[];
  readonly pods: LabPod[];
}

/** Options of {@link Lab}. */
export interface LabOptions {
  readonly prefix: string;
  readonly root?: string;
  readonly runner?: Runner;
  /** Node 24 binary used for agents, the CNI launcher and probes; default: the running one. */
  readonly nodeBin?: string;
  readonly repoDir?: string;
  /** The agents' `--log-level`; default info. */
  readonly agentLogLevel?: string;
  /** The agents' `--resync`; default 10s. */
  readonly resync?: string;
  /** Node.js flags before the agent's script; default {@link AGENT_NODE_FLAGS} (what the image ships). */
  readonly agentNodeFlags?: readonly string[];
  /** The weft entry script agents run; default src/main.ts of `repoDir` (a built dist/weft.mjs measures what the image ships). */
  readonly agentScript?: string;
  readonly warn?: (msg: string) => void;
  /** Progress lines (to stderr in the CLI). */
  readonly progress?: (msg: string) => void;
}

/** Options of {@link Lab.up}. */
export interface UpOptions {
  readonly nodes: number;
  readonly podsPerNode: number;
  readonly backend?: 'auto' | 'kernel' | 'userspace';
  /** Give node i the fixed block 10.244.i.0/24 (default), or let the agents claim blocks through the mesh. */
  readonly fixedPodCIDRs?: boolean;
  /** How long to wait for each agent to become ready; default 60 s. */
  readonly readyTimeoutMs?: number;
  /**
   * Agents take their pod blocks and seeds from the Kubernetes API server this kubeconfig names:
   * `--kubeconfig <path>` instead of `--pod-cidr` and `--seeds` (implies `fixedPodCIDRs: false`).
   * The file may be written by `beforeAgents`; it must be readable from the node namespaces.
   */
  readonly kubeconfig?: string;
  /** Extra arguments for every agent, e.g. `['--dns-listen', '169.254.20.11:53']`. */
  readonly agentArgs?: readonly string[];
  /**
   * Called once the underlay and the node namespaces exist, before any agent starts (e.g. to
   * connect an API server to the underlay bridge and create the Node objects).
   */
  readonly beforeAgents?: (lab: Lab) => Promise<void>;
  /**
   * 2: also build a second cloud behind a masquerading NAT and join `cloud2Nodes` nodes there by
   * token (src/lab/clouds.ts). Every agent then runs the WAN mesh profile.
   */
  readonly clouds?: 1 | 2;
  /** Nodes in cloud 2 with `clouds: 2`; default 1. `nodes` counts cloud 1 only. */
  readonly cloud2Nodes?: number;
}

/** The lab's view for `status`. */
export interface LabStatus {
  readonly prefix: string;
  readonly subnet: string;
  readonly nodes: Array<LabNode & { agentPid: number | undefined; ready: boolean; peers: number; handshakes: number; error?: string }>;
  readonly pods: LabPod[];
}

/** A distinct /24 inside 198.18.0.0/15 per prefix, so several labs have distinguishable underlays. */
export function underlaySubnet(prefix: string): string {
  const h = createHash('sha256').update(prefix).digest();
  const n = ((h[0]! << 8) | h[1]!) % 512;
  return `198.${18 + (n >> 8)}.${n & 255}.0/24`;
}

/** The underlay address of node `index` (1-based) in `subnet`. */
export function underlayIP(subnet: string, index: number): string {
  if (!Number.isInteger(index) || index < 1 || index > 200) throw new LabError(`lab: node index ${index} is outside 1-200`);
  const base = subnet.split('/')[0]!.split('.');
  return `${base[0]}.${base[1]}.${base[2]}.${10 + index}`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` until it returns a value other than undefined, or throws the last error after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new LabError(`lab: timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`, { cause: last });
    }
    await sleep(intervalMs);
  }
}

/** An underlay capture's classification, plus the WireGuard datagrams seen on relay ports (traffic that went through a relay). */
export type UnderlayCapture = CaptureSummary & { readonly relayed: number };

/** The agent's `--relay-ports` range from its argv, or the agent's default ({@link DEFAULT_RELAY_PORTS}). */
export function relayPortRange(argv: readonly string[]): readonly [number, number] {
  const i = argv.indexOf('--relay-ports');
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(i >= 0 ? (argv[i + 1] ?? '') : DEFAULT_RELAY_PORTS);
  return m ? [Number(m[1]), Number(m[2])] : relayPortRange([]);
}

/** One lab, by prefix. Create with `new Lab(...)`, then `up()` a new one or `open()` a running one. */
export class Lab {
  readonly host: LabHost;
  readonly prefix: string;
  readonly nodeBin: string;
  readonly repoDir: string;
  readonly #opts: LabOptions;
  readonly #progress: (msg: string) => void;

  constructor(opts: LabOptions) {
    this.#opts = opts;
    this.host = new LabHost({ prefix: opts.prefix, root: opts.root, runner: opts.runner, warn: opts.warn });
    this.prefix = this.host.prefix;
    this.nodeBin = opts.nodeBin ?? process.execPath;
    this.repoDir = opts.repoDir ?? REPO_DIR;
    this.#progress = opts.progress ?? (() => {});
  }

  /** The underlay namespace name. */
  get underlayNetns(): string {
    return `${this.prefix}-ul`;
  }

  /** The lab's metadata; throws when the lab is not up. */
  get meta(): LabMeta {
    const m = this.host.state.meta as unknown as LabMeta;
    if (m.version !== 1) throw new LabStateError(`lab ${this.prefix}: not fully up (no metadata); run \`weft lab down --prefix ${this.prefix}\``);
    return m;
  }

  /** Loads a running lab's state; throws {@link LabStateError} when there is none. */
  async open(): Promise<this> {
    const s = await this.host.load();
    if (!s) throw new LabStateError(`lab: no lab with prefix ${this.prefix} is up`);
    return this;
  }

  /**
   * Builds the lab: requirements check, underlay, nodes with agents, pods through the CNI plugin.
   * On failure everything created so far is removed before the error is rethrown.
   */
  async up(opts: UpOptions): Promise<LabMeta> {
    const backend = opts.backend ?? 'auto';
    if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 50) throw new LabError('lab: --nodes must be between 1 and 50');
    if (!Number.isInteger(opts.podsPerNode) || opts.podsPerNode < 0 || opts.podsPerNode > 50) throw new LabError('lab: --pods-per-node must be between 0 and 50');
    const clouds = opts.clouds ?? 1;
    if (clouds !== 1 && clouds !== 2) throw new LabError('lab: --clouds must be 1 or 2');
    const cloud2Nodes = opts.cloud2Nodes ?? 1;
    if (clouds === 2 && (!Number.isInteger(cloud2Nodes) || cloud2Nodes < 1 || cloud2Nodes > 50)) throw new LabError('lab: --cloud2-nodes must be between 1 and 50');
    if (clouds === 2 && opts.kubeconfig) throw new LabError('lab: --clouds 2 joins nodes by token and cannot be combined with a kubeconfig');
    const agentArgs = clouds === 2 && !(opts.agentArgs ?? []).includes('--mesh-profile') ? [...(opts.agentArgs ?? []), '--mesh-profile', 'wan'] : opts.agentArgs;
    await checkRequirements(this.host.runner, backend);
    await this.host.init();
    try {
      const subnet = underlaySubnet(this.prefix);
      const cniBinDir = await this.#installCni();
      const meta: LabMeta = {
        version: 1, subnet, backend, clusterCIDR: LAB_DEFAULTS.clusterCIDR, meshPort: LAB_DEFAULTS.meshPort, wgPort: LAB_DEFAULTS.wgPort,
        cniBinDir, fixedPodCIDRs: opts.kubeconfig ? false : (opts.fixedPodCIDRs ?? true), lastIndex: 0, nodes: [], pods: [],
        ...(opts.kubeconfig ? { kubeconfig: opts.kubeconfig } : {}), ...(agentArgs ? { agentArgs: [...agentArgs] } : {}),
      };
      await this.host.setMeta(meta as unknown as Record<string, unknown>);
      await this.host.makeDir('shared');
      await writeFile(this.#meshKeyPath(), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });

      this.#progress(`lab ${this.prefix}: underlay ${subnet} in netns ${this.underlayNetns}`);
      await this.host.addNetns(this.underlayNetns);
      await this.#disableIPv6(this.underlayNetns);
      await this.host.addBridge('br0', this.underlayNetns);

      const names: string[] = [];
      for (let i = 1; i <= opts.nodes; i++) names.push(await this.#createNode(i));
      await opts.beforeAgents?.(this);
      // The first agent has no seeds; the others join through the ones started before them. With
      // Kubernetes every agent has the others as seeds and is not ready before one answers: start all.
      for (const name of names) {
        await this.startAgent(name);
        if (name === names[0] && !opts.kubeconfig) await this.waitReady(name, opts.readyTimeoutMs ?? 60_000);
      }
      for (const name of names) await this.waitReady(name, opts.readyTimeoutMs ?? 60_000);
      for (const name of names) for (let j = 1; j <= opts.podsPerNode; j++) await this.addPod(name, j);
      if (clouds === 2) {
        this.#progress(`lab ${this.prefix}: cloud 2 (${CLOUD2.subnet}) behind a masquerading router, ${cloud2Nodes} node(s) joining by token`);
        await upCloud2(this, { nodes: cloud2Nodes, podsPerNode: opts.podsPerNode, readyTimeoutMs: Math.max(opts.readyTimeoutMs ?? 90_000, 90_000) });
      }
      return this.meta;
    } catch (err) {
      this.#progress(`lab ${this.prefix}: up failed, removing what was created: ${(err as Error).message}`);
      await this.down().catch((e: unknown) => this.#progress(`lab ${this.prefix}: down after failed up: ${(e as Error).message}`));
      throw err;
    }
  }

  #meshKeyPath(): string {
    return join(this.host.dir, 'shared', 'mesh.key');
  }

  async #disableIPv6(netns: string): Promise<void> {
    // Keeps the underlay quiet (no router solicitations / MLD), so captures hold only what weft sends.
    await this.host.exec({ netns }, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], { check: false });
  }

  /**
   * Fills the CNI_PATH directory the lab passes to the plugin. Default: a `weft-cni` launcher that
   * runs `src/cni/plugin.ts` with the lab's Node (always the current source). With
   * `WEFT_LAB_CNI=dist`: the production layout from `npm run build` (`weft-cni` launcher plus
   * `weft-runtime/{node,weft-cni.mjs}` next to it, as the DaemonSet installs it).
   */
  async #installCni(): Promise<string> {
    const dir = await this.host.makeDir('cni-bin');
    const target = join(dir, 'weft-cni');
    if (process.env.WEFT_LAB_CNI === 'dist') {
      const dist = join(this.repoDir, 'dist');
      for (const f of ['weft-cni', 'weft-cni.mjs']) {
        if (!existsSync(join(dist, f))) throw new LabError(`lab: WEFT_LAB_CNI=dist but ${join(dist, f)} is missing; run \`npm run build\` first`);
      }
      await mkdir(join(dir, 'weft-runtime'), { recursive: true });
      await copyFile(join(dist, 'weft-cni'), target);
      await copyFile(join(dist, 'weft-cni.mjs'), join(dir, 'weft-runtime', 'weft-cni.mjs'));
      await symlink(this.nodeBin, join(dir, 'weft-runtime', 'node'));
    } else {
      await writeFile(target, `#!/bin/sh\nexec ${shellQuote(this.nodeBin)} ${shellQuote(join(this.repoDir, 'src', 'cni', 'plugin.ts'))} "$@"\n`, { mode: 0o755 });
    }
    await chmod(target, 0o755);
    return dir;
  }

  async #createNode(index: number): Promise<string> {
    const m = this.meta;
    const name = `${this.prefix}-n${index}`;
    const ip = underlayIP(m.subnet, index);
    this.#progress(`lab ${this.prefix}: node ${name} at ${ip}`);
    const node = await this.host.addNode(name);
    await this.#disableIPv6(name);
    await this.host.addVeth({ name: `n${index}`, netns: this.underlayNetns }, { name: 'eth0', netns: name });
    await this.host.exec({ netns: this.underlayNetns }, ['ip', 'link', 'set', `n${index}`, 'master', 'br0']);
    await this.host.addAddress(name, 'eth0', `${ip}/24`);
    // The mesh key is shared by every member; each node gets its own 0600 copy in its state dir.
    await writeFile(join(node.stateDir, 'mesh.key'), await readFile(this.#meshKeyPath()), { mode: 0o600 });
    const podCIDR = m.fixedPodCIDRs ? `10.244.${index}.0/24` : '';
    const agentArgv = [
      this.nodeBin, ...(this.#opts.agentNodeFlags ?? AGENT_NODE_FLAGS), this.#opts.agentScript ?? join(this.repoDir, 'src', 'main.ts'), 'agent',
      '--name', name,
      '--listen-addr', ip,
      '--mesh-port', String(m.meshPort),
      '--wg-port', String(m.wgPort),
      '--cluster-cidr', m.clusterCIDR,
      ...(podCIDR ? ['--pod-cidr', podCIDR] : []),
      '--backend', m.backend,
      '--mesh-key-file', '/var/lib/weft/mesh.key',
      '--resync', this.#opts.resync ?? '10s',
      '--log-level', this.#opts.agentLogLevel ?? 'info',
      ...(m.kubeconfig ? ['--kubeconfig', m.kubeconfig] : []),
      ...(m.agentArgs ?? []),
    ];
    m.nodes.push({ name, netns: name, index, underlayIP: ip, podCIDR, meshIP: podCIDR ? `10.244.${index}.1` : '', agentArgv });
    await this.host.setMeta({ nodes: m.nodes, lastIndex: Math.max(m.lastIndex ?? 0, index) });
    return name;
  }

  /** The record of node `name`; throws when unknown. */
  node(name: string): LabNode {
    const n = this.meta.nodes.find((x) => x.name === name);
    if (!n) throw new LabError(`lab ${this.prefix}: no node ${name} (nodes: ${this.meta.nodes.map((x) => x.name).join(', ') || 'none'})`);
    return n;
  }

  /** The host-side handle (namespaces and directories) of node `name`. */
  handle(name: string): NodeHandle {
    this.node(name);
    return this.host.node(name);
  }

  /** An API client for node `name`'s agent socket (reached through the node's bind-mounted run dir). */
  client(name: string, timeoutMs = 3000): ApiClient {
    return new ApiClient({ socketPath: join(this.handle(name).runDir, 'weft.sock'), timeoutMs });
  }

  /** Starts (or restarts) node `name`'s agent, seeded with every other node of the lab. Returns its PID. */
  async startAgent(name: string): Promise<number> {
    const n = this.node(name);
    if (this.host.processes(`agent:${name}`).length > 0) throw new LabError(`lab ${this.prefix}: the agent of ${name} is already running`);
    // With Kubernetes the agents find each other through their Node objects, not flags.
    const seeds = this.meta.kubeconfig ? [] : this.meta.nodes.filter((x) => x.name !== name && this.host.processes(`agent:${x.name}`).length > 0).map((x) => `${x.underlayIP}:${this.meta.meshPort}`);
    const argv = [...n.agentArgv, ...(seeds.length > 0 ? ['--seeds', seeds.join(',')] : [])];
    const h = this.host.node(name);
    return this.host.spawn(h, argv, { logFile: join(h.logDir, 'agent.log'), label: `agent:${name}`, env: AGENT_ENV });
  }

  /** Stops node `name`'s agent: SIGTERM (clean shutdown) or SIGKILL (crash). Returns the PIDs signalled. */
  stopAgent(name: string, how: 'term' | 'kill' = 'term'): Promise<number[]> {
    this.node(name);
    return this.host.stopProcesses(`agent:${name}`, how);
  }

  /** The PID of node `name`'s running agent, if any. */
  agentPid(name: string): number | undefined {
    return this.host.processes(`agent:${name}`)[0]?.pid;
  }

  /** Waits until node `name`'s agent answers /readyz and /v1/status, then records its block. */
  async waitReady(name: string, timeoutMs = 60_000): Promise<AgentStatus> {
    const c = this.client(name);
    const status = await waitFor(`the agent of ${name} to become ready`, timeoutMs, async () => {
      if (this.agentPid(name) === undefined) throw new LabError(`the agent of ${name} is not running; last log lines:\n${await this.agentLogTail(name)}`);
      await c.get('/readyz');
      const s = await c.get<AgentStatus>('/v1/status');
      return s.ready && s.node.podCIDRs.length > 0 ? s : undefined;
    }, 250).catch(async (err: Error) => {
      if (err.message.includes('last log lines')) throw err;
      throw new LabError(`${err.message}\nlast log lines of ${name}:\n${await this.agentLogTail(name)}`, { cause: err });
    });
    const n = this.node(name);
    const podCIDR = status.node.podCIDRs.find((c2) => !c2.includes(':')) ?? status.node.podCIDRs[0]!;
    if (n.podCIDR !== podCIDR || n.meshIP !== status.node.meshIP) {
      const nodes = this.meta.nodes.map((x) => (x.name === name ? { ...x, podCIDR, meshIP: status.node.meshIP ?? '' } : x));
      await this.host.setMeta({ nodes });
    }
    return status;
  }

  /** The last lines of node `name`'s agent log. */
  async agentLogTail(name: string, lines = 15): Promise<string> {
    try {
      const text = await readFile(join(this.host.node(name).logDir, 'agent.log'), 'utf8');
      return text.trimEnd().split('\n').slice(-lines).map(condenseLogLine).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /**
   * Creates pod `<node>-p<j>`: a network namespace, then CNI ADD through the real plugin inside the
   * node's namespaces, exactly as a runtime calls it. Retries while the agent says "try again later" (11).
   */
  async addPod(nodeName: string, j: number): Promise<LabPod> {
    this.node(nodeName);
    const netns = `${nodeName}-p${j}`;
    if (this.meta.pods.some((p) => p.netns === netns)) throw new LabError(`lab ${this.prefix}: pod ${netns} exists`);
    const containerId = randomBytes(32).toString('hex');
    await this.host.addNetns(netns);
    const res = await waitFor(`CNI ADD of ${netns}`, 20_000, async () => {
      const r = await this.cni(nodeName, 'ADD', netns, containerId);
      if (r.code === 0) return r;
      const err = parseCniError(r);
      if (err.code === 11) return undefined;
      throw new LabError(`lab: CNI ADD ${netns} failed (exit ${r.code}, code ${err.code}): ${err.msg}${err.details ? ` (${err.details})` : ''}${r.stderr ? `\nstderr: ${r.stderr.trim().slice(-800)}` : ''}`);
    }, 300);
    let ip: string;
    try {
      const result = JSON.parse(res.stdout) as { ips?: Array<{ address?: string }> };
      const addr = result.ips?.[0]?.address;
      if (!addr) throw new Error('no ips[0].address');
      ip = addr.split('/')[0]!;
    } catch (err) {
      throw new LabError(`lab: CNI ADD ${netns}: unreadable result ${JSON.stringify(res.stdout.slice(0, 300))}: ${(err as Error).message}`, { cause: err });
    }
    const pod: LabPod = { netns, node: nodeName, podName: netns, podNamespace: LAB_DEFAULTS.podNamespace, ip, containerId };
    this.meta.pods.push(pod);
    await this.host.setMeta({ pods: this.meta.pods });
    this.#progress(`lab ${this.prefix}: pod ${netns} ${ip}`);
    return pod;
  }

  /** Runs the CNI plugin once inside node `nodeName`'s namespaces, as a container runtime does. */
  async cni(nodeName: string, command: 'ADD' | 'DEL' | 'CHECK', podNetns: string, containerId: string): Promise<CommandResult> {
    const m = this.meta;
    const conf = { cniVersion: '1.1.0', name: 'weft', type: 'weft-cni', socket: '/run/weft/weft.sock' };
    const env = {
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/run/netns/${podNetns}`,
      CNI_IFNAME: LAB_DEFAULTS.cniIfname,
      CNI_PATH: m.cniBinDir,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${LAB_DEFAULTS.podNamespace};K8S_POD_NAME=${podNetns};K8S_POD_INFRA_CONTAINER_ID=${containerId}`,
    };
    return this.host.exec(this.host.node(nodeName), [join(m.cniBinDir, 'weft-cni')], { env, input: JSON.stringify(conf), check: false, timeoutMs: 30_000 });
  }

  /** CNI DEL of a pod, then its namespace is deleted. */
  async removePod(netns: string): Promise<void> {
    const pod = this.meta.pods.find((p) => p.netns === netns);
    if (!pod) throw new LabError(`lab ${this.prefix}: no pod ${netns}`);
    const r = await this.cni(pod.node, 'DEL', netns, pod.containerId);
    if (r.code !== 0) this.#opts.warn?.(`lab: CNI DEL ${netns}: ${r.stdout.trim()} ${r.stderr.trim()}`);
    await this.host.deleteNetns(netns);
    await this.host.setMeta({ pods: this.meta.pods.filter((p) => p.netns !== netns) });
  }

  /** Adds node number `max+1` to a running lab, starts its agent and waits for it. Returns its name. */
  async addNode(opts: { podsPerNode?: number; readyTimeoutMs?: number; start?: boolean } = {}): Promise<string> {
    const index = Math.max(this.meta.lastIndex ?? 0, ...this.meta.nodes.map((n) => n.index)) + 1;
    const name = await this.#createNode(index);
    // start: false leaves the node without a running agent (e.g. for `weft join`, issue 7).
    if (opts.start === false) return name;
    await this.startAgent(name);
    await this.waitReady(name, opts.readyTimeoutMs ?? 60_000);
    for (let j = 1; j <= (opts.podsPerNode ?? 0); j++) await this.addPod(name, j);
    return name;
  }

  /**
   * Removes node `name` from the lab as if the machine disappeared: its agent is SIGKILLed (so it
   * does not leave the mesh gracefully), its pods and namespaces are deleted. With `graceful`,
   * the agent gets SIGTERM first and leaves the mesh.
   */
  async removeNode(name: string, opts: { graceful?: boolean } = {}): Promise<void> {
    this.node(name);
    await this.stopAgent(name, opts.graceful ? 'term' : 'kill');
    for (const p of this.meta.pods.filter((x) => x.node === name)) await this.host.deleteNetns(p.netns);
    await this.host.removeNode(name);
    await this.host.setMeta({ nodes: this.meta.nodes.filter((n) => n.name !== name), pods: this.meta.pods.filter((p) => p.node !== name) });
  }

  /** Resolves a node, pod or underlay name to where commands run (nodes: net + mount namespace). */
  target(name: string): NsTarget {
    if (name === this.underlayNetns || name === 'ul') return { netns: this.underlayNetns };
    if (this.meta.nodes.some((n) => n.name === name)) return this.host.node(name);
    if (this.meta.pods.some((p) => p.netns === name)) return { netns: name };
    throw new LabError(`lab ${this.prefix}: no node or pod named ${name}`);
  }

  /** Runs a command in a node, pod or the underlay namespace. */
  exec(name: string, argv: readonly string[], opts?: { check?: boolean; timeoutMs?: number; input?: string }): Promise<CommandResult> {
    return this.host.exec(this.target(name), argv, opts);
  }

  /** Starts a long-running command in a node or pod; recorded so `down` stops it. */
  spawnIn(name: string, argv: readonly string[], label: string): Promise<number> {
    return this.host.spawn(this.target(name), argv, { logFile: join(this.host.dir, `${label.replace(/[^a-z0-9-]/gi, '_')}.log`), label });
  }

  /** The argv of the lab's TCP probe (`src/lab/probe.ts`). */
  probeArgv(...args: string[]): string[] {
    return [this.nodeBin, join(this.repoDir, 'src', 'lab', 'probe.ts'), ...args];
  }

  /**
   * Starts a capture of an underlay bridge (cloud 1: br0; cloud 2 of `--clouds 2`: br1); stop it
   * with the returned function, which returns the summary. Every node's WireGuard and mesh port
   * counts (nodes behind one NAT have their own), and the join listener counts as sealed control.
   */
  async captureUnderlay(label = 'capture', cloud: 1 | 2 = 1): Promise<{ stop: () => Promise<UnderlayCapture> }> {
    if (cloud === 2 && this.meta.clouds !== 2) throw new LabError(`lab ${this.prefix}: no cloud 2 (up with --clouds 2)`);
    const file = join(this.host.dir, `${label}.pcap`);
    const netns = cloud === 2 ? cloud2Netns(this.prefix) : this.underlayNetns;
    const bridge = cloud === 2 ? CLOUD2.bridge : 'br0';
    await this.host.spawn({ netns }, ['tcpdump', '-i', bridge, '-n', '-U', '-s', '256', '-Z', 'root', '-w', file], { logFile: join(this.host.dir, `${label}.log`), label });
    // tcpdump needs a moment to open the interface; wait for the file header.
    await waitFor('tcpdump to start', 5000, async () => (existsSync(file) ? true : undefined), 50);
    return {
      stop: async () => {
        await sleep(300);
        await this.host.stopProcesses(label, 'term');
        const frames = parsePcap(new Uint8Array(await readFile(file)));
        const m = this.meta;
        const ports = (flag: string): number[] => m.nodes.flatMap((n) => argvPort(n.agentArgv, flag) ?? []);
        // A relay forwards WireGuard datagrams on its relay ports: they count as WireGuard ports.
        const relayRanges = m.nodes.map((n) => relayPortRange(n.agentArgv));
        const onRelay = (p: number | undefined) => p !== undefined && relayRanges.some(([lo, hi]) => p >= lo && p <= hi);
        const relayPorts = [...new Set(relayRanges.flatMap(([lo, hi]) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i)))];
        const wgPorts = [...new Set([m.wgPort, ...ports('--wg-port'), ...relayPorts])];
        const controlPorts = [...new Set([...ports('--mesh-port'), ...(m.clouds === 2 ? [LAB_JOIN_PORT] : [])])].filter((p) => p !== m.meshPort);
        const summary = classifyCapture(frames, { wgPorts, meshPort: m.meshPort, controlPorts, podCIDRs: [m.clusterCIDR] });
        const relayed = frames.filter((f) => f.proto === 17 && (onRelay(f.sport) || onRelay(f.dport)) && f.payload && isWireGuardMessage(f.payload, f.payloadLength)).length;
        return { ...summary, relayed };
      },
    };
  }

  /** Node and pod list plus each agent's liveness, readiness and peer count. */
  async status(): Promise<LabStatus> {
    const m = this.meta;
    const nodes = await Promise.all(
      m.nodes.map(async (n) => {
        const agentPid = this.agentPid(n.name);
        try {
          const s = await this.client(n.name, 2000).get<AgentStatus>('/v1/status');
          return { ...n, agentPid, ready: s.ready, peers: s.peers.length, handshakes: s.peers.filter((p) => p.lastHandshake > 0).length };
        } catch (err) {
          return { ...n, agentPid, ready: false, peers: 0, handshakes: 0, error: (err as Error).message };
        }
      }),
    );
    return { prefix: this.prefix, subnet: m.subnet, nodes, pods: m.pods };
  }

  /** Removes everything the lab created (see {@link LabHost.down}). Idempotent. */
  async down(): Promise<number> {
    return this.host.down();
  }
}

function parseCniError(r: CommandResult): { code: number; msg: string; details?: string } {
  try {
    const e = JSON.parse(r.stdout) as { code?: number; msg?: string; details?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, msg: e.msg ?? r.stdout.trim(), details: e.details };
  } catch {
    return { code: -1, msg: `no JSON error on stdout: ${r.stdout.trim().slice(0, 200)}` };
  }
}

/** One pino JSON line as "level component: msg: err.message" (no stacks), other lines cut to 300 chars. */
export function condenseLogLine(line: string): string {
  try {
    const j = JSON.parse(line) as { level?: number; component?: string; msg?: string; err?: { message?: string } };
    const lvl = ({ 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' } as Record<number, string>)[j.level ?? 0] ?? String(j.level);
    return `  ${lvl} ${j.component ?? '-'}: ${j.msg ?? ''}${j.err?.message ? `: ${j.err.message}` : ''}`.slice(0, 400);
  } catch {
    return `  ${line.slice(0, 300)}`;
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Formats nodes and pods as the two tables `weft lab up` and `weft lab status` print. */
export function renderLab(nodes: ReadonlyArray<LabNode & { agentPid?: number; ready?: boolean; peers?: number; handshakes?: number }>, pods: readonly LabPod[]): string {
  const withStatus = nodes.some((n) => n.ready !== undefined);
  const nodeRows = [
    ['NODE (netns)', 'UNDERLAY IP', 'POD CIDR', 'MESH IP', ...(withStatus ? ['AGENT', 'READY', 'PEERS'] : [])],
    ...nodes.map((n) => [n.name, n.underlayIP, n.podCIDR || '-', n.meshIP || '-', ...(withStatus ? [n.agentPid ? `pid ${n.agentPid}` : 'down', n.ready ? 'yes' : 'no', `${n.handshakes ?? 0}/${n.peers ?? 0}`] : [])]),
  ];
  const podRows = [['POD (netns)', 'IP', 'NAME', 'NAMESPACE', 'NODE'], ...pods.map((p) => [p.netns, p.ip, p.podName, p.podNamespace, p.node])];
  return `${table(nodeRows)}\n\n${pods.length > 0 ? table(podRows) : '(no pods)'}\n`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n');
}
