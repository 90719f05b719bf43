/**
 * `weft verify` (issue 9): the evidence that pod traffic is encrypted on this node. Two checks:
 * every remote pod CIDR and the cluster CIDR route into the WireGuard interface (kernel route
 * lookups plus a scan of every routing table for a more specific route that bypasses it), and a
 * bounded capture on the underlay interfaces holds no packet whose IP header carries a pod address.
 * The judgements are pure (route tables and captures in, problems out); the I/O (`ip -j`, tcpdump)
 * sits behind the small {@link VerifyIo} interface.
 */
import { spawn, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAddr } from '../ipam/cidr.ts';
import { cidrContains, cidrHas, formatCidr, tryParseCIDR, tryParseIP, type Cidr } from '../plan/cidr.ts';
import { classifyCapture, parsePcap, type CaptureSummary, type Frame } from '../lab/pcap.ts';

/** Verification could not run (tcpdump missing or failing, `ip` unreadable): never a pass. */
export class VerifyError extends Error {
  override name = 'VerifyError';
}

/** One route as `ip -j route show table all` prints it (only the fields used). */
export interface RouteEntry {
  readonly dst: string;
  readonly dev?: string;
  readonly type?: string;
  readonly table?: string;
  readonly gateway?: string;
  readonly protocol?: string;
}

/** The kernel's answer to `ip -j route get <addr>` for a probe address of `cidr`. */
export interface RouteLookup {
  readonly cidr: string;
  readonly addr: string;
  readonly dev?: string;
  readonly type?: string;
  /** Set when the lookup failed (e.g. "Network is unreachable"). */
  readonly error?: string;
}

/** A route that lets pod traffic bypass the WireGuard interface. */
export interface RouteProblem {
  readonly cidr: string;
  readonly detail: string;
}

/** What the route check needs to know about this node. */
export interface RouteScope {
  /** The WireGuard interface (e.g. weft0). */
  readonly ifname: string;
  /** Cluster CIDRs: everything in them, except this node's own blocks, must go into `ifname`. */
  readonly clusterCIDRs: readonly string[];
  /** Remote pod CIDRs (the peers' allowed IPs). */
  readonly remoteCIDRs: readonly string[];
  /** This node's own pod blocks (gateway on weftgw0, pods' /32 routes on their routed veths; exempt). */
  readonly localCIDRs: readonly string[];
}

/** Route types that drop traffic: fail closed, never a leak. */
const DROP_TYPES = new Set(['unreachable', 'blackhole', 'prohibit']);
/** Route types that describe local reception, not forwarding. */
const LOCAL_TYPES = new Set(['local', 'broadcast', 'multicast', 'anycast', 'nat']);

function parseDst(dst: string): Cidr | null {
  if (dst === 'default') return null;
  const c = tryParseCIDR(dst, false);
  if (c) return c;
  const ip = tryParseIP(dst);
  return ip ? { family: ip.family, base: ip.value, prefix: ip.family === 4 ? 32 : 128 } : null;
}

function parseAll(list: readonly string[]): Cidr[] {
  return list.map((s) => tryParseCIDR(s, false)).filter((c): c is Cidr => c !== null);
}

/**
 * Probe addresses of a CIDR: its first host, middle and last host (network and broadcast
 * excluded where the block has them), minus those inside `exclude` (this node's own blocks).
 */
export function probeAddresses(cidr: string, exclude: readonly string[] = []): string[] {
  const c = tryParseCIDR(cidr, false);
  if (!c) return [];
  const bits = c.family === 4 ? 32 : 128;
  const size = 1n << BigInt(bits - c.prefix);
  const base = c.base & ~(size - 1n);
  const candidates = size <= 2n ? [base, base + size - 1n] : [base + 1n, base + size / 2n, base + size - 2n];
  const ex = parseAll(exclude);
  const out: string[] = [];
  for (const v of candidates) {
    if (ex.some((e) => e.family === c.family && v >= e.base && v < e.base + (1n << BigInt(bits - e.prefix)))) continue;
    const text = formatAddr(c.family, v);
    if (!out.includes(text)) out.push(text);
  }
  return out;
}

/**
 * Judges the routing of pod traffic. A problem is: a lookup of a remote or cluster probe address
 * that does not end in `ifname` (or a drop route), or any unicast route in any table whose
 * destination lies inside a cluster or remote CIDR (outside this node's own blocks) and leaves
 * through another device. Pure.
 */
