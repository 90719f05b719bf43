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
 * Every object is recorded by the lab host and removed in `finally`, also when a run fails.
 */
import { chmod, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabHost, checkRequirements, systemRunner, uniquePrefix, type NodeHandle, type NsTarget, type Runner } from '../../src/lab/host.ts';
import { Lab, underlayIP, underlaySubnet, waitFor } from '../../src/lab/lab.ts';
import { busyCores, readCpu, type CpuSample } from './cpu.ts';
import { iperfClientArgv, parseIperfTcp, parseIperfUdp } from './iperf.ts';
import { summarize, type Summary } from './stats.ts';

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
}

/** The figure names of {@link RepeatFigures}, in report order. */
export const FIGURES = ['tcp1_gbps', 'tcp8_gbps', 'udp_gbps', 'udp_loss', 'rr_p50_us', 'rr_p99_us', 'cpu_per_gbps', 'cpu_excess_per_gbps'] as const;

/** One mode's result: each figure's median (under its own name) plus `<figure>_min` / `<figure>_max`. */
export type ModeResult = { mode: Mode; mtu: number; repeats: number; errors: string[] } & Record<string, unknown>;

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
  readonly prefixBase?: string;
  readonly runner?: Runner;
  readonly nodeBin?: string;
  readonly progress?: (msg: string) => void;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const IPERF_PORT = 5201;
const RR_PORT = 7070;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a built topology offers the traffic runner. */
interface Topology {
  readonly host: LabHost;
  readonly client: NsTarget;
  readonly server: NsTarget;
  readonly serverIP: string;
  readonly mtu: number;
  /** Label prefix under which processes are spawned (`spawn`). */
  spawn(target: NsTarget, argv: readonly string[], label: string): Promise<number>;
}

/** Picks the WireGuard backend the encrypted modes use: kernel when the module is loaded, else userspace. */
export async function chooseBackend(runner: Runner = systemRunner()): Promise<'kernel' | 'userspace'> {
  const r = await checkRequirements(runner, 'auto');
  return r.backend === 'kernel' ? 'kernel' : 'userspace';
}

/**
 * Builds each mode in turn, runs `repeat` rounds of the traffic, and tears the mode down before the
 * next one. A failed mode is reported with its error and NaN figures; it does not stop the others.
 */
export async function runDatapath(opts: DatapathOptions): Promise<ModeResult[]> {
  const out: ModeResult[] = [];
  for (const mode of opts.modes) {
    const progress = opts.progress ?? (() => {});
    progress(`bench: datapath mode ${mode}`);
    const prefix = uniquePrefix(opts.prefixBase ?? 'wbn');
    let lab: Lab | undefined;
    let host: LabHost | undefined;
    try {
      let topo: Topology;
      if (mode === 'weft') {
        lab = new Lab({ prefix, runner: opts.runner, nodeBin: opts.nodeBin, agentLogLevel: 'warn', progress });
        topo = await weftTopology(lab, opts.backend);
      } else {
        host = new LabHost({ prefix, runner: opts.runner, warn: progress });
        topo = await manualTopology(host, mode, opts.backend);
      }
      out.push(await measureMode(mode, topo, opts));
    } catch (err) {
      progress(`bench: mode ${mode} failed: ${(err as Error).message}`);
      out.push(failedMode(mode, opts.repeat, `${mode}: ${(err as Error).message}`));
    } finally {
      await (lab ? lab.down() : host?.down())?.catch((e: unknown) => progress(`bench: removing ${prefix}: ${(e as Error).message}`));
    }
  }
  return out;
}

function failedMode(mode: Mode, repeats: number, error: string): ModeResult {
  const r: ModeResult = { mode, mtu: 0, repeats, errors: [error] };
  for (const f of FIGURES) Object.assign(r, { [f]: null, [`${f}_min`]: null, [`${f}_max`]: null });
  return r;
}

