/**
 * An in-memory {@link RtNetlink} with the kernel's semantics where the reconciler depends on them
 * (EEXIST on add, replace, protocol-matched delete, routes vanish with their link), plus a write
 * counter and fault injection for tests and the fake-backend benchmark.
 */
import type { WireGuardBackend } from '../wireguard/backend.ts';
import { canonicalCIDR, canonicalIP, familyOf } from '../plan/cidr.ts';
import { RT_TABLE_MAIN, RtNetlinkError, WEFT_RT_PROTO, type RtLink, type RtNetlink, type RtRoute, type RtRouteKey, type RtRouteSpec } from './rtnetlink.ts';

interface FakeLink {
  index: number;
  name: string;
  mtu: number;
  up: boolean;
  kind?: string;
  addresses: string[];
}

/** The in-memory rtnetlink. Mutate `links`/`routes` through the helpers to simulate drift. */
export class FakeRtNetlink implements RtNetlink {
  /** Mutating calls made so far (set/add/replace/del), for asserting "zero writes". */
  writes = 0;
  /** When set, the next call of that method rejects with this error (then it is cleared). */
  failNext: Partial<Record<keyof RtNetlink, Error>> = {};
  private readonly links = new Map<string, FakeLink>();
  private routes: RtRoute[] = [];
  private nextIndex = 2;

  /** Creates a link directly (what `ip link add` or a WireGuard backend would do). */
  createLink(name: string, opts: { mtu?: number; up?: boolean; kind?: string } = {}): RtLink {
    const l: FakeLink = { index: this.nextIndex++, name, mtu: opts.mtu ?? 1500, up: opts.up ?? false, addresses: [], ...(opts.kind ? { kind: opts.kind } : {}) };
    this.links.set(name, l);
    return this.view(l);
  }

  /** Whether a link exists (no fault injection, no counting). */
  hasLink(name: string): boolean {
    return this.links.has(name);
  }

  /** Inserts any route, of any protocol (simulates another daemon or an admin). */
  injectRoute(r: Omit<RtRoute, 'ifindex' | 'type'> & { dev?: string; type?: RtRoute['type'] }): void {
    const dst = canonicalCIDR(r.dst, false)!;
    const link = r.dev ? this.links.get(r.dev) : undefined;
    this.routes.push({ ...r, type: r.type ?? 'unicast', dst, ...(link ? { ifindex: link.index } : {}) });
  }

  /** Removes routes matching `dst` whatever their protocol (simulates `ip route del` by someone else). */
  dropRoute(dst: string): void {
    const d = canonicalCIDR(dst, false);
    this.routes = this.routes.filter((r) => r.dst !== d);
  }

  /** All routes, for assertions. */
  allRoutes(): RtRoute[] {
    return this.routes.map((r) => ({ ...r }));
  }

  private take(m: keyof RtNetlink): void {
    const e = this.failNext[m];
    if (e) {
      delete this.failNext[m];
      throw e;
    }
  }

  private view(l: FakeLink): RtLink {
    return { index: l.index, name: l.name, mtu: l.mtu, up: l.up, ...(l.kind ? { kind: l.kind } : {}) };
  }

  private must(name: string, op: string): FakeLink {
    const l = this.links.get(name);
    if (!l) throw new RtNetlinkError(`rtnetlink: ${op} ${name}: no such device`, { code: 'ENODEV' });
    return l;
  }

  async getLink(name: string): Promise<RtLink | null> {
    this.take('getLink');
    const l = this.links.get(name);
    return l ? this.view(l) : null;
  }

  async listLinks(): Promise<RtLink[]> {
    this.take('listLinks');
    return [...this.links.values()].map((l) => this.view(l));
  }

  async setLink(name: string, change: { mtu?: number; up?: boolean }): Promise<void> {
    this.take('setLink');
    const l = this.must(name, 'set link');
    this.writes++;
    if (change.mtu !== undefined) l.mtu = change.mtu;
    if (change.up !== undefined) l.up = change.up;
  }

  async deleteLink(name: string): Promise<void> {
    this.take('deleteLink');
    const l = this.links.get(name);
    if (!l) return;
    this.writes++;
    this.links.delete(name);
    this.routes = this.routes.filter((r) => r.ifindex !== l.index);
  }

  async listAddresses(name: string): Promise<string[]> {
    this.take('listAddresses');
    return [...this.must(name, 'list addresses').addresses];
  }

