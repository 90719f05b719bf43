/**
 * {@link RtNetlink} on a real rtnetlink socket, through the `netlink` package (pinned 0.3.0).
 * The socket belongs to the network namespace of this process at the time of the first call; lab
 * code that drives another namespace runs this inside it (`ip netns exec`).
 *
 * Every request has a deadline. Kernel errors become {@link RtNetlinkError} with the errno name in
 * `code`; "already there" on add and "not there" on delete count as success where the interface
 * says so. Route deletes name weft's protocol, so the kernel only ever removes weft's routes.
 */
import { createRequire } from 'node:module';
import type { RtNetlinkSocket } from 'netlink';
import { canonicalCIDR, formatCidr, tryParseIP, type ParsedIP } from '../plan/cidr.ts';
import { RT_TABLE_MAIN, RtNetlinkError, WEFT_RT_PROTO, type RtLink, type RtNetlink, type RtRoute, type RtRouteKey, type RtRouteSpec } from './rtnetlink.ts';

const require = createRequire(import.meta.url);

const AF_INET = 2;
const AF_INET6 = 10;
const NLM_F_REPLACE = 0x100;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const RTN_UNICAST = 1;
const RTN_BLACKHOLE = 6;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RT_SCOPE_NOWHERE = 255;
const IFLA_INFO_KIND = 1;

/** Options of {@link LinuxRtNetlink}. */
export interface LinuxRtNetlinkOptions {
  /** Deadline of one request in ms. Default 5,000. */
  readonly timeoutMs?: number;
}

/** The rtnetlink implementation on the `netlink` package. One socket, opened lazily; requests may run concurrently. */
export class LinuxRtNetlink implements RtNetlink {
  private sock: RtNetlinkSocket | undefined;
  private readonly timeoutMs: number;

