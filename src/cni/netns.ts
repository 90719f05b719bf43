/**
 * Netlink work for pod attachments, behind the small {@link NetnsOps} interface the handler uses
 * (unit tests pass a fake). The real implementation drives iproute2 in batch mode: one `ip -batch`
 * in the node's namespace creates the veth pair with the pod end created directly inside the pod
 * namespace under its final name, and one `nsenter --net=<path> ip -batch` configures the pod side.
 * Two process spawns per ADD keeps ADD latency low without a netlink binding that can enter a netns.
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
  readonly bridge: string;
  /** Pod addresses with prefix length (one per family). */
  readonly addresses: readonly string[];
  /** Default-route gateways, one per family present in `addresses`. */
  readonly gateways: readonly string[];
  readonly mtu: number;
  readonly hostMac: string;
  readonly podMac: string;
}

/** The node-side and pod-side network operations the CNI handler needs. All are idempotent where stated. */
export interface NetnsOps {
  /**
   * Creates or adopts the bridge with the gateway address(es), up. Idempotent. Addresses of the
   * same families that are not listed are removed (a lost block's gateway); other families stay.
   */
  ensureBridge(bridge: string, gatewayCidrs: readonly string[], mtu: number): Promise<void>;
  /** Deletes the bridge; succeeds when it is absent. */
  removeBridge(bridge: string): Promise<void>;
  /** Creates and configures the veth pair; on failure leaves nothing behind. */
  addPod(spec: PodLinkSpec): Promise<void>;
  /** Removes the pair (via its host end); succeeds when it or the pod namespace is already gone. */
  delPod(hostIfname: string): Promise<void>;
  /**
   * Verifies the pod side: interface present and up, addresses present, default route(s) via the
   * gateway(s). Resolves to a list of problems (empty = healthy).
   */
  checkPod(spec: Pick<PodLinkSpec, 'netns' | 'ifname' | 'addresses' | 'gateways'>): Promise<string[]>;
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

  return {
    async ensureBridge(bridge, gatewayCidrs, mtu) {
      safe(bridge, 'bridge');
      let present: { addr_info?: { local: string; prefixlen: number }[] }[] | undefined;
      try {
        present = JSON.parse(await host(['-j', 'addr', 'show', 'dev', bridge]));
      } catch (err) {
        if (!(err instanceof NetnsError && err.notFound)) throw err;
      }
      const have = new Set((present?.[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
      const want = new Set(gatewayCidrs.map((g) => safe(g, 'gateway')));
      const families = new Set(gatewayCidrs.map((g) => g.includes(':')));
      const lines: string[] = [];
      if (!present) lines.push(`link add ${bridge} mtu ${mtu} type bridge`);
      // A gateway of a block this node no longer owns (lost claim) must go: it would pull that
      // block's traffic into the bridge instead of the tunnel. Other families and link-local stay.
      for (const h of have) {
        if (!want.has(h) && families.has(h.includes(':')) && !h.startsWith('fe80:')) lines.push(`addr del ${h} dev ${bridge}`);
      }
      for (const g of want) if (!have.has(g)) lines.push(`addr add ${g} dev ${bridge}${g.includes(':') ? ' nodad' : ''}`);
      lines.push(`link set ${bridge} up`);
      await batchHost(lines);
    },

    async removeBridge(bridge) {
      try {
        await host(['link', 'del', safe(bridge, 'bridge')]);
      } catch (err) {
        if (!(err instanceof NetnsError && err.notFound)) throw err;
      }
    },

    async addPod(s) {
      for (const [w, what] of [[s.netns, 'netns'], [s.ifname, 'ifname'], [s.hostIfname, 'host ifname'], [s.bridge, 'bridge'], [s.hostMac, 'mac'], [s.podMac, 'mac']] as const) safe(w, what);
      for (const a of [...s.addresses, ...s.gateways]) safe(a, 'address');
      await access(s.netns).catch((err: unknown) => {
        throw new NetnsError(`netns: pod namespace ${s.netns} does not exist`, true, { cause: err });
      });
      await batchHost([
        `link add ${s.hostIfname} mtu ${s.mtu} address ${s.hostMac} type veth peer name ${s.ifname} mtu ${s.mtu} address ${s.podMac} netns ${s.netns}`,
        `link set ${s.hostIfname} master ${s.bridge} up`,
      ]).catch(async (err: unknown) => {
        // The first line may have succeeded before the second failed (e.g. no bridge): undo it.
        await host(['link', 'del', s.hostIfname]).catch(() => {});
        throw err;
      });
      const lines = ['link set lo up'];
      for (const a of s.addresses) lines.push(`addr add ${a} dev ${s.ifname}${a.includes(':') ? ' nodad' : ''}`);
      lines.push(`link set ${s.ifname} up`);
      for (const g of s.gateways) lines.push(`route add ${g.includes(':') ? '::/0' : 'default'} via ${g} dev ${s.ifname}`);
      try {
        await batchPod(s.netns, lines);
      } catch (err) {
        await host(['link', 'del', s.hostIfname]).catch(() => {});
        throw err;
      }
    },

    async delPod(hostIfname) {
      try {
        await host(['link', 'del', safe(hostIfname, 'host ifname')]);
      } catch (err) {
        if (!(err instanceof NetnsError && err.notFound)) throw err;
      }
    },

    async checkPod(s) {
      safe(s.netns, 'netns');
      safe(s.ifname, 'ifname');
      const problems: string[] = [];
      let out: string;
      try {
        out = await batchPod(s.netns, [`addr show dev ${s.ifname}`, 'route show default', 'route show ::/0'], true);
      } catch (err) {
        return [`cannot inspect ${s.ifname} in ${s.netns}: ${(err as Error).message}`];
      }
      const [links, routes4, routes6] = out.trim().split('\n').map((l) => JSON.parse(l) as unknown[]) as [
        { flags?: string[]; addr_info?: { local: string; prefixlen: number }[] }[],
        { dst: string; gateway?: string; dev?: string }[],
        { dst: string; gateway?: string; dev?: string }[],
      ];
      const link = links?.[0];
      if (!link) return [`interface ${s.ifname} is missing`];
      if (!link.flags?.includes('UP')) problems.push(`interface ${s.ifname} is down`);
      const have = new Set((link.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
      for (const a of s.addresses) if (!have.has(a)) problems.push(`address ${a} missing on ${s.ifname}`);
      for (const g of s.gateways) {
        const routes = g.includes(':') ? (routes6 ?? []) : (routes4 ?? []);
        if (!routes.some((r) => r.gateway === g && r.dev === s.ifname)) problems.push(`default route via ${g} dev ${s.ifname} missing`);
      }
      return problems;
    },
  };
}
