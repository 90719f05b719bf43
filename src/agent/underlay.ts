/**
 * Facts about the local underlay read once at startup: which address to listen on and advertise,
 * the interface carrying it and its MTU; and the IP forwarding switch of this network namespace.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { HostPort } from '../config.ts';

/** The underlay cannot be worked out (no usable address, address not local). */
export class UnderlayError extends Error {
  override name = 'UnderlayError';
}

/** The local underlay as the agent uses it. */
export interface Underlay {
  readonly addr: string;
  readonly family: 4 | 6;
  readonly ifname: string;
  readonly mtu: number;
}

/** Interfaces weft itself creates; never chosen as the underlay. */
const OWN_LINKS = /^(weft|weftbr|veth)/;

/**
 * Picks the underlay: the interface holding `listenAddr`, or the first non-internal, non-link-local
 * IPv4 address (then IPv6) on an interface weft did not create. Pure over its inputs.
 */
export function pickUnderlay(
  listenAddr: string | undefined,
  ifaces: NodeJS.Dict<NetworkInterfaceInfo[]>,
  exclude: readonly string[] = [],
): { addr: string; family: 4 | 6; ifname: string } {
  const all: { ifname: string; info: NetworkInterfaceInfo }[] = [];
  for (const [ifname, infos] of Object.entries(ifaces)) for (const info of infos ?? []) all.push({ ifname, info });
  if (listenAddr !== undefined) {
    const hit = all.find((a) => a.info.address === listenAddr || (isIP(listenAddr) === 6 && a.info.address.toLowerCase() === listenAddr.toLowerCase()));
    if (!hit) throw new UnderlayError(`agent: --listen-addr ${listenAddr} is not an address of this host (network namespace)`);
    return { addr: listenAddr, family: hit.info.family === 'IPv6' ? 6 : 4, ifname: hit.ifname };
  }
  const usable = all.filter(
    (a) => !a.info.internal && !OWN_LINKS.test(a.ifname) && !exclude.includes(a.ifname) && !(a.info.family === 'IPv6' && a.info.address.toLowerCase().startsWith('fe80')),
  );
  const pick = usable.find((a) => a.info.family === 'IPv4') ?? usable.find((a) => a.info.family === 'IPv6');
  if (!pick) throw new UnderlayError('agent: no usable underlay address found; give --listen-addr');
  return { addr: pick.info.address, family: pick.info.family === 'IPv6' ? 6 : 4, ifname: pick.ifname };
}

/** Reads an interface's MTU in the caller's network namespace; undefined when it cannot tell. */
export type LinkMtuReader = (ifname: string) => Promise<number | undefined>;

/**
 * Reads the underlay of this host (network namespace), including the interface MTU from
 * `linkMtu` (the agent passes an rtnetlink query). Not from sysfs: /sys shows the interfaces of the
 * namespace it was mounted in, which need not be the caller's, and a wrong underlay MTU becomes a
 * wrong WireGuard MTU on every node. Falls back to Ethernet's 1500 when the reader cannot tell.
 */
export async function detectUnderlay(listenAddr: string | undefined, exclude: readonly string[], linkMtu: LinkMtuReader): Promise<Underlay> {
  const u = pickUnderlay(listenAddr, networkInterfaces(), exclude);
  let mtu = 1500;
  try {
    const n = await linkMtu(u.ifname);
    if (n !== undefined && Number.isInteger(n) && n >= 576 && n <= 65_535) mtu = n;
  } catch {
    // no answer: assume Ethernet
  }
  return { ...u, mtu };
}

/** Formats the WireGuard endpoint this node publishes. */
export function endpointOf(addr: string, port: number): string {
  return isIP(addr) === 6 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Turns on IP forwarding for the given families in this network namespace (idempotent). */
export async function enableForwarding(families: readonly (4 | 6)[], procRoot = '/proc/sys/net'): Promise<void> {
  for (const f of families) {
    const path = f === 4 ? `${procRoot}/ipv4/ip_forward` : `${procRoot}/ipv6/conf/all/forwarding`;
    const cur = (await readFile(path, 'utf8').catch(() => '')).trim();
    if (cur !== '1') await writeFile(path, '1\n');
  }
}

/** Resolves a host name to its addresses (node:dns `lookup` with `all: true`), injectable for tests. */
export type Lookup = (host: string) => Promise<readonly string[]>;

/**
 * Resolves seed host names to IP addresses (every address of a name becomes a seed). IP literals
 * pass through. A name that does not resolve is reported and skipped: the mesh retries the seeds
 * it has, and a DNS outage must not stop the agent.
 */
export async function resolveSeeds(seeds: readonly HostPort[], lookup: Lookup): Promise<{ seeds: HostPort[]; failed: { host: string; error: string }[] }> {
  const out: HostPort[] = [];
  const failed: { host: string; error: string }[] = [];
  const seen = new Set<string>();
  const add = (host: string, port: number): void => {
    const k = `${host}|${port}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push({ host, port });
    }
  };
  for (const s of seeds) {
    if (isIP(s.host) !== 0) {
      add(s.host, s.port);
      continue;
    }
    try {
      const addrs = await lookup(s.host);
      if (addrs.length === 0) throw new Error('no address');
      for (const a of addrs.slice(0, 16)) add(a, s.port);
    } catch (err) {
      failed.push({ host: s.host, error: (err as Error).message });
    }
  }
  return { seeds: out, failed };
}

/** The system resolver, bounded by `timeoutMs`. */
export function systemLookup(timeoutMs = 5000): Lookup {
  return (host) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`lookup ${host}: no answer within ${timeoutMs} ms`)), timeoutMs);
      dnsLookup(host, { all: true }, (err, addrs) => {
        clearTimeout(t);
        if (err) reject(err);
        else resolve(addrs.map((a) => a.address));
      });
    });
}