  constructor(opts: LinuxRtNetlinkOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  private enums(): { RouteType: Record<string, unknown>; RouteProtocol: Record<string, unknown> } {
    const nl = require('netlink') as typeof import('netlink');
    return nl.rt as unknown as { RouteType: Record<string, unknown>; RouteProtocol: Record<string, unknown> };
  }

  private socket(): RtNetlinkSocket {
    if (!this.sock) {
      const nl = require('netlink') as typeof import('netlink');
      const sock = nl.createRtNetlink();
      // An 'error' event without a listener would throw and take the agent down; a socket error
      // instead drops this socket, the pending request times out, and the next call reopens.
      sock.socket.on('error', () => {
        if (this.sock === sock) this.resetSocket();
      });
      this.sock = sock;
    }
    return this.sock;
  }

  private async call<T>(what: string, fn: (s: RtNetlinkSocket, opts: { timeout: number; flags?: number }) => Promise<T>, flags?: number): Promise<T> {
    try {
      return await fn(this.socket(), flags === undefined ? { timeout: this.timeoutMs } : { timeout: this.timeoutMs, flags });
    } catch (err) {
      const m = /Request rejected: (\w+)/.exec(err instanceof Error ? err.message : '');
      const code = m?.[1];
      // Anything but a kernel errno (a timeout, a socket error) may leave the socket unusable:
      // drop it so the next call, at the next resync, opens a fresh one.
      if (!code) this.resetSocket();
      throw new RtNetlinkError(`rtnetlink: ${what}: ${code ?? (err instanceof Error ? err.message : String(err))}`, { cause: err, ...(code ? { code } : {}) });
    }
  }

  async getLink(name: string): Promise<RtLink | null> {
    checkName(name);
    try {
      const msgs = await this.call(`get link ${name}`, (s, o) => s.getLink({}, { ifname: name }, o));
      const l = msgs[0];
      return l ? toLink(l) : null;
    } catch (err) {
      if (err instanceof RtNetlinkError && err.code === 'ENODEV') return null;
      throw err;
    }
  }

  async listLinks(): Promise<RtLink[]> {
    const msgs = await this.call('list links', (s, o) => s.getLinks(undefined, undefined, o));
    return msgs.map(toLink);
  }

  private async index(name: string, op: string): Promise<number> {
    const l = await this.getLink(name);
    if (!l) throw new RtNetlinkError(`rtnetlink: ${op}: no link ${name}`, { code: 'ENODEV' });
    return l.index;
  }

  async setLink(name: string, change: { readonly mtu?: number; readonly up?: boolean }): Promise<void> {
    const index = await this.index(name, 'set link');
    if (change.mtu !== undefined && (!Number.isInteger(change.mtu) || change.mtu < 68 || change.mtu > 65535)) {
      throw new RtNetlinkError(`rtnetlink: set link ${name}: bad MTU ${change.mtu}`, { code: 'EINVAL' });
    }
    const data = change.up === undefined ? { index } : { index, flags: change.up ? { up: true as const } : {}, change: { up: true as const } };
    const attrs = change.mtu === undefined ? {} : { mtu: change.mtu };
    await this.call(`set link ${name}`, (s, o) => s.setLink(data, attrs, o));
  }

  async deleteLink(name: string): Promise<void> {
    const l = await this.getLink(name);
    if (!l) return;
    try {
      await this.call(`delete link ${name}`, (s, o) => s.delLink({ index: l.index }, {}, o));
    } catch (err) {
      if (!(err instanceof RtNetlinkError && err.code === 'ENODEV')) throw err;
    }
  }

  async listAddresses(name: string): Promise<string[]> {
    const index = await this.index(name, 'list addresses');
    const msgs = await this.call(`list addresses ${name}`, (s, o) => s.getAddresses(undefined, undefined, o));
    const out: string[] = [];
    for (const m of msgs) {
      if (m.data.index !== index) continue;
      const buf = m.attrs.local ?? m.attrs.address;
      const ip = buf ? ipFromBuffer(buf) : null;
      if (ip) out.push(`${ip}/${m.data.prefixlen ?? 0}`);
    }
    return out;
  }

  async addAddress(name: string, address: string): Promise<void> {
    const { ip, prefix } = parseAddress(address, 'add address');
    const index = await this.index(name, 'add address');
    const buf = ipToBuffer(ip);
    try {
      await this.call(
        `add address ${address} dev ${name}`,
        (s, o) => s.newAddress({ family: ip.family === 4 ? AF_INET : AF_INET6, prefixlen: prefix, index, ...(ip.family === 6 ? { flags: { nodad: true } } : {}) }, { local: buf, address: buf }, o),
        NLM_F_CREATE | NLM_F_EXCL,
      );
    } catch (err) {
      if (!(err instanceof RtNetlinkError && err.code === 'EEXIST')) throw err;
    }
  }

  async delAddress(name: string, address: string): Promise<void> {
    const { ip, prefix } = parseAddress(address, 'del address');
    const index = await this.index(name, 'del address');
    const buf = ipToBuffer(ip);
    try {
      await this.call(`del address ${address} dev ${name}`, (s, o) => s.delAddress({ family: ip.family === 4 ? AF_INET : AF_INET6, prefixlen: prefix, index }, { local: buf, address: buf }, o));
    } catch (err) {
      if (!(err instanceof RtNetlinkError && (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOENT'))) throw err;
    }
  }

  async listRoutes(family?: 4 | 6): Promise<RtRoute[]> {
    const links = new Map((await this.listLinks()).map((l) => [l.index, l.name]));
    const fams = family === undefined ? [AF_INET, AF_INET6] : [family === 4 ? AF_INET : AF_INET6];
    const out: RtRoute[] = [];
    for (const af of fams) {
      const msgs = await this.call('list routes', (s, o) => s.getRoutes({ family: af }, undefined, o));
      for (const m of msgs) {
        const table = m.attrs.table ?? m.data.table ?? 0;
        // The package decodes known enum values to their names ("UNICAST", "STATIC"); map them back.
        const type = enumValue(m.data.type, this.enums().RouteType);
        if (table !== RT_TABLE_MAIN || (type !== RTN_UNICAST && type !== RTN_BLACKHOLE) || m.data.family !== af) continue;
        const len = m.data.dstLen ?? 0;
        const dstIP = m.attrs.dst ? ipFromBuffer(m.attrs.dst) : af === AF_INET ? '0.0.0.0' : '::';
        const dst = dstIP ? canonicalCIDR(`${dstIP}/${len}`, false) : null;
        if (!dst) continue;
        const ifindex = m.attrs.oif;
        const dev = ifindex !== undefined ? links.get(ifindex) : undefined;
        const gateway = m.attrs.gateway ? ipFromBuffer(m.attrs.gateway) : null;
        const protocol = enumValue(m.data.protocol, this.enums().RouteProtocol) ?? 0;
        out.push({
          dst,
          type: type === RTN_BLACKHOLE ? 'blackhole' : 'unicast',
          protocol,
          table,
          metric: m.attrs.priority ?? 0,
          ...(ifindex !== undefined ? { ifindex } : {}),
          ...(dev !== undefined ? { dev } : {}),
          ...(gateway ? { gateway } : {}),
        });
      }
    }
    return out;
  }

  /** The rtmsg and attributes for a weft route (add/replace) or a weft route key (delete). */
  private async routeMsg(route: RtRouteSpec | RtRouteKey, op: string, del: boolean) {
    const c = parseDst(route.dst, op);
    const family = c.family === 4 ? AF_INET : AF_INET6;
    const dst = ipToBuffer({ family: c.family, value: c.base });
    if (route.blackhole) {
      if (!Number.isInteger(route.metric) || route.metric < 0 || route.metric > 0xffffffff) {
        throw new RtNetlinkError(`rtnetlink: ${op} ${route.dst}: bad metric ${route.metric}`, { code: 'EINVAL' });
      }
      const data = { family, dstLen: c.prefix, table: RT_TABLE_MAIN, protocol: WEFT_RT_PROTO, scope: del ? RT_SCOPE_NOWHERE : RT_SCOPE_UNIVERSE, type: RTN_BLACKHOLE };
      return { data, attrs: { dst, priority: route.metric } };
    }
    const oif = route.dev !== undefined ? await this.index(route.dev, `${op} ${route.dst}`) : undefined;
    const data = { family, dstLen: c.prefix, table: RT_TABLE_MAIN, protocol: WEFT_RT_PROTO, scope: del ? RT_SCOPE_NOWHERE : RT_SCOPE_LINK, type: RTN_UNICAST };
    return { data, attrs: { dst, ...(oif !== undefined ? { oif } : {}) } };
  }

  async addRoute(route: RtRouteSpec): Promise<void> {
    const { data, attrs } = await this.routeMsg(route, 'add route', false);
    await this.call(`add route ${describe(route)}`, (s, o) => s.newRoute(data, attrs, o), NLM_F_CREATE | NLM_F_EXCL);
  }

  async replaceRoute(route: RtRouteSpec): Promise<void> {
    const { data, attrs } = await this.routeMsg(route, 'replace route', false);
    await this.call(`replace route ${describe(route)}`, (s, o) => s.newRoute(data, attrs, o), NLM_F_CREATE | NLM_F_REPLACE);
  }

  async delRoute(route: RtRouteKey): Promise<void> {
    let msg;
    try {
      msg = await this.routeMsg(route, 'del route', true);
    } catch (err) {
      if (err instanceof RtNetlinkError && err.code === 'ENODEV') return; // its link is gone, so is the route
      throw err;
    }
    const { data, attrs } = msg;
    try {
      await this.call(`del route ${describe(route)}`, (s, o) => s.delRoute(data, attrs, o));
    } catch (err) {
      if (!(err instanceof RtNetlinkError && err.code === 'ESRCH')) throw err;
    }
  }

  private resetSocket(): void {
    const s = this.sock;
    this.sock = undefined;
    try {
      s?.socket.close();
    } catch {
      // already closed
    }
  }

  async close(): Promise<void> {
    this.resetSocket();
  }
}

function describe(r: RtRouteSpec | RtRouteKey): string {
  return r.blackhole ? `blackhole ${r.dst} metric ${r.metric}` : r.dev !== undefined ? `${r.dst} dev ${r.dev}` : r.dst;
}

function enumValue(v: unknown, e: Record<string, unknown>): number | undefined {
  if (typeof v === 'number') return v;
  const n = typeof v === 'string' ? e[v] : undefined;
  return typeof n === 'number' ? n : undefined;
}

function checkName(name: string): void {
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.@:-]{1,15}$/.test(name)) throw new RtNetlinkError(`rtnetlink: bad interface name ${JSON.stringify(String(name).slice(0, 32))}`, { code: 'EINVAL' });
}

function toLink(m: { data: { index?: number; flags?: { up?: true } }; attrs: { ifname?: string; mtu?: number; linkinfo?: Buffer } }): RtLink {
  const kind = m.attrs.linkinfo ? linkKind(m.attrs.linkinfo) : undefined;
  return { index: m.data.index ?? 0, name: m.attrs.ifname ?? '', mtu: m.attrs.mtu ?? 0, up: m.data.flags?.up === true, ...(kind ? { kind } : {}) };
}

/** IFLA_INFO_KIND from a nested IFLA_LINKINFO attribute. */
function linkKind(buf: Buffer): string | undefined {
  for (let off = 0; off + 4 <= buf.length; ) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4 || off + len > buf.length) return undefined;
    if (type === IFLA_INFO_KIND) return buf.subarray(off + 4, off + len).toString('utf8').replace(/\0.*$/s, '');
    off += (len + 3) & ~3;
  }
  return undefined;
}