  async addAddress(name: string, address: string): Promise<void> {
    this.take('addAddress');
    const l = this.must(name, 'add address');
    const a = canonAddr(address);
    if (l.addresses.includes(a)) return;
    this.writes++;
    l.addresses.push(a);
  }

  async delAddress(name: string, address: string): Promise<void> {
    this.take('delAddress');
    const l = this.must(name, 'del address');
    const a = canonAddr(address);
    if (!l.addresses.includes(a)) return;
    this.writes++;
    l.addresses = l.addresses.filter((x) => x !== a);
  }

  async listRoutes(family?: 4 | 6): Promise<RtRoute[]> {
    this.take('listRoutes');
    return this.routes
      .filter((r) => family === undefined || familyOf(r.dst) === family)
      .map((r) => {
        const l = [...this.links.values()].find((x) => x.index === r.ifindex);
        const { dev: _dev, ...rest } = r;
        return l ? { ...rest, dev: l.name } : rest;
      });
  }

  private build(route: RtRouteSpec, op: string): RtRoute {
    const dst = canonicalCIDR(route.dst);
    if (!dst) throw new RtNetlinkError(`rtnetlink: ${op} ${route.dst}: invalid destination`, { code: 'EINVAL' });
    if (route.blackhole) return { dst, type: 'blackhole', protocol: WEFT_RT_PROTO, table: RT_TABLE_MAIN, metric: route.metric };
    const l = this.must(route.dev, `${op} ${dst} dev`);
    return { dst, type: 'unicast', dev: l.name, ifindex: l.index, protocol: WEFT_RT_PROTO, table: RT_TABLE_MAIN, metric: 0 };
  }

  /** Like the kernel, a route is identified by (table, destination, metric). */
  private slot(r: RtRoute): number {
    return this.routes.findIndex((x) => x.dst === r.dst && x.table === r.table && x.metric === r.metric);
  }

  async addRoute(route: RtRouteSpec): Promise<void> {
    this.take('addRoute');
    const r = this.build(route, 'add route');
    if (this.slot(r) >= 0) throw new RtNetlinkError(`rtnetlink: add route ${r.dst}: exists`, { code: 'EEXIST' });
    this.writes++;
    this.routes.push(r);
  }

  async replaceRoute(route: RtRouteSpec): Promise<void> {
    this.take('replaceRoute');
    const r = this.build(route, 'replace route');
    this.writes++;
    const i = this.slot(r);
    if (i >= 0) this.routes[i] = r;
    else this.routes.push(r);
  }

  async delRoute(route: RtRouteKey): Promise<void> {
    this.take('delRoute');
    const dst = canonicalCIDR(route.dst);
    let i: number;
    if (route.blackhole) {
      i = this.routes.findIndex((x) => x.dst === dst && x.protocol === WEFT_RT_PROTO && x.type === 'blackhole' && x.metric === route.metric);
    } else {
      const dev = route.dev ? this.links.get(route.dev) : undefined;
      if (route.dev && !dev) return;
      i = this.routes.findIndex((x) => x.dst === dst && x.protocol === WEFT_RT_PROTO && x.type === 'unicast' && (!dev || x.ifindex === dev.index));
    }
    if (i < 0) return;
    this.writes++;
    this.routes.splice(i, 1);
  }

  async close(): Promise<void> {}
}

function canonAddr(a: string): string {
  const slash = a.indexOf('/');
  const ip = canonicalIP(slash < 0 ? a : a.slice(0, slash));
  if (!ip) throw new RtNetlinkError(`rtnetlink: invalid address ${JSON.stringify(a)}`, { code: 'EINVAL' });
  return `${ip}/${slash < 0 ? (ip.includes(':') ? 128 : 32) : Number(a.slice(slash + 1))}`;
}

/**
 * Wraps a WireGuard backend (normally the in-memory fake) so that creating and deleting a device
 * also creates and deletes its link in a {@link FakeRtNetlink}, as the kernel would. For tests and
 * the fake-backend benchmark.
 */
export function linkFakes(wg: WireGuardBackend, rt: FakeRtNetlink): WireGuardBackend {
  return {
    kind: wg.kind,
    async ensureDevice(name) {
      await wg.ensureDevice(name);
      if (!rt.hasLink(name)) rt.createLink(name, { kind: 'wireguard', mtu: 1420 });
    },
    getDevice: (name) => wg.getDevice(name),
    setDevice: (name, u) => wg.setDevice(name, u),
    async deleteDevice(name) {
      await wg.deleteDevice(name);
      const w = rt.writes;
      await rt.deleteLink(name);
      rt.writes = w;
    },
    close: () => wg.close(),
  };
}
