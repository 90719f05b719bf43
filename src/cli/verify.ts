/**
 * `weft verify [--seconds N] [--underlay IF...] [--json]`: proves on this node that pod traffic is
 * encrypted (see `src/observe/verify.ts`). Reads the node's view from the local agent, then checks
 * routes and captures the underlay. Exit codes: 0 nothing leaked, 1 a leak or a bypassing route,
 * 2 bad usage, 3 agent unreachable, 4 the check could not run (never a pass).
 */
import type { Command } from 'commander';
import { ApiClient, ApiClientError, ApiUnavailableError } from '../api/client.ts';
import type { AgentStatus } from '../agent/agent.ts';
import { parseEndpoint } from '../plan/cidr.ts';
import { interfacesWithAddresses, renderVerify, runVerify, systemVerifyIo, VerifyError, type VerifyIo, type VerifyOptions } from '../observe/verify.ts';

/** Exit codes of `weft verify`. */
export const VERIFY_EXIT = Object.freeze({ ok: 0, leak: 1, usage: 2, agent: 3, failed: 4 });

/** Derives what to verify from the agent's status and the flags. Pure. */
export function verifyOptionsFrom(status: AgentStatus, flags: { seconds: number; underlays: readonly string[]; clusterCIDRs: readonly string[]; meshPort: number }): Omit<VerifyOptions, 'underlays'> & { underlays: readonly string[]; endpointIPs: readonly string[] } {
  const remote = new Set<string>();
  const wgPorts = new Set<number>([status.node.listenPort]);
  for (const p of status.peers) {
    for (const a of p.allowedIPs) remote.add(a);
    const ep = p.endpoint ? parseEndpoint(p.endpoint) : null;
    if (ep) wgPorts.add(ep.port);
  }
  const endpointIPs = status.node.endpoints.map((e) => parseEndpoint(e)?.ip).filter((x): x is string => typeof x === 'string');
  return {
    seconds: flags.seconds,
    underlays: flags.underlays,
    endpointIPs,
    ifname: status.node.ifname,
    clusterCIDRs: flags.clusterCIDRs,
    remoteCIDRs: [...remote].sort(),
    localCIDRs: status.node.podCIDRs,
    wgPorts: [...wgPorts],
    meshPort: flags.meshPort,
  };
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];
}

/** Registers `weft verify`. `io` is injectable for tests. */
export function registerVerifyCommand(program: Command, io: VerifyIo = systemVerifyIo()): void {
  program
    .command('verify')
    .description('prove encryption on this node: remote pod CIDRs route into WireGuard, and no pod address appears on the underlay during a bounded capture')
    .option('--seconds <n>', 'capture length in seconds (1-3600)', '10')
    .option('--underlay <if>', 'underlay interface to capture on (repeatable or comma list; default: the interface carrying the agent\'s endpoint)', collect, [] as string[])
    .option('--cluster-cidr <cidrs>', 'cluster CIDR(s), comma list', process.env.WEFT_CLUSTER_CIDR ?? '10.244.0.0/16')
    .option('--mesh-port <port>', 'mesh gossip port (classified as control traffic)', process.env.WEFT_MESH_PORT ?? '7946')
    .option('--json', 'print the report as JSON')
    .option('--socket <path>', 'agent API socket', process.env.WEFT_RUN_DIR ? `${process.env.WEFT_RUN_DIR}/weft.sock` : '/run/weft/weft.sock')
    .action(async (opts: { seconds: string; underlay: string[]; clusterCidr: string; meshPort: string; json?: boolean; socket: string }) => {
      const seconds = Number(opts.seconds);
      const meshPort = Number(opts.meshPort);
      if (!Number.isInteger(seconds) || seconds < 1 || seconds > 3600 || !Number.isInteger(meshPort) || meshPort < 1 || meshPort > 65535) {
        process.stderr.write(`weft verify: --seconds must be an integer in 1..3600 and --mesh-port a port (got ${opts.seconds}, ${opts.meshPort})\n`);
        process.exitCode = VERIFY_EXIT.usage;
        return;
      }
      let status: AgentStatus;
      try {
        status = await new ApiClient({ socketPath: opts.socket, timeoutMs: 5000 }).get<AgentStatus>('/v1/status');
      } catch (err) {
        if (err instanceof ApiUnavailableError || err instanceof ApiClientError) {
          process.stderr.write(`weft verify: ${err.message}\n`);
          process.exitCode = VERIFY_EXIT.agent;
          return;
        }
        throw err;
      }
      const clusterCIDRs = opts.clusterCidr.split(',').map((s) => s.trim()).filter(Boolean);
      const v = verifyOptionsFrom(status, { seconds, underlays: opts.underlay, clusterCIDRs, meshPort });
      try {
        let underlays = v.underlays;
        if (underlays.length === 0) {
          const out = await io.run(['ip', '-j', 'addr', 'show']);
          underlays = out.code === 0 ? interfacesWithAddresses(JSON.parse(out.stdout), v.endpointIPs) : [];
          if (underlays.length === 0) throw new VerifyError(`verify: no interface carries the agent's endpoint (${v.endpointIPs.join(', ') || 'none'}); give --underlay`);
        }
        const report = await runVerify(io, { ...v, underlays });
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : renderVerify(report));
        process.exitCode = report.ok ? VERIFY_EXIT.ok : VERIFY_EXIT.leak;
      } catch (err) {
        process.stderr.write(`weft verify: ${(err as Error).message}\n`);
        process.exitCode = VERIFY_EXIT.failed;
      }
    });
}