export function checkRoutes(scope: RouteScope, routes: readonly RouteEntry[], lookups: readonly RouteLookup[]): RouteProblem[] {
  const problems: RouteProblem[] = [];
  const guarded = parseAll([...scope.clusterCIDRs, ...scope.remoteCIDRs]);
  const local = parseAll(scope.localCIDRs);
  for (const l of lookups) {
    if (l.error !== undefined) {
      problems.push({ cidr: l.cidr, detail: `route lookup of ${l.addr} failed: ${l.error.slice(0, 200)}` });
    } else if (l.type !== undefined && DROP_TYPES.has(l.type)) {
      continue;
    } else if (l.dev !== scope.ifname) {
      problems.push({ cidr: l.cidr, detail: `${l.addr} routes via ${l.dev ?? 'no device'}${l.type ? ` (${l.type})` : ''}, not ${scope.ifname}` });
    }
  }
  for (const r of routes) {
    const type = r.type ?? 'unicast';
    if (DROP_TYPES.has(type) || LOCAL_TYPES.has(type)) continue;
    const dst = parseDst(r.dst);
    if (!dst || r.dev === scope.ifname) continue;
    if (local.some((l) => cidrContains(l, dst))) continue;
    const inside = guarded.find((g) => cidrContains(g, dst));
    if (!inside) continue;
    const where = `${r.dev ? `dev ${r.dev}` : 'no device'}${r.gateway ? ` via ${r.gateway}` : ''}${r.table ? ` table ${r.table}` : ''}${r.protocol ? ` proto ${r.protocol}` : ''}`;
    problems.push({ cidr: formatCidr(inside), detail: `route ${formatCidr(dst)} ${where} bypasses ${scope.ifname}` });
  }
  return problems;
}

/** Interfaces carrying any of `addrs`, from `ip -j addr show` output. Pure. */
export function interfacesWithAddresses(ipAddrJson: unknown, addrs: readonly string[]): string[] {
  if (!Array.isArray(ipAddrJson)) return [];
  const out: string[] = [];
  for (const link of ipAddrJson as Array<{ ifname?: unknown; addr_info?: Array<{ local?: unknown }> }>) {
    if (typeof link?.ifname !== 'string' || !Array.isArray(link.addr_info)) continue;
    if (link.addr_info.some((a) => typeof a?.local === 'string' && addrs.includes(a.local)) && !out.includes(link.ifname)) out.push(link.ifname);
  }
  return out;
}

/**
 * Frames whose IP header (IPv4 or IPv6) carries an address inside `cidrs`, with up to 10 samples.
 * Used instead of the lab classifier's count, which only knows IPv4. Pure.
 */
export function podAddressFrames(frames: readonly Frame[], cidrs: readonly string[]): { count: number; samples: string[] } {
  const parsed = parseAll(cidrs);
  const hit = (a: string | undefined): boolean => {
    const ip = a === undefined ? null : tryParseIP(a);
    return ip !== null && parsed.some((c) => cidrHas(c, ip.family, ip.value));
  };
  let count = 0;
  const samples: string[] = [];
  for (const f of frames) {
    if (!hit(f.src) && !hit(f.dst)) continue;
    count++;
    if (samples.length < 10) samples.push(`proto ${f.proto} ${f.src}${f.sport !== undefined ? `:${f.sport}` : ''} -> ${f.dst}${f.dport !== undefined ? `:${f.dport}` : ''}`);
  }
  return { count, samples };
}

/** One underlay interface's capture verdict. */
export interface InterfaceCapture {
  readonly ifname: string;
  readonly summary: CaptureSummary;
}

/** The whole verification result (`weft verify --json` prints it). */
export interface VerifyReport {
  readonly ok: boolean;
  readonly seconds: number;
  readonly ifname: string;
  readonly clusterCIDRs: readonly string[];
  readonly remoteCIDRs: readonly string[];
  readonly localCIDRs: readonly string[];
  readonly routeProblems: readonly RouteProblem[];
  readonly lookups: readonly RouteLookup[];
  readonly captures: readonly InterfaceCapture[];
  /** Packets with a pod address in their IP header, summed over the interfaces. */
  readonly leakedPackets: number;
}

