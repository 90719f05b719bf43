/**
 * Netlink work for pod attachments, behind the small {@link NetnsOps} interface the handler uses
 * (unit tests pass a fake). Pods are attached with routed veths, as Calico and Cilium do: no bridge;
 * the node routes each pod address (`/32`, `/128`) to its host veth, and the gateway address lives
 * on a separate device (`weftgw0`, see devices.ts). The real implementation drives iproute2 in batch
 * mode: one `ip -batch` in the node's namespace creates the veth pair with the pod end created
 * directly inside the pod namespace under its final name plus the host routes and neighbours, and
 * one `nsenter --net=<path> ip -batch` configures the pod side. Two process spawns per ADD keeps ADD
 * latency low without a netlink binding that can enter a netns.
 */
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';

/** What ADD sets up for one attachment. */
export interface PodLinkSpec {
  /** Path of the pod's network namespace (CNI_NETNS). */
  readonly netns: string;
  /** Interface name inside the pod (CNI_IFNAME). */
  readonly ifname: string;
  /** Host-side veth name (see `hostVethName`). */
  readonly hostIfname: string;
  /** Pod addresses as host routes: `a.b.c.d/32` or `x::y/128`, at most one per family. */
  readonly addresses: readonly string[];
  /** The gateway of each address's block (same index), without prefix: the pod's next hop. */
  readonly gateways: readonly string[];
  readonly mtu: number;
  readonly hostMac: string;
  readonly podMac: string;
}

/** The node-side and pod-side network operations the CNI handler needs. All are idempotent where stated. */
export interface NetnsOps {
  /**
   * Creates or adopts the gateway device (a `dummy` link; an `ifb` link on kernels without dummy)
   * with the gateway address(es) and `mtu`, up. Idempotent. Addresses of the same families that
   * are not listed are removed (a lost block's gateway); other families and link-local stay.
   */
  ensureGateway(dev: string, gatewayCidrs: readonly string[], mtu: number): Promise<void>;
  /** Deletes a node-side device (the gateway device, the legacy bridge); succeeds when it is absent. */
  removeDevice(dev: string): Promise<void>;
  /**
   * Deletes bridge `name` when it exists, is a bridge, and no port is left on it (the legacy pod
   * bridge after its last pod restarted). Resolves to false while ports are left, else true (also
   * when absent, or when `name` is not a bridge, which is left alone).
   */
  removeIdleBridge(name: string): Promise<boolean>;
  /**
   * Creates the routed veth pair: pod side `/32` (`/128`) addresses, a scope-link route to the
   * gateway, the default route via it and a permanent neighbour entry for it; host side the host
   * route to each address and a permanent neighbour entry for it. On failure leaves nothing behind.
   */
  addPod(spec: PodLinkSpec): Promise<void>;
  /** Removes the pair (via its host end; its routes and neighbours go with it); succeeds when it or the pod namespace is already gone. */
  delPod(hostIfname: string): Promise<void>;
  /**
   * Verifies both sides: in the pod, interface present and up, addresses present, the gateway's
   * scope-link route and the default route via it; on the node, the host route of every address
   * through the host veth. Resolves to a list of problems (empty = healthy).
   */
  checkPod(spec: Pick<PodLinkSpec, 'netns' | 'ifname' | 'hostIfname' | 'addresses' | 'gateways'>): Promise<string[]>;
}

/** An `ip`/`nsenter` invocation failed. The message carries the command and its stderr. */
export class NetnsError extends Error {
  override name = 'NetnsError';
  /** True when the target (device or namespace) does not exist. */
  readonly notFound: boolean;
  constructor(msg: string, notFound: boolean, options?: { cause?: unknown }) {
    super(msg, options);
    this.notFound = notFound;
  }
}

/** Options of {@link createIprouteNetnsOps}. */
export interface IprouteOptions {
  /** `ip` binary (default `ip`, found on PATH). */
  readonly ip?: string;
  /** `nsenter` binary (default `nsenter`). */
  readonly nsenter?: string;
  /** Per-command timeout, ms (default 10 s). */
  readonly timeoutMs?: number;
  /**
   * Path of the node's network namespace when it is not the caller's own (tests and the bench run
   * the handler for a simulated node from the host); host-side commands then run through nsenter.
   */
  readonly hostNetns?: string;
}

const NOT_FOUND = /Cannot find device|does not exist|No such file or directory|Cannot open network namespace/;

