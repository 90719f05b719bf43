/**
 * The datapath benchmark: two nodes on one underlay bridge, one pod on each, built in network
 * namespaces with the lab's host primitives ({@link LabHost}), and the same traffic (iperf3 TCP 1
 * and 8 streams, UDP, TCP request/response) between the pods in four modes:
 *
 * - `plain`: the pod blocks are routed over the underlay (host-gateway style), no tunnel;
 * - `vxlan`: a kernel VXLAN device per node, routes into it (Flannel style), MTU 1450;
 * - `weft`: a real lab (`Lab`): agents, their chosen WireGuard backend, pods by the CNI plugin;
 * - `wireguard-manual`: the same WireGuard implementation configured by hand with `wg` (the ceiling).
 *
 * MTUs are derived from the underlay, never assumed: plain uses the underlay's, VXLAN the underlay's
 * minus 50, and both WireGuard modes the one weft plans (`planMTU`: underlay minus 60 on IPv4). With
 * both `weft` and `wireguard-manual` selected, the hand-made interface gets exactly weft0's MTU, and
 * the two are measured paired and interleaved (see {@link runDatapath}).
 *
 * Every object is recorded by the lab host and removed in `finally`, also when a run fails.
 */
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabHost, checkRequirements, systemRunner, uniquePrefix, type NodeHandle, type NsTarget, type Runner } from '../../src/lab/host.ts';
import { Lab, underlayIP, underlaySubnet, waitFor } from '../../src/lab/lab.ts';
import { planMTU } from '../../src/plan/datapath.ts';
import { busyCores, readCpu, type CpuSample } from './cpu.ts';
import { iperfClientArgv, parseIperfTcp, parseIperfUdp } from './iperf.ts';
import { pairedRatios, summarize, type PairedRatio, type Summary } from './stats.ts';

/** The four datapath modes, in report order (plain first: it is the reference of every ratio). */
export const MODES = ['plain', 'vxlan', 'weft', 'wireguard-manual'] as const;
/** One datapath mode. */
export type Mode = (typeof MODES)[number];

/** The figures of one repeat of one mode. NaN marks a figure whose run failed. */
export interface RepeatFigures {
  tcp1_gbps: number;
  tcp8_gbps: number;
  udp_gbps: number;
  udp_loss: number;
  rr_p50_us: number;
  rr_p99_us: number;
  cpu_per_gbps: number;
  cpu_excess_per_gbps: number;
  /**
   * CPU-seconds of the WireGuard processes of both nodes (wireguard-go; NaN with the kernel module)
   * per Gbit received over the TCP runs. Unlike throughput it barely depends on how much CPU other
   * work leaves: the cost per bit. It includes the kernel work done in their syscalls (a packet
   * written to the TUN device is routed and delivered, bridge included, in wireguard-go's time).
   */
  wg_cpu_per_gbps: number;
  /** CPU-seconds of the mode's control plane (weft's two agents) per Gbit over the TCP runs; NaN for modes without one. */
  control_cpu_per_gbps: number;
}

/** The figure names of {@link RepeatFigures}, in report order. */
export const FIGURES = ['tcp1_gbps', 'tcp8_gbps', 'udp_gbps', 'udp_loss', 'rr_p50_us', 'rr_p99_us', 'cpu_per_gbps', 'cpu_excess_per_gbps', 'wg_cpu_per_gbps', 'control_cpu_per_gbps'] as const;

/**
 * One mode's result: each figure's median (under its own name) plus `<figure>_min` / `<figure>_max`.
 * `mtu` is the pod interface's MTU as read in the pod; `tunnel_mtu` (encrypted modes) the MTU of the
 * WireGuard interface on the nodes.
 */
export type ModeResult = { mode: Mode; mtu: number; tunnel_mtu?: number; repeats: number; errors: string[] } & Record<string, unknown>;

/** Throughput figures measured paired between weft and wireguard-manual. */
export const PAIRED_FIGURES = ['tcp1_gbps', 'tcp8_gbps', 'udp_gbps'] as const;

/**
 * weft's throughput over hand-configured WireGuard, from paired and interleaved runs: for each
 * throughput figure the median, min and max of the per-pair ratios (null when no pair completed).
 */
export interface WeftVsManual {
  /** How the pairs were taken: each run of weft next to the same run of wireguard-manual. */
  readonly method: 'paired-interleaved';
  readonly pairs: number;
  /** WireGuard interface MTU of each side (equal by construction) and the pods' MTU. */
  readonly tunnel_mtu: { readonly weft: number; readonly manual: number };
  readonly pod_mtu: { readonly weft: number; readonly manual: number };
  readonly tcp1_gbps: PairedRatio | null;
  readonly tcp8_gbps: PairedRatio | null;
  readonly udp_gbps: PairedRatio | null;
  /** weft's wireguard-go CPU per Gbit over manual's, per pair: a cost ratio, lower is better; null on the kernel backend. */
  readonly wg_cpu_per_gbps: PairedRatio | null;
  /** The same with weft's agents' CPU added to weft's side: all the CPU weft spends per Gbit beyond the pods'. */
  readonly wg_and_control_cpu_per_gbps: PairedRatio | null;
}

