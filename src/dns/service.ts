/**
 * The DNS service as the agent wires it: forwarder + server + table rebuilds, behind one object.
 * The agent calls {@link DnsService.update} with the planner's validated view after every mesh or
 * CNI change (cheap: one table build, one pointer swap) and {@link DnsService.close} on shutdown.
 */

import type { Logger } from 'pino';
import type { NodeInfo, PodRecord, RemoteNode } from '../model.ts';
import { Forwarder, type ListenAddress } from './forwarder.ts';
import type { RateLimitOptions } from './ratelimit.ts';
import { DnsServer, type TcpLimits } from './server.ts';
import { buildTable, emptyTable, type DnsTableStats } from './table.ts';
import { normalizeZone } from './names.ts';

/** Options of {@link DnsService.start}. */
export interface DnsServiceOptions {
  /** `--dns-zone`, e.g. `weft.local`. */
  readonly zone: string;
  /** `--dns-ttl` in seconds. */
  readonly ttl: number;
  /** The node's gateway address:53 plus every `--dns-listen`. */
  readonly listen: readonly ListenAddress[];
  /** Default `/etc/resolv.conf`. */
  readonly resolvConfPath?: string;
  /** Port of the upstream resolvers. Default 53. */
  readonly upstreamPort?: number;
  readonly rateLimit?: RateLimitOptions | false;
  readonly tcp?: TcpLimits;
  /** Sources allowed to use forwarding (CIDRs), e.g. the cluster CIDRs and loopback. Default: everyone. */
  readonly forwardFrom?: readonly string[];
  readonly logger: Logger;
}

/** What the table is built from (see {@link buildTable}). */
export interface DnsSource {
  readonly self?: { readonly info: NodeInfo; readonly pods: readonly PodRecord[] };
  readonly remotes: readonly RemoteNode[];
}

/** A running DNS service; create it with {@link DnsService.start}. */
export class DnsService {
  readonly server: DnsServer;
  readonly forwarder: Forwarder;
  readonly #zone: string;
  readonly #log: Logger;

  private constructor(server: DnsServer, forwarder: Forwarder, zone: string, log: Logger) {
    this.server = server;
    this.forwarder = forwarder;
    this.#zone = zone;
    this.#log = log;
  }

  /**
   * Validates the zone, starts the forwarder (reads resolv.conf) and binds every listen address.
   * Rejects (with nothing left running) when the zone is invalid or an address cannot be bound.
   */
  static async start(opts: DnsServiceOptions): Promise<DnsService> {
    const zone = normalizeZone(opts.zone);
    const log = opts.logger;
    const forwarder = new Forwarder({
      resolvConfPath: opts.resolvConfPath, upstreamPort: opts.upstreamPort, selfAddresses: opts.listen, logger: log,
    });
    await forwarder.start();
    const server = new DnsServer({
      listen: opts.listen, table: emptyTable(zone), forwarder, ttl: opts.ttl, rateLimit: opts.rateLimit, tcp: opts.tcp,
      forwardFrom: opts.forwardFrom, logger: log,
    });
    try {
      await server.start();
    } catch (err) {
      forwarder.close();
      throw err;
    }
    log.info({ zone, listen: server.addresses().map((a) => `${a.address}:${a.port}`) }, 'dns serving');
    return new DnsService(server, forwarder, zone, log);
  }

  /** Rebuilds the table from `src` and swaps it in. Never throws (the zone was validated at start). */
  update(src: DnsSource): DnsTableStats {
    const table = buildTable({ zone: this.#zone, self: src.self, remotes: src.remotes });
    this.server.setTable(table);
    if (table.stats.collisions > 0 || table.stats.unmappable > 0) {
      this.#log.debug({ collisions: table.stats.collisions, unmappable: table.stats.unmappable }, 'dns names not published');
    }
    return table.stats;
  }

  /** Stops the server and the forwarder. Idempotent. */
  async close(): Promise<void> {
    await this.server.close();
    this.forwarder.close();
  }
}