/** The real lab: two agents, one pod each; waits until each agent has the other as a WireGuard peer. */
async function weftTopology(lab: Lab, backend: 'kernel' | 'userspace'): Promise<Topology> {
  const meta = await lab.up({ nodes: 2, podsPerNode: 1, backend });
  await waitFor('both agents to have their peer', 60_000, async () => {
    const s = await lab.status();
    return s.nodes.every((n) => n.ready && n.peers >= 1) ? true : undefined;
  }, 300);
  const [a, b] = [meta.pods.find((p) => p.node === meta.nodes[0]!.name)!, meta.pods.find((p) => p.node === meta.nodes[1]!.name)!];
  const mtuOut = await lab.exec(a.netns, ['cat', `/sys/class/net/eth0/mtu`], { check: false });
  return {
    host: lab.host,
    client: { netns: a.netns },
    server: { netns: b.netns },
    serverIP: b.ip,
    mtu: Number(mtuOut.stdout.trim()) || 0,
    spawn: (t, argv, label) => lab.host.spawn(t, argv, { label, logFile: join(lab.host.dir, `${label}.log`) }),
  };
}

/**
 * Builds the hand-made topologies: underlay bridge, nodes (net + mount namespaces, so each has its
 * own /run/wireguard), a pod per node on a veth whose node side is the gateway 10.244.i.1/24.
 */
async function manualTopology(host: LabHost, mode: Exclude<Mode, 'weft'>, backend: 'kernel' | 'userspace'): Promise<Topology> {
  await host.init();
  const ul = `${host.prefix}-ul`;
  const subnet = underlaySubnet(host.prefix);
  const mtu = mode === 'plain' ? 1500 : mode === 'vxlan' ? 1450 : 1420;
  await host.addNetns(ul);
  await host.addBridge('br0', ul);
  const nodes: NodeHandle[] = [];
  for (const i of [1, 2]) {
    const name = `${host.prefix}-n${i}`;
    const node = await host.addNode(name);
    nodes.push(node);
    await host.exec(node, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.disable_ipv6=1']);
    await host.addVeth({ name: `n${i}`, netns: ul }, { name: 'eth0', netns: name });
    await host.exec({ netns: ul }, ['ip', 'link', 'set', `n${i}`, 'master', 'br0']);
    await host.addAddress(name, 'eth0', `${underlayIP(subnet, i)}/24`);
    const pod = `${name}-p1`;
    await host.addNetns(pod);
    await host.addVeth({ name: 'pod0', netns: name }, { name: 'eth0', netns: pod });
    await host.addAddress(name, 'pod0', `10.244.${i}.1/24`);
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
      await host.exec(n, ['ip', 'link', 'set', 'vx0', 'mtu', '1450', 'up']);
      await host.exec(n, ['ip', 'addr', 'add', `10.245.0.${i}/24`, 'dev', 'vx0']);
      await host.exec(n, ['ip', 'route', 'add', `10.244.${j}.0/24`, 'via', `10.245.0.${j}`, 'dev', 'vx0']);
    }
  } else {
    await manualWireGuard(host, nodes, ip, backend);
  }
  return {
    host,
    client: { netns: `${nodes[0]!.name}-p1` },
    server: { netns: `${nodes[1]!.name}-p1` },
    serverIP: '10.244.2.2',
    mtu,
    spawn: (t, argv, label) => host.spawn(t, argv, { label, logFile: join(host.dir, `${label}.log`) }),
  };
}