/** Rejects names that could smuggle extra words into an `ip -batch` line. */
function safe(word: string, what: string): string {
  if (typeof word !== 'string' || word.length === 0 || word.length > 4096 || /[\s"'\\#;]/.test(word)) {
    throw new NetnsError(`netns: unsafe ${what} ${JSON.stringify(String(word).slice(0, 64))}`, false);
  }
  return word;
}

/** The real {@link NetnsOps} on iproute2 + util-linux nsenter. */
export function createIprouteNetnsOps(opts: IprouteOptions = {}): NetnsOps {
  const ip = opts.ip ?? 'ip';
  const nsenter = opts.nsenter ?? 'nsenter';
  const timeout = opts.timeoutMs ?? 10_000;

  const run = (cmd: string, args: readonly string[], input?: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('error', (e) => reject(new NetnsError(`netns: ${cmd}: ${e.message}`, false, { cause: e })));
      child.on('close', (code, signal) => {
        if (code === 0) return resolve(out);
        const text = err.trim().split('\n').slice(0, 5).join('; ') || `exit ${code ?? signal}`;
        reject(new NetnsError(`netns: ${cmd} ${args.join(' ')}: ${text}`, NOT_FOUND.test(err)));
      });
      child.stdin.on('error', () => {}); // a command that dies early closes stdin; its exit code tells
      child.stdin.end(input ?? '');
    });

  // Host-side `ip`: directly, or through nsenter when the node namespace is not ours.
  const host = (args: readonly string[], input?: string) =>
    opts.hostNetns ? run(nsenter, [`--net=${safe(opts.hostNetns, 'host netns')}`, '--', ip, ...args], input) : run(ip, args, input);
  const batchHost = (lines: string[]) => host(['-batch', '-'], `${lines.join('\n')}\n`);
  const batchPod = (netns: string, lines: string[], json = false) =>
    run(nsenter, [`--net=${netns}`, '--', ip, ...(json ? ['-j'] : []), '-batch', '-'], `${lines.join('\n')}\n`);

  // The gateway device's kind: dummy where the kernel has it, else ifb (also drops what it is
  // sent). Found on first creation; adopting an existing device never needs it.
  let gatewayKind: 'dummy' | 'ifb' = 'dummy';

  const removeDevice = async (dev: string, what = 'device'): Promise<void> => {
    try {
      await host(['link', 'del', safe(dev, what)]);
    } catch (err) {
      if (!(err instanceof NetnsError && err.notFound)) throw err;
    }
  };
  const hostLen = (a: string) => (a.includes(':') ? 128 : 32);
  const bare = (a: string) => a.split('/')[0]!;

  return {
    async ensureGateway(dev, gatewayCidrs, mtu) {
      safe(dev, 'gateway device');
      let present: { addr_info?: { local: string; prefixlen: number }[] }[] | undefined;
      try {
        present = JSON.parse(await host(['-j', 'addr', 'show', 'dev', dev]));
      } catch (err) {
        if (!(err instanceof NetnsError && err.notFound)) throw err;
      }
      const have = new Set((present?.[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
      const want = new Set(gatewayCidrs.map((g) => safe(g, 'gateway')));
      const families = new Set(gatewayCidrs.map((g) => g.includes(':')));
      const lines: string[] = [];
      // A gateway of a block this node no longer owns (lost claim) must go: its connected route
      // would keep that block's traffic on this node instead of the tunnel. Other families and
      // link-local stay.
      for (const h of have) {
        if (!want.has(h) && families.has(h.includes(':')) && !h.startsWith('fe80:')) lines.push(`addr del ${h} dev ${dev}`);
      }
      for (const g of want) if (!have.has(g)) lines.push(`addr add ${g} dev ${dev}${g.includes(':') ? ' nodad' : ''}`);
      lines.push(`link set ${dev} mtu ${mtu} up`);
      if (present) return void (await batchHost(lines));
      try {
        await batchHost([`link add ${dev} mtu ${mtu} type ${gatewayKind}`, ...lines]);
      } catch (err) {
        if (gatewayKind !== 'dummy' || !/Unknown device type/.test((err as Error).message)) throw err;
        gatewayKind = 'ifb';
        await batchHost([`link add ${dev} mtu ${mtu} type ${gatewayKind}`, ...lines]);
      }
    },

    removeDevice,

    async removeIdleBridge(name) {
      safe(name, 'bridge');
      let links: { ifname?: string; linkinfo?: { info_kind?: string } }[];
      try {
        links = JSON.parse(await host(['-j', '-d', 'link', 'show', 'dev', name]));
      } catch (err) {
        if (err instanceof NetnsError && err.notFound) return true;
        throw err;
      }
      if (links[0]?.linkinfo?.info_kind !== 'bridge') return true; // not a bridge: nothing of ours to retire
      const ports = JSON.parse(await host(['-j', 'link', 'show', 'master', name])) as unknown[];
      if (ports.length > 0) return false;
      await removeDevice(name);
      return true;
    },

    async addPod(s) {
      for (const [w, what] of [[s.netns, 'netns'], [s.ifname, 'ifname'], [s.hostIfname, 'host ifname'], [s.hostMac, 'mac'], [s.podMac, 'mac']] as const) safe(w, what);
      for (const a of [...s.addresses, ...s.gateways]) safe(a, 'address');
      if (s.gateways.length !== s.addresses.length) throw new NetnsError(`netns: ${s.addresses.length} addresses but ${s.gateways.length} gateways`, false);
      await access(s.netns).catch((err: unknown) => {
        throw new NetnsError(`netns: pod namespace ${s.netns} does not exist`, true, { cause: err });
      });
      // Host side. The neighbour entries are permanent on both ends, so neither side depends on
      // the other answering ARP/ND (the gateway address lives on another device of the node).
      // No `src` on the host route: the kernel deletes IPv4 routes whose preferred source
      // disappears, so a lost gateway address would silently take every pod's host route with it
      // (the agent's drift repair restores the address, not the routes).
      const hostLines = [
        `link add ${s.hostIfname} mtu ${s.mtu} address ${s.hostMac} type veth peer name ${s.ifname} mtu ${s.mtu} address ${s.podMac} netns ${s.netns}`,
        `link set ${s.hostIfname} up`,
      ];
      s.addresses.forEach((a) => {
        hostLines.push(`route replace ${bare(a)}/${hostLen(a)} dev ${s.hostIfname}`);
        hostLines.push(`neigh replace ${bare(a)} lladdr ${s.podMac} dev ${s.hostIfname} nud permanent`);
      });
      await batchHost(hostLines).catch(async (err: unknown) => {
        // The first line may have succeeded before a later one failed: undo it.
        await host(['link', 'del', s.hostIfname]).catch(() => {});
        throw err;
      });
      const lines = ['link set lo up'];
      for (const a of s.addresses) lines.push(`addr add ${a} dev ${s.ifname}${a.includes(':') ? ' nodad' : ''}`);
      lines.push(`link set ${s.ifname} up`);
      for (const g of new Set(s.gateways)) {
        const v6 = g.includes(':');
        lines.push(`route add ${g}/${v6 ? 128 : 32} dev ${s.ifname} scope link`);
        lines.push(`route add ${v6 ? '::/0' : 'default'} via ${g} dev ${s.ifname}`);
        lines.push(`neigh replace ${g} lladdr ${s.hostMac} dev ${s.ifname} nud permanent`);
      }
      try {
        await batchPod(s.netns, lines);
      } catch (err) {
        await host(['link', 'del', s.hostIfname]).catch(() => {});
        throw err;
      }
    },

    // The pod end, its addresses and both ends' routes and neighbour entries go with the host end.
    delPod: (hostIfname) => removeDevice(hostIfname, 'host ifname'),

    async checkPod(s) {
      safe(s.netns, 'netns');
      safe(s.ifname, 'ifname');
      safe(s.hostIfname, 'host ifname');
      for (const a of [...s.addresses, ...s.gateways]) safe(a, 'address');
      type Route = { dst: string; gateway?: string; dev?: string; table?: string; type?: string };
      // `table all`: without it iproute2 assumes IPv4 for a bare `route show <prefix>`.
      const main = (rs: Route[] | undefined) => (rs ?? []).filter((r) => (r.table === undefined || r.table === 'main') && (r.type === undefined || r.type === 'unicast'));
      const problems: string[] = [];
      const gws = [...new Set(s.gateways)];
      let out: string;
      try {
        out = await batchPod(s.netns, [`addr show dev ${s.ifname}`, ...gws.flatMap((g) => (g.includes(':') ? [`route show table all ${g}/128`, 'route show table all ::/0'] : [`route show table all ${g}/32`, 'route show table all 0.0.0.0/0']))], true);
      } catch (err) {
        return [`cannot inspect ${s.ifname} in ${s.netns}: ${(err as Error).message}`];
      }
      const [links, ...routes] = out.trim().split('\n').map((l) => JSON.parse(l) as unknown[]) as [{ flags?: string[]; addr_info?: { local: string; prefixlen: number }[] }[], ...Route[][]];
      const link = links?.[0];
      if (!link) return [`interface ${s.ifname} is missing`];
      if (!link.flags?.includes('UP')) problems.push(`interface ${s.ifname} is down`);
      const have = new Set((link.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
      for (const a of s.addresses) if (!have.has(a)) problems.push(`address ${a} missing on ${s.ifname}`);
      gws.forEach((g, i) => {
        if (!main(routes[2 * i]).some((r) => r.dev === s.ifname && r.gateway === undefined)) problems.push(`route to gateway ${g} dev ${s.ifname} missing`);
        if (!main(routes[2 * i + 1]).some((r) => r.gateway === g && r.dev === s.ifname)) problems.push(`default route via ${g} dev ${s.ifname} missing`);
      });
      if (s.addresses.length === 0) return problems;
      let hostOut: string;
      try {
        hostOut = await host(['-j', '-batch', '-'], `${s.addresses.map((a) => `route show table all ${bare(a)}/${hostLen(a)}`).join('\n')}\n`);
      } catch (err) {
        return [...problems, `cannot inspect the host routes of ${s.hostIfname}: ${(err as Error).message}`];
      }
      const hostRoutes = hostOut.trim().split('\n').map((l) => JSON.parse(l) as Route[]);
      s.addresses.forEach((a, i) => {
        if (!main(hostRoutes[i]).some((r) => r.dev === s.hostIfname)) problems.push(`host route ${bare(a)}/${hostLen(a)} dev ${s.hostIfname} missing`);
      });
      return problems;
    },
  };
}