/** What {@link runDatapath} measured: one result per mode, and the paired weft/manual ratios when both ran. */
export interface DatapathResult {
  readonly modes: ModeResult[];
  readonly weftVsManual: WeftVsManual | null;
}

/** A datapath benchmark failure (setup or every repeat of a figure failed), with context. */
export class DatapathBenchError extends Error {
  override name = 'DatapathBenchError';
}

/** Options of {@link runDatapath}. */
export interface DatapathOptions {
  readonly modes: readonly Mode[];
  readonly repeat: number;
  /** iperf3 `-t` per run. */
  readonly seconds: number;
  /** Request/response rounds per repeat. */
  readonly rrRounds: number;
  /** UDP offered rate (iperf3 `-b`), e.g. `1G`. */
  readonly udpRate: string;
  /** WireGuard backend for the encrypted modes: userspace (wireguard-go) here, kernel where the module exists. */
  readonly backend: 'kernel' | 'userspace';
  /**
   * How the hand-made modes attach a pod to its node: a routed veth (default; the gateway address
   * on the veth) or, for attributing weft's overhead, a bridge carrying the gateway as weft's
   * `weftbr0` did before weft moved to routed veths. Not a CLI option; `bench/README.md` records what it showed.
   */
  readonly manualPodAttach?: 'veth' | 'bridge';
  /**
   * When weft's agents are paused in a paired run: during the manual side's runs (default), never,
   * or, for attributing weft's overhead, during weft's runs as well (the datapath alone). Not a CLI option.
   */
  readonly pauseAgents?: 'manual-runs' | 'never' | 'all-runs';
  readonly prefixBase?: string;
  readonly runner?: Runner;
  readonly nodeBin?: string;
  readonly progress?: (msg: string) => void;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const IPERF_PORT = 5201;
const RR_PORT = 7070;
/** Pause after continuing weft's agents before weft's next measured run. */
const RESUME_SETTLE_MS = 1500;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a built topology offers the traffic runner. */
interface Topology {
  readonly host: LabHost;
  readonly client: NsTarget;
  readonly server: NsTarget;
  readonly serverIP: string;
  /** The pods' interface MTU. */
  readonly mtu: number;
  /** The WireGuard interface MTU on the nodes (encrypted modes). */
  readonly tunnelMtu?: number;
  /** Label prefix under which processes are spawned (`spawn`). */
  spawn(target: NsTarget, argv: readonly string[], label: string): Promise<number>;
  /**
   * PIDs of the mode's control plane (weft's agents): paused while the other side of a pair runs,
   * so the ceiling is measured without weft's idle agents taking CPU next to it.
   */
  controlPids?(): number[];
  /** Network namespaces of the nodes, whose wireguard-go processes {@link wgCpuTicks} counts. */
  readonly nodeNetns: readonly string[];
}

/** Picks the WireGuard backend the encrypted modes use: kernel when the module is loaded, else userspace. */
export async function chooseBackend(runner: Runner = systemRunner()): Promise<'kernel' | 'userspace'> {
  const r = await checkRequirements(runner, 'auto');
  return r.backend === 'kernel' ? 'kernel' : 'userspace';
}

/**
 * Builds each mode in turn, runs `repeat` rounds of the traffic, and tears the mode down before the
 * next one. With both `weft` and `wireguard-manual` selected they are up at the same time instead
 * (wg0 gets weft0's MTU) and measured paired: in every repeat each throughput run of one is
 * followed directly by the same run of the other (order alternating between repeats), so load drift
 * on a shared host hits both sides of a pair alike; weft's agents are paused (SIGSTOP) during the
 * manual side's runs. A failed mode is reported with its error and NaN figures; it does not stop
 * the others.
 */
export async function runDatapath(opts: DatapathOptions): Promise<DatapathResult> {
  const progress = opts.progress ?? (() => {});
  const out = new Map<Mode, ModeResult>();
  const paired = opts.modes.includes('weft') && opts.modes.includes('wireguard-manual');
  let weftVsManual: WeftVsManual | null = null;
  for (const mode of opts.modes) {
    if (paired && (mode === 'weft' || mode === 'wireguard-manual')) continue;
    progress(`bench: datapath mode ${mode}`);
    const built = new Built(opts, progress);
    try {
      const topo = await built.build(mode);
      out.set(mode, await measureMode(mode, topo, opts));
    } catch (err) {
      progress(`bench: mode ${mode} failed: ${(err as Error).message}`);
      out.set(mode, failedMode(mode, opts.repeat, `${mode}: ${(err as Error).message}`));
    } finally {
      await built.down();
    }
  }
  if (paired) {
    progress('bench: datapath modes weft and wireguard-manual, paired');
    const weftB = new Built(opts, progress);
    const manualB = new Built(opts, progress);
    try {
      let weftTopo: Topology | undefined;
      let weftErr: string | undefined;
      try {
        weftTopo = await weftB.build('weft');
      } catch (err) {
        weftErr = `weft: ${(err as Error).message}`;
        progress(`bench: mode weft failed: ${(err as Error).message}`);
      }
      let manualTopo: Topology | undefined;
      try {
        // The ceiling must be comparable: the same WireGuard MTU as weft0 when weft is up.
        manualTopo = await manualB.build('wireguard-manual', weftTopo?.tunnelMtu);
      } catch (err) {
        progress(`bench: mode wireguard-manual failed: ${(err as Error).message}`);
        out.set('wireguard-manual', failedMode('wireguard-manual', opts.repeat, `wireguard-manual: ${(err as Error).message}`));
      }
      if (weftTopo && manualTopo) {
        const r = await measurePaired(weftTopo, manualTopo, opts);
        out.set('weft', r.weft);
        out.set('wireguard-manual', r.manual);
        weftVsManual = r.summary;
      } else if (weftTopo) {
        out.set('weft', await measureMode('weft', weftTopo, opts));
      } else if (manualTopo) {
        out.set('wireguard-manual', await measureMode('wireguard-manual', manualTopo, opts));
      }
      if (weftErr) out.set('weft', failedMode('weft', opts.repeat, weftErr));
    } catch (err) {
      progress(`bench: paired weft/manual failed: ${(err as Error).message}`);
      for (const m of ['weft', 'wireguard-manual'] as const) if (!out.has(m)) out.set(m, failedMode(m, opts.repeat, `${m}: ${(err as Error).message}`));
    } finally {
      await weftB.down();
      await manualB.down();
    }
  }
  return { modes: opts.modes.map((m) => out.get(m) ?? failedMode(m, opts.repeat, `${m}: not measured`)), weftVsManual };
}

/** One mode's namespaces: built on demand, removed by {@link Built.down} (never throws). */
class Built {
  readonly #opts: DatapathOptions;
  readonly #progress: (msg: string) => void;
  readonly #prefix: string;
  #lab: Lab | undefined;
  #host: LabHost | undefined;