/** Combines route problems and captures into a report; ok only when nothing leaked and every route is right. Pure. */
export function buildReport(scope: RouteScope, seconds: number, routeProblems: readonly RouteProblem[], lookups: readonly RouteLookup[], captures: readonly InterfaceCapture[]): VerifyReport {
  const leakedPackets = captures.reduce((n, c) => n + c.summary.podAddress, 0);
  return {
    ok: routeProblems.length === 0 && leakedPackets === 0 && captures.length > 0,
    seconds, ifname: scope.ifname, clusterCIDRs: scope.clusterCIDRs, remoteCIDRs: scope.remoteCIDRs, localCIDRs: scope.localCIDRs,
    routeProblems, lookups, captures, leakedPackets,
  };
}

/** Human rendering of a report. Pure. */
export function renderVerify(r: VerifyReport): string {
  const lines: string[] = [];
  lines.push(`routes: ${r.lookups.length} lookups into ${r.ifname} for ${r.remoteCIDRs.length} remote pod CIDRs and cluster ${r.clusterCIDRs.join(', ') || '-'}`);
  if (r.routeProblems.length === 0) lines.push('  ok: every remote pod CIDR and the cluster CIDR route into the WireGuard interface');
  for (const p of r.routeProblems) lines.push(`  FAIL ${p.cidr}: ${p.detail}`);
  for (const c of r.captures) {
    const s = c.summary;
    lines.push(`capture ${c.ifname} (${r.seconds}s): ${s.total} packets, ${s.wireguard} WireGuard (${s.wireguardData} data), ${s.gossip} gossip, ${s.arp} ARP, ${s.other} other, ${s.podAddress} with a pod address`);
    for (const x of s.podAddressSamples) lines.push(`  FAIL plaintext pod packet: ${x}`);
  }
  if (r.captures.length === 0) lines.push('capture: no underlay interface captured');
  lines.push(r.ok ? 'verify: ok, no plaintext pod traffic' : `verify: FAILED (${r.routeProblems.length} route problems, ${r.leakedPackets} plaintext pod packets)`);
  return `${lines.join('\n')}\n`;
}

/** Result of one command. */
export interface CommandOutput {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The I/O verification needs; {@link systemVerifyIo} is the real one. */
export interface VerifyIo {
  /** Runs a short command (bounded output and time). */
  run(argv: readonly string[]): Promise<CommandOutput>;
  /** Captures on `ifname` for `seconds` (bounded packet count and snap length) and returns the pcap bytes. */
  capture(ifname: string, seconds: number, maxPackets: number): Promise<Uint8Array>;
}

/** Real I/O: `ip` and `tcpdump` from PATH; tcpdump is stopped by PID (it is our own child). */
export function systemVerifyIo(): VerifyIo {
  return {
    run: (argv) =>
      new Promise((resolve) => {
        execFile(argv[0]!, argv.slice(1), { timeout: 10_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
          resolve({ code, stdout, stderr: stderr || (err && code === 1 && !stderr ? err.message : '') });
        });
      }),
    async capture(ifname, seconds, maxPackets) {
      const dir = await mkdtemp(join(tmpdir(), 'weft-verify-'));
      const file = join(dir, 'capture.pcap');
      try {
        const child = spawn('tcpdump', ['-i', ifname, '-n', '-U', '-p', '-s', '128', '-c', String(maxPackets), '-Z', 'root', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => {
          if (stderr.length < 4096) stderr += d.toString();
        });
        const exited = new Promise<number | null>((resolve) => {
          child.on('exit', (code) => resolve(code));
          child.on('error', (err) => {
            stderr += err.message;
            resolve(-1);
          });
        });
        // Wait for tcpdump to open the interface (it writes the file header), bounded.
        const startBy = Date.now() + 5000;
        let early: number | null | undefined;
        while (!existsSync(file) && Date.now() < startBy) {
          early = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
          if (early !== undefined) break;
        }
        if (early !== undefined || !existsSync(file)) {
          if (child.exitCode === null && child.pid) child.kill('SIGTERM');
          throw new VerifyError(`verify: tcpdump on ${ifname} did not start: ${stderr.trim().slice(0, 300) || `exit ${early}`}`);
        }
        const done = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), seconds * 1000))]);
        if (!done) {
          child.kill('SIGTERM');
          const stopped = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 5000))]);
          if (!stopped) child.kill('SIGKILL');
          await exited;
        }
        return new Uint8Array(await readFile(file));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** What {@link runVerify} is asked to check. */