function ipFromBuffer(b: Buffer): string | null {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length === 16) {
    let v = 0n;
    for (const x of b) v = (v << 8n) | BigInt(x);
    return formatCidr({ family: 6, base: v, prefix: 128 }).slice(0, -4);
  }
  return null;
}

function ipToBuffer(ip: ParsedIP): Buffer {
  const n = ip.family === 4 ? 4 : 16;
  const b = Buffer.alloc(n);
  let v = ip.value;
  for (let i = n - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

function parseAddress(address: string, op: string): { ip: ParsedIP; prefix: number } {
  const slash = address.indexOf('/');
  const ip = tryParseIP(slash < 0 ? address : address.slice(0, slash));
  const prefix = slash < 0 ? (ip?.family === 6 ? 128 : 32) : Number(address.slice(slash + 1));
  if (!ip || !Number.isInteger(prefix) || prefix < 0 || prefix > (ip.family === 4 ? 32 : 128)) {
    throw new RtNetlinkError(`rtnetlink: ${op}: invalid address ${JSON.stringify(address.slice(0, 64))}`, { code: 'EINVAL' });
  }
  return { ip, prefix };
}

function parseDst(dst: string, op: string): { family: 4 | 6; base: bigint; prefix: number } {
  const c = canonicalCIDR(dst);
  if (!c) throw new RtNetlinkError(`rtnetlink: ${op}: invalid destination ${JSON.stringify(String(dst).slice(0, 64))}`, { code: 'EINVAL' });
  const slash = c.indexOf('/');
  const ip = tryParseIP(c.slice(0, slash))!;
  return { family: ip.family, base: ip.value, prefix: Number(c.slice(slash + 1)) };
}