  constructor(opts: DatapathOptions, progress: (msg: string) => void) {
    this.#opts = opts;
    this.#progress = progress;
    this.#prefix = uniquePrefix(opts.prefixBase ?? 'wbn');
  }

  /** Builds `mode`; `wgMtu` forces the hand-made WireGuard interface's MTU (else planned from the underlay). */
  async build(mode: Mode, wgMtu?: number): Promise<Topology> {
    if (mode === 'weft') {
      this.#lab = new Lab({ prefix: this.#prefix, runner: this.#opts.runner, nodeBin: this.#opts.nodeBin, agentLogLevel: 'warn', progress: this.#progress });
      return weftTopology(this.#lab, this.#opts.backend);
    }
    this.#host = new LabHost({ prefix: this.#prefix, runner: this.#opts.runner, warn: this.#progress });
    return manualTopology(this.#host, mode, this.#opts.backend, wgMtu, this.#opts.manualPodAttach ?? 'veth');
  }

  async down(): Promise<void> {
    const lab = this.#lab;
    const host = this.#host;
    this.#lab = undefined;
    this.#host = undefined;
    await (lab ? lab.down() : host?.down())?.catch((e: unknown) => this.#progress(`bench: removing ${this.#prefix}: ${(e as Error).message}`));
  }
}

function failedMode(mode: Mode, repeats: number, error: string): ModeResult {
  const r: ModeResult = { mode, mtu: 0, repeats, errors: [error] };
  for (const f of FIGURES) Object.assign(r, { [f]: null, [`${f}_min`]: null, [`${f}_max`]: null });
  return r;
}

/** The MTU in `ip -o link show dev X` output (`... mtu 1440 qdisc ...`). Throws when there is none. Pure. */
export function parseLinkMtu(text: string): number {
  const m = /\bmtu (\d{1,5})\b/.exec(text);
  const n = m ? Number(m[1]) : NaN;
  if (!Number.isInteger(n) || n < 68 || n > 65_535) throw new DatapathBenchError(`bench: no MTU in ip link output: ${JSON.stringify(text.slice(0, 120))}`);
  return n;
}

/**
 * Checks weft's MTUs as measured: every pod interface must have its node's weft0 MTU (a smaller pod
 * MTU would be overhead of weft's own, a larger one fragments or drops). Returns the common tunnel
 * and pod MTU; throws {@link DatapathBenchError} naming the node otherwise. Pure.
 */
export function checkWeftMtus(nodes: ReadonlyArray<{ node: string; tunnel: number; pod: number }>): { tunnel: number; pod: number } {
  if (nodes.length === 0) throw new DatapathBenchError('bench: weft: no node to check the MTU of');
  for (const n of nodes) {
    if (n.pod !== n.tunnel) throw new DatapathBenchError(`bench: weft: pod MTU ${n.pod} differs from weft0 MTU ${n.tunnel} on ${n.node}`);
  }
  const t = new Set(nodes.map((n) => n.tunnel));
  if (t.size > 1) throw new DatapathBenchError(`bench: weft: weft0 MTUs differ between nodes: ${nodes.map((n) => `${n.node} ${n.tunnel}`).join(', ')}`);
  return { tunnel: nodes[0]!.tunnel, pod: nodes[0]!.pod };
}

/**
 * The interface MTUs of each hand-made mode, derived from the underlay MTU as weft derives its own:
 * plain carries the pods' packets as they are, VXLAN adds 50 bytes, WireGuard what `planMTU` plans
 * (60 bytes on an IPv4 underlay). `wgMtu` overrides the WireGuard MTU (set to weft0's). Pure.
 */
export function manualMtu(mode: Exclude<Mode, 'weft'>, underlayMtu: number, wgMtu?: number): number {
  if (mode === 'plain') return underlayMtu;
  if (mode === 'vxlan') return underlayMtu - 50;
  return wgMtu ?? planMTU({ mtu: 'auto', underlayMTU: underlayMtu, underlayFamilies: [4], clusterCIDRs: ['10.244.0.0/16'] });
}

/** An interface's MTU read with `ip` inside `target` (not sysfs: /sys may belong to another namespace). */
async function linkMtu(host: LabHost, target: NsTarget, ifname: string): Promise<number> {
  return parseLinkMtu((await host.exec(target, ['ip', '-o', 'link', 'show', 'dev', ifname])).stdout);
}

/**
 * The real lab: two agents, one pod each; waits until each agent has the other as a WireGuard peer,
 * then checks that each pod has its node's weft0 MTU.
 */
async function weftTopology(lab: Lab, backend: 'kernel' | 'userspace'): Promise<Topology> {
  const meta = await lab.up({ nodes: 2, podsPerNode: 1, backend });
  await waitFor('both agents to have their peer', 60_000, async () => {
    const s = await lab.status();
    return s.nodes.every((n) => n.ready && n.peers >= 1) ? true : undefined;
  }, 300);
  const pods = meta.nodes.slice(0, 2).map((n) => {
    const p = meta.pods.find((x) => x.node === n.name);
    if (!p) throw new DatapathBenchError(`bench: weft: no pod on ${n.name}`);
    return { node: n.name, pod: p };
  });
  const mtus = [];
  for (const { node, pod } of pods) {
    mtus.push({ node, tunnel: await linkMtu(lab.host, lab.target(node), 'weft0'), pod: await linkMtu(lab.host, { netns: pod.netns }, 'eth0') });
  }
  const mtu = checkWeftMtus(mtus);
  const [a, b] = [pods[0]!.pod, pods[1]!.pod];
  return {
    host: lab.host,
    client: { netns: a.netns },
    server: { netns: b.netns },
    serverIP: b.ip,
    mtu: mtu.pod,
    tunnelMtu: mtu.tunnel,
    spawn: (t, argv, label) => lab.host.spawn(t, argv, { label, logFile: join(lab.host.dir, `${label}.log`) }),
    controlPids: () => pods.map((p) => lab.agentPid(p.node)).filter((x): x is number => x !== undefined),
    nodeNetns: pods.map((p) => lab.target(p.node).netns),
  };
}

/**
 * Builds the hand-made topologies: underlay bridge, nodes (net + mount namespaces, so each has its
 * own /run/wireguard), a pod per node on a veth whose node side is the gateway 10.244.i.1/24.
 * Interface MTUs come from {@link manualMtu}; `wgMtu` sets the WireGuard interface's (weft0's).
 */
async function manualTopology(host: LabHost, mode: Exclude<Mode, 'weft'>, backend: 'kernel' | 'userspace', wgMtu: number | undefined, attach: 'veth' | 'bridge'): Promise<Topology> {
  await host.init();
  const ul = `${host.prefix}-ul`;
  const subnet = underlaySubnet(host.prefix);
  await host.addNetns(ul);
  await host.addBridge('br0', ul);
  const nodes: NodeHandle[] = [];
  let mtu = 0;
  for (const i of [1, 2]) {
    const name = `${host.prefix}-n${i}`;
    const node = await host.addNode(name);
    nodes.push(node);
    await host.exec(node, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.disable_ipv6=1']);
    await host.addVeth({ name: `n${i}`, netns: ul }, { name: 'eth0', netns: name });
    await host.exec({ netns: ul }, ['ip', 'link', 'set', `n${i}`, 'master', 'br0']);
    await host.addAddress(name, 'eth0', `${underlayIP(subnet, i)}/24`);
    mtu = manualMtu(mode, await linkMtu(host, node, 'eth0'), wgMtu);
    const pod = `${name}-p1`;
    await host.addNetns(pod);
    await host.addVeth({ name: 'pod0', netns: name }, { name: 'eth0', netns: pod });
    if (attach === 'bridge') {
      await host.exec(node, ['ip', 'link', 'add', 'podbr0', 'mtu', String(mtu), 'type', 'bridge']);
      await host.exec(node, ['ip', 'link', 'set', 'pod0', 'master', 'podbr0']);
      await host.exec(node, ['ip', 'link', 'set', 'pod0', 'up']);
      await host.exec(node, ['ip', 'link', 'set', 'podbr0', 'up']);
      await host.addAddress(name, 'podbr0', `10.244.${i}.1/24`);
    } else {
      await host.addAddress(name, 'pod0', `10.244.${i}.1/24`);
    }
    await host.addAddress(pod, 'eth0', `10.244.${i}.2/24`);
    // The pod's MTU is the tunnel's, as a CNI sets it (no fragmentation, no PMTU games).
    await host.exec({ netns: pod }, ['ip', 'link', 'set', 'eth0', 'mtu', String(mtu)]);
    await host.exec({ netns: pod }, ['ip', 'link', 'set', 'lo', 'up']);
    await host.exec({ netns: pod }, ['ip', 'route', 'add', 'default', 'via', `10.244.${i}.1`]);
  }
  const ip = (i: number): string => underlayIP(subnet, i);
  if (mode === 'plain') {
    await host.exec(nodes[0]!, ['ip', 'route', 'add', '10.244.2.0/24', 'via', ip(2)]);
    await host.exec(nodes[1]!, ['ip', 'route', 'add', '10.244.1.0/24', 'via', ip(1)]);
  } else if (mode === 'vxlan') {
    for (const [i, j] of [[1, 2], [2, 1]] as const) {
      const n = nodes[i - 1]!;
      await host.exec(n, ['ip', 'link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'local', ip(i), 'remote', ip(j), 'dstport', '4789', 'dev', 'eth0']);
      await host.exec(n, ['ip', 'link', 'set', 'vx0', 'mtu', String(mtu), 'up']);
      await host.exec(n, ['ip', 'addr', 'add', `10.245.0.${i}/24`, 'dev', 'vx0']);
      await host.exec(n, ['ip', 'route', 'add', `10.244.${j}.0/24`, 'via', `10.245.0.${j}`, 'dev', 'vx0']);
    }
  } else {
    await manualWireGuard(host, nodes, ip, backend, mtu);
  }
  return {
    host,
    client: { netns: `${nodes[0]!.name}-p1` },
    server: { netns: `${nodes[1]!.name}-p1` },
    serverIP: '10.244.2.2',
    mtu: await linkMtu(host, { netns: `${nodes[0]!.name}-p1` }, 'eth0'),
    ...(mode === 'wireguard-manual' ? { tunnelMtu: await linkMtu(host, nodes[0]!, 'wg0') } : {}),
    nodeNetns: nodes.map((n) => n.netns),
    spawn: (t, argv, label) => host.spawn(t, argv, { label, logFile: join(host.dir, `${label}.log`) }),
  };
}

/** WireGuard by hand: `wg0` per node (wireguard-go in the node's mount namespace, or the kernel), keys from `wg genkey`, one peer each. */
async function manualWireGuard(host: LabHost, nodes: NodeHandle[], ip: (i: number) => string, backend: 'kernel' | 'userspace', mtu: number): Promise<void> {
  const keys: Array<{ priv: string; pub: string }> = [];
  for (const n of nodes) {
    const priv = (await host.exec(n, ['wg', 'genkey'])).stdout.trim();
    const pub = (await host.exec(n, ['wg', 'pubkey'], { input: `${priv}\n` })).stdout.trim();
    keys.push({ priv, pub });
    const keyFile = join(n.stateDir, 'wg.key');
    await writeFile(keyFile, `${priv}\n`, { mode: 0o600 });
    await chmod(keyFile, 0o600);
    if (backend === 'kernel') {
      await host.exec(n, ['ip', 'link', 'add', 'wg0', 'type', 'wireguard']);
    } else {
      await host.spawn(n, ['wireguard-go', '-f', 'wg0'], { label: `wireguard-go:${n.name}`, logFile: join(n.logDir, 'wireguard-go.log') });
      await waitFor(`wireguard-go wg0 in ${n.name}`, 10_000, async () => ((await host.exec(n, ['wg', 'show', 'wg0'], { check: false })).code === 0 ? true : undefined), 100);
    }
  }
  for (const [i, j] of [[1, 2], [2, 1]] as const) {
    const n = nodes[i - 1]!;
    await host.exec(n, ['wg', 'set', 'wg0', 'private-key', '/var/lib/weft/wg.key', 'listen-port', '51820',
      'peer', keys[j - 1]!.pub, 'endpoint', `${ip(j)}:51820`, 'allowed-ips', `10.244.${j}.0/24`]);
    await host.exec(n, ['ip', 'link', 'set', 'wg0', 'mtu', String(mtu), 'up']);
    await host.exec(n, ['ip', 'route', 'add', `10.244.${j}.0/24`, 'dev', 'wg0']);
  }
}

/** Runs argv in the client pod; returns stdout, or throws with stderr/stdout on a non-zero exit. */
async function inClient(topo: Topology, argv: readonly string[], timeoutMs: number): Promise<string> {
  const r = await topo.host.exec(topo.client, argv, { check: false, timeoutMs });
  if (r.code !== 0) {
    // iperf3 -J reports its error inside the JSON on stdout; the parser turns it into a message.
    if (r.stdout.trim().startsWith('{')) return r.stdout;
    throw new DatapathBenchError(`bench: ${argv[0]} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-300)}`);
  }
  return r.stdout;
}

type Kind = 'tcp1' | 'tcp8' | 'udp';
const KINDS: readonly Kind[] = ['tcp1', 'tcp8', 'udp'];

const emptyRow = (): RepeatFigures => ({ tcp1_gbps: NaN, tcp8_gbps: NaN, udp_gbps: NaN, udp_loss: NaN, rr_p50_us: NaN, rr_p99_us: NaN, cpu_per_gbps: NaN, cpu_excess_per_gbps: NaN, wg_cpu_per_gbps: NaN, control_cpu_per_gbps: NaN });

/** CPU and traffic of one repeat's throughput runs, accumulated run by run. */
interface CpuTally {
  coreSeconds: number;
  extraCoreSeconds: number;
  gbits: number;
  /** CPU ticks of the WireGuard processes and of the control plane, and Gbit, over the TCP runs; ticks NaN when not countable. */
  wgTicks: number;
  ctlTicks: number;
  tcpGbits: number;
}

const newTally = (): CpuTally => ({ coreSeconds: 0, extraCoreSeconds: 0, gbits: 0, wgTicks: 0, ctlTicks: 0, tcpGbits: 0 });

/** Linux USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every mainstream architecture). */
export const CLK_TCK = 100;

/** utime + stime (ticks) from a /proc/<pid>/stat line; the command name may hold spaces and parentheses. Pure. */
export function parsePidStatTicks(text: string): number {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isInteger(utime) || !Number.isInteger(stime) || utime < 0 || stime < 0) throw new DatapathBenchError(`bench: no utime/stime in /proc stat line ${JSON.stringify(text.slice(0, 80))}`);
  return utime + stime;
}

/**
 * PIDs of the wireguard-go processes running in any of `netns` (matched by network namespace
 * inode, so it finds weft's, which its agent starts, and the hand-made ones alike).
 */
async function wireguardGoPids(netns: readonly string[]): Promise<number[]> {
  const inodes = new Set<number>();
  for (const n of netns) inodes.add((await stat(`/run/netns/${n}`)).ino);
  const out: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if ((await readFile(`/proc/${d}/comm`, 'utf8')).trim() !== 'wireguard-go') continue;
      if (inodes.has((await stat(`/proc/${d}/ns/net`)).ino)) out.push(Number(d));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** CPU ticks used so far by `pids` (a PID that is gone counts 0, so compare only over one PID set). */
async function ticksOf(pids: readonly number[]): Promise<number> {
  let t = 0;
  for (const pid of pids) t += await readFile(`/proc/${pid}/stat`, 'utf8').then(parsePidStatTicks, () => 0);
  return t;
}

/**
 * The processes whose CPU counts as the mode's WireGuard cost: its wireguard-go processes (none with
 * the kernel backend, whose work runs in softirq, not attributable per mode: the figure is NaN) and
 * its control plane (weft's agents; undefined for modes without one).
 */
async function costPids(topo: Topology): Promise<{ wg: number[]; control: number[] | undefined }> {
  return { wg: await wireguardGoPids(topo.nodeNetns).catch(() => [] as number[]), control: topo.controlPids?.() };
}

/** The request/response client argv (short path checks have no warm-up). */
function rrArgv(topo: Topology, nodeBin: string, rounds: number): string[] {
  return [nodeBin, join(HERE, 'rr.ts'), 'client', topo.serverIP, String(RR_PORT), '--rounds', String(rounds), '--warmup', rounds > 10 ? '100' : '0'];
}

/** Starts the servers in the server pod and waits until the path between the pods carries traffic. */
async function prepareTraffic(mode: Mode, topo: Topology, nodeBin: string): Promise<void> {
  await topo.spawn(topo.server, ['iperf3', '-s', '-p', String(IPERF_PORT)], `iperf3-server`);
  await topo.spawn(topo.server, [nodeBin, join(HERE, 'rr.ts'), 'serve', String(RR_PORT)], `rr-server`);
  // The path is up when a short request/response run gets through (first handshake included).
  await waitFor(`${mode}: the path between the pods`, 30_000, async () => {
    await inClient(topo, rrArgv(topo, nodeBin, 10), 8000);
    return true;
  }, 300);
  await waitFor(`${mode}: the iperf3 server`, 10_000, async () => {
    const r = await topo.host.exec(topo.server, ['ss', '-ltn', `sport = :${IPERF_PORT}`], { check: false });
    return r.stdout.includes(`:${IPERF_PORT}`) ? true : undefined;
  }, 100);
}

/** The busy share of the host's CPUs over a short window (other work on a shared host). */
async function baselineCores(ncpu: number): Promise<number> {
  const b0 = await readCpu();
  await sleep(500);
  return busyCores(b0, await readCpu(), ncpu);
}

/** One iperf3 run of `kind` into `row`, its CPU into `tally`; a failure is appended to `errors`. */
async function runKind(topo: Topology, kind: Kind, opts: DatapathOptions, ncpu: number, baseline: number, row: RepeatFigures, tally: CpuTally, errors: string[], label: string): Promise<void> {
  const pids = kind === 'udp' ? { wg: [], control: [] } : await costPids(topo);
  const w0 = await ticksOf(pids.wg);
  const k0 = await ticksOf(pids.control ?? []);
  const c0: CpuSample = await readCpu();
  const t0 = performance.now();
  try {
    const text = await inClient(topo, iperfClientArgv(kind, topo.serverIP, IPERF_PORT, opts.seconds, opts.udpRate), (opts.seconds + 20) * 1000);
    const secs = (performance.now() - t0) / 1000;
    const cores = busyCores(c0, await readCpu(), ncpu);
    if (kind === 'udp') {
      const u = parseIperfUdp(text);
      row.udp_gbps = u.gbps;
      row.udp_loss = u.loss;
      tally.gbits += u.gbps * u.seconds;
    } else {
      const t = parseIperfTcp(text);
      row[kind === 'tcp1' ? 'tcp1_gbps' : 'tcp8_gbps'] = t.gbps;
      tally.gbits += t.gbps * t.seconds;
      tally.tcpGbits += t.gbps * t.seconds;
      tally.wgTicks += pids.wg.length > 0 ? (await ticksOf(pids.wg)) - w0 : NaN;
      tally.ctlTicks += pids.control ? (await ticksOf(pids.control)) - k0 : NaN;
    }
    tally.coreSeconds += cores * secs;
    tally.extraCoreSeconds += Math.max(0, cores - baseline) * secs;
  } catch (err) {
    errors.push(`${label} ${kind}: ${(err as Error).message}`);
  }
  // iperf3 serves one test at a time; give it a moment to return to listening.
  await sleep(200);
}

/** Busy CPU-seconds per Gbit moved (= busy cores per Gbit/s) over a repeat's throughput runs, into `row`. */
function finishCpu(row: RepeatFigures, tally: CpuTally): void {
  // The excess variant subtracts what the host was busy with just before (other work on a shared host).
  if (tally.gbits > 0) {
    row.cpu_per_gbps = tally.coreSeconds / tally.gbits;
    row.cpu_excess_per_gbps = tally.extraCoreSeconds / tally.gbits;
  }
  if (tally.tcpGbits > 0 && Number.isFinite(tally.wgTicks)) row.wg_cpu_per_gbps = tally.wgTicks / CLK_TCK / tally.tcpGbits;
  if (tally.tcpGbits > 0 && Number.isFinite(tally.ctlTicks)) row.control_cpu_per_gbps = tally.ctlTicks / CLK_TCK / tally.tcpGbits;
}

/** The request/response run of one repeat into `row`; a failure is appended to `errors`. */
async function runRr(topo: Topology, opts: DatapathOptions, nodeBin: string, row: RepeatFigures, errors: string[], label: string): Promise<void> {
  try {
    const rr = JSON.parse(await inClient(topo, rrArgv(topo, nodeBin, opts.rrRounds), 60_000)) as { p50_us: number; p99_us: number };
    row.rr_p50_us = rr.p50_us;
    row.rr_p99_us = rr.p99_us;
  } catch (err) {
    errors.push(`${label} rr: ${(err as Error).message}`);
  }
}

/** The traffic of one mode: servers in the server pod, `repeat` rounds of every run from the client pod. */
async function measureMode(mode: Mode, topo: Topology, opts: DatapathOptions): Promise<ModeResult> {
  const nodeBin = opts.nodeBin ?? process.execPath;
  const ncpu = cpus().length;
  await prepareTraffic(mode, topo, nodeBin);
  const rows: RepeatFigures[] = [];
  const errors: string[] = [];
  for (let r = 0; r < opts.repeat; r++) {
    const row = emptyRow();
    const tally = newTally();
    const baseline = await baselineCores(ncpu);
    for (const kind of KINDS) await runKind(topo, kind, opts, ncpu, baseline, row, tally, errors, `repeat ${r + 1}`);
    finishCpu(row, tally);
    await runRr(topo, opts, nodeBin, row, errors, `repeat ${r + 1}`);
    rows.push(row);
    opts.progress?.(`bench: ${mode} repeat ${r + 1}/${opts.repeat}: ${FIGURES.map((f) => `${f}=${fmt(row[f])}`).join(' ')}`);
  }
  return withMtus(aggregate(mode, topo.mtu, rows, errors), topo);
}

function withMtus(r: ModeResult, topo: Topology): ModeResult {
  return topo.tunnelMtu === undefined ? r : { ...r, tunnel_mtu: topo.tunnelMtu };
}

/**
 * Sends `signal` to `pids` (weft's agents, started by this benchmark's lab). Errors are ignored: a
 * PID that is gone needs no pausing; `down` removes what is left.
 */
function signalAll(runner: Runner, pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      runner.kill(pid, signal);
    } catch {
      // gone already
    }
  }
}

/**
 * weft and wireguard-manual, paired: per repeat, each throughput run on one side directly followed
 * by the same run on the other (weft first in odd repeats, manual first in even ones, so a trend
 * within a pair does not favour one side), then request/response on both. weft's agents are
 * stopped (SIGSTOP) while the manual side runs and continued (SIGCONT) right after, also on failure,
 * with {@link RESUME_SETTLE_MS} for their catch-up before weft is measured again.
 */
async function measurePaired(weft: Topology, manual: Topology, opts: DatapathOptions): Promise<{ weft: ModeResult; manual: ModeResult; summary: WeftVsManual }> {
  const nodeBin = opts.nodeBin ?? process.execPath;
  const ncpu = cpus().length;
  const runner = opts.runner ?? systemRunner();
  await prepareTraffic('weft', weft, nodeBin);
  await prepareTraffic('wireguard-manual', manual, nodeBin);
  const sides = { weft: { topo: weft, rows: [] as RepeatFigures[], errors: [] as string[] }, manual: { topo: manual, rows: [] as RepeatFigures[], errors: [] as string[] } };
  const agentPids = (): number[] => weft.controlPids?.() ?? [];
  const paused = async <T>(fn: () => Promise<T>): Promise<T> => {
    const pids = opts.pauseAgents === 'never' ? [] : agentPids();
    signalAll(runner, pids, 'SIGSTOP');
    try {
      return await fn();
    } finally {
      signalAll(runner, pids, 'SIGCONT');
      // Resumed agents catch up on overdue timers (probes, gossip, resync): let that pass outside
      // weft's next measured run.
      if (pids.length > 0) await sleep(RESUME_SETTLE_MS);
    }
  };
  for (let r = 0; r < opts.repeat; r++) {
    const order = r % 2 === 0 ? (['weft', 'manual'] as const) : (['manual', 'weft'] as const);
    const rows = { weft: emptyRow(), manual: emptyRow() };
    const tallies = { weft: newTally(), manual: newTally() };
    const baseline = await baselineCores(ncpu);
    const label = `repeat ${r + 1}`;
    for (const kind of KINDS) {
      for (const side of order) {
        const s = sides[side];
        const run = () => runKind(s.topo, kind, opts, ncpu, baseline, rows[side], tallies[side], s.errors, label);
        await (side === 'manual' || opts.pauseAgents === 'all-runs' ? paused(run) : run());
      }
    }
    for (const side of order) {
      const s = sides[side];
      finishCpu(rows[side], tallies[side]);
      const run = () => runRr(s.topo, opts, nodeBin, rows[side], s.errors, label);
      await (side === 'manual' || opts.pauseAgents === 'all-runs' ? paused(run) : run());
      s.rows.push(rows[side]);
    }
    const ratio = (f: (typeof PAIRED_FIGURES)[number] | 'wg_cpu_per_gbps'): string => fmt(rows.weft[f] / rows.manual[f]);
    opts.progress?.(`bench: weft/manual pair ${r + 1}/${opts.repeat} (${order.join(' first, ')} second): ${[...PAIRED_FIGURES, 'wg_cpu_per_gbps' as const].map((f) => `${f} ${fmt(rows.weft[f])}/${fmt(rows.manual[f])} = ${ratio(f)}`).join(', ')}, weft agents ${fmt(rows.weft.control_cpu_per_gbps)} CPU s/Gbit`);
  }
  const w = withMtus(aggregate('weft', weft.mtu, sides.weft.rows, sides.weft.errors), weft);
  const m = withMtus(aggregate('wireguard-manual', manual.mtu, sides.manual.rows, sides.manual.errors), manual);
  return { weft: w, manual: m, summary: pairedSummary(sides.weft.rows, sides.manual.rows, { weft: weft.tunnelMtu ?? 0, manual: manual.tunnelMtu ?? 0 }, { weft: weft.mtu, manual: manual.mtu }) };
}

/**
 * The paired summary from the rows of weft and wireguard-manual taken pair by pair (row i of each is
 * one pair): per throughput figure, and for the WireGuard CPU per Gbit (without and with weft's
 * agents on weft's side), the median, min and max of `weft / manual`; null for a figure no pair
 * completed. Pure.
 */
export function pairedSummary(weft: readonly RepeatFigures[], manual: readonly RepeatFigures[], tunnelMtu: { weft: number; manual: number }, podMtu: { weft: number; manual: number }): WeftVsManual {
  const ratios = (num: readonly number[], den: readonly number[]): PairedRatio | null => {
    try {
      return pairedRatios(num, den);
    } catch {
      return null;
    }
  };
  const one = (f: (typeof PAIRED_FIGURES)[number] | 'wg_cpu_per_gbps'): PairedRatio | null => ratios(weft.map((x) => x[f]), manual.map((x) => x[f]));
  const withControl = (x: RepeatFigures): number => x.wg_cpu_per_gbps + (Number.isFinite(x.control_cpu_per_gbps) ? x.control_cpu_per_gbps : 0);
  return { method: 'paired-interleaved', pairs: Math.min(weft.length, manual.length), tunnel_mtu: tunnelMtu, pod_mtu: podMtu, tcp1_gbps: one('tcp1_gbps'), tcp8_gbps: one('tcp8_gbps'), udp_gbps: one('udp_gbps'), wg_cpu_per_gbps: one('wg_cpu_per_gbps'), wg_and_control_cpu_per_gbps: ratios(weft.map(withControl), manual.map(withControl)) };
}

function fmt(x: number): string {
  return Number.isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3)) : 'failed';
}

/**
 * One mode's result from its repeats: for every figure the median (under its own name), min and
 * max over the repeats that produced it; null when none did. Pure.
 */
export function aggregate(mode: Mode, mtu: number, rows: readonly RepeatFigures[], errors: readonly string[] = []): ModeResult {
  const r: ModeResult = { mode, mtu, repeats: rows.length, errors: [...errors] };
  for (const f of FIGURES) {
    let s: Summary | undefined;
    try {
      s = summarize(rows.map((x) => x[f]));
    } catch {
      s = undefined;
    }
    Object.assign(r, { [f]: s?.median ?? null, [`${f}_min`]: s?.min ?? null, [`${f}_max`]: s?.max ?? null });
  }
  return r;
}