/** WireGuard by hand: `wg0` per node (wireguard-go in the node's mount namespace, or the kernel), keys from `wg genkey`, one peer each. */
async function manualWireGuard(host: LabHost, nodes: NodeHandle[], ip: (i: number) => string, backend: 'kernel' | 'userspace'): Promise<void> {
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
    await host.exec(n, ['ip', 'link', 'set', 'wg0', 'mtu', '1420', 'up']);
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

/** The traffic of one mode: servers in the server pod, `repeat` rounds of every run from the client pod. */
async function measureMode(mode: Mode, topo: Topology, opts: DatapathOptions): Promise<ModeResult> {
  const nodeBin = opts.nodeBin ?? process.execPath;
  const ncpu = cpus().length;
  await topo.spawn(topo.server, ['iperf3', '-s', '-p', String(IPERF_PORT)], `iperf3-server`);
  await topo.spawn(topo.server, [nodeBin, join(HERE, 'rr.ts'), 'serve', String(RR_PORT)], `rr-server`);
  // The path is up when a short request/response run gets through (first handshake included).
  const rrArgv = (rounds: number): string[] => [nodeBin, join(HERE, 'rr.ts'), 'client', topo.serverIP, String(RR_PORT), '--rounds', String(rounds), '--warmup', rounds > 10 ? '100' : '0'];
  await waitFor(`${mode}: the path between the pods`, 30_000, async () => {
    await inClient(topo, rrArgv(10), 8000);
    return true;
  }, 300);
  await waitFor(`${mode}: the iperf3 server`, 10_000, async () => {
    const r = await topo.host.exec(topo.server, ['ss', '-ltn', `sport = :${IPERF_PORT}`], { check: false });
    return r.stdout.includes(`:${IPERF_PORT}`) ? true : undefined;
  }, 100);

  const rows: RepeatFigures[] = [];
  const errors: string[] = [];
  const timeout = (opts.seconds + 20) * 1000;
  for (let r = 0; r < opts.repeat; r++) {
    const row: RepeatFigures = { tcp1_gbps: NaN, tcp8_gbps: NaN, udp_gbps: NaN, udp_loss: NaN, rr_p50_us: NaN, rr_p99_us: NaN, cpu_per_gbps: NaN, cpu_excess_per_gbps: NaN };
    // Baseline busy CPU (everything else on this host) over a short window just before the runs.
    const b0 = await readCpu();
    await sleep(500);
    const baseline = busyCores(b0, await readCpu(), ncpu);
    let extraCoreSeconds = 0;
    let coreSeconds = 0;
    let gbits = 0;
    for (const kind of ['tcp1', 'tcp8', 'udp'] as const) {
      const c0: CpuSample = await readCpu();
      const t0 = performance.now();
      try {
        const text = await inClient(topo, iperfClientArgv(kind, topo.serverIP, IPERF_PORT, opts.seconds, opts.udpRate), timeout);
        const secs = (performance.now() - t0) / 1000;
        const cores = busyCores(c0, await readCpu(), ncpu);
        if (kind === 'udp') {
          const u = parseIperfUdp(text);
          row.udp_gbps = u.gbps;
          row.udp_loss = u.loss;
          gbits += u.gbps * u.seconds;
        } else {
          const t = parseIperfTcp(text);
          row[kind === 'tcp1' ? 'tcp1_gbps' : 'tcp8_gbps'] = t.gbps;
          gbits += t.gbps * t.seconds;
        }
        coreSeconds += cores * secs;
        extraCoreSeconds += Math.max(0, cores - baseline) * secs;
      } catch (err) {
        errors.push(`repeat ${r + 1} ${kind}: ${(err as Error).message}`);
      }
      // iperf3 serves one test at a time; give it a moment to return to listening.
      await sleep(200);
    }
    // Busy CPU-seconds per Gbit moved = busy cores per Gbit/s, over the three throughput runs. The
    // excess variant subtracts what the host was busy with just before (other work on a shared host).
    if (gbits > 0) {
      row.cpu_per_gbps = coreSeconds / gbits;
      row.cpu_excess_per_gbps = extraCoreSeconds / gbits;
    }
    try {
      const rr = JSON.parse(await inClient(topo, rrArgv(opts.rrRounds), 60_000)) as { p50_us: number; p99_us: number };
      row.rr_p50_us = rr.p50_us;
      row.rr_p99_us = rr.p99_us;
    } catch (err) {
      errors.push(`repeat ${r + 1} rr: ${(err as Error).message}`);
    }
    rows.push(row);
    opts.progress?.(`bench: ${mode} repeat ${r + 1}/${opts.repeat}: ${FIGURES.map((f) => `${f}=${fmt(row[f])}`).join(' ')}`);
  }
  return aggregate(mode, topo.mtu, rows, errors);
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