export interface VerifyOptions extends RouteScope {
  readonly seconds: number;
  /** Underlay interfaces to capture on. */
  readonly underlays: readonly string[];
  readonly wgPorts: readonly number[];
  readonly meshPort: number;
  /** Bound on captured packets per interface; default 200000. */
  readonly maxPackets?: number;
}

function parseJson(out: CommandOutput, what: string): unknown {
  if (out.code !== 0) throw new VerifyError(`verify: ${what} failed (exit ${out.code}): ${out.stderr.trim().slice(0, 300)}`);
  try {
    return JSON.parse(out.stdout || '[]');
  } catch (err) {
    throw new VerifyError(`verify: ${what} printed unreadable JSON`, { cause: err });
  }
}

/** Looks up every probe address of the remote and cluster CIDRs in the kernel. */
export async function lookupRoutes(io: VerifyIo, scope: RouteScope): Promise<RouteLookup[]> {
  const cidrs = [...new Set([...scope.remoteCIDRs, ...scope.clusterCIDRs])];
  const out: RouteLookup[] = [];
  for (const cidr of cidrs) {
    for (const addr of probeAddresses(cidr, scope.localCIDRs)) {
      const r = await io.run(['ip', '-j', 'route', 'get', addr]);
      if (r.code !== 0) {
        out.push({ cidr, addr, error: r.stderr.trim() || `exit ${r.code}` });
        continue;
      }
      const rows = parseJson(r, `ip route get ${addr}`) as Array<{ dev?: string; type?: string }>;
      const row = Array.isArray(rows) ? rows[0] : undefined;
      out.push({ cidr, addr, dev: typeof row?.dev === 'string' ? row.dev : undefined, type: typeof row?.type === 'string' ? row.type : undefined });
    }
  }
  return out;
}

/** Reads every IPv4 and IPv6 route of every table. */
export async function readRoutes(io: VerifyIo): Promise<RouteEntry[]> {
  const out: RouteEntry[] = [];
  for (const fam of ['-4', '-6']) {
    const rows = parseJson(await io.run(['ip', '-j', fam, 'route', 'show', 'table', 'all']), `ip ${fam} route show table all`);
    if (!Array.isArray(rows)) continue;
    for (const r of rows as Array<Record<string, unknown>>) {
      if (typeof r?.dst !== 'string') continue;
      const s = (k: string): string | undefined => (typeof r[k] === 'string' || typeof r[k] === 'number' ? String(r[k]) : undefined);
      out.push({ dst: r.dst, dev: s('dev'), type: s('type'), table: s('table'), gateway: s('gateway'), protocol: s('protocol') });
    }
  }
  return out;
}

/** Runs the route check and the captures (in parallel, one tcpdump per underlay) and builds the report. */
export async function runVerify(io: VerifyIo, opts: VerifyOptions): Promise<VerifyReport> {
  if (!(opts.seconds > 0 && opts.seconds <= 3600)) throw new VerifyError(`verify: --seconds must be in 1..3600, got ${opts.seconds}`);
  if (opts.underlays.length === 0) throw new VerifyError('verify: no underlay interface to capture on (give --underlay)');
  const podCIDRs = [...new Set([...opts.clusterCIDRs, ...opts.remoteCIDRs, ...opts.localCIDRs])];
  const capturing = Promise.all(
    opts.underlays.map(async (ifname) => {
      const bytes = await io.capture(ifname, opts.seconds, opts.maxPackets ?? 200_000);
      let frames;
      try {
        frames = parsePcap(bytes);
      } catch (err) {
        throw new VerifyError(`verify: cannot read the capture of ${ifname}: ${(err as Error).message}`, { cause: err });
      }
      const pods = podAddressFrames(frames, podCIDRs);
      const summary = classifyCapture(frames, { wgPorts: opts.wgPorts, meshPort: opts.meshPort, podCIDRs });
      return { ifname, summary: { ...summary, podAddress: pods.count, podAddressSamples: pods.samples } };
    }),
  );
  // Route state is read while the capture runs, so a leak route present during the capture is seen.
  const [lookups, routes] = await Promise.all([lookupRoutes(io, opts), readRoutes(io)]);
  const captures = await capturing;
  return buildReport(opts, opts.seconds, checkRoutes(opts, routes, lookups), lookups, captures);
}
