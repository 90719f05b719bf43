/** An in-memory {@link NetnsOps} for unit tests: records calls, keeps links, injects failures. */
import type { NetnsOps, PodLinkSpec } from '../../src/cni/netns.ts';
import { NetnsError } from '../../src/cni/netns.ts';

export class FakeNetns implements NetnsOps {
  /** Gateway device name -> its addresses. */
  gateways = new Map<string, Set<string>>();
  /** Legacy bridges: name -> number of ports left. */
  bridges = new Map<string, number>();
  /** host veth name -> spec. */
  links = new Map<string, PodLinkSpec>();
  /** Host veths whose host routes were deleted behind the handler's back. */
  hostRoutesGone = new Set<string>();
  /** Netns paths that exist. */
  namespaces = new Set<string>();
  calls: string[] = [];
  failNextAdd: Error | undefined;
  failDel: Error | undefined;

  async ensureGateway(dev: string, gatewayCidrs: readonly string[]): Promise<void> {
    this.calls.push(`ensureGateway ${dev} ${gatewayCidrs.join(',')}`);
    const s = this.gateways.get(dev) ?? new Set<string>();
    for (const g of gatewayCidrs) s.add(g);
    this.gateways.set(dev, s);
  }
  async removeDevice(dev: string): Promise<void> {
    this.calls.push(`removeDevice ${dev}`);
    this.gateways.delete(dev);
    this.bridges.delete(dev);
  }
  async removeIdleBridge(name: string): Promise<boolean> {
    this.calls.push(`removeIdleBridge ${name}`);
    const ports = this.bridges.get(name);
    if (ports === undefined) return true;
    if (ports > 0) return false;
    this.bridges.delete(name);
    return true;
  }
  async addPod(spec: PodLinkSpec): Promise<void> {
    this.calls.push(`addPod ${spec.hostIfname}`);
    if (this.failNextAdd) {
      const e = this.failNextAdd;
      this.failNextAdd = undefined;
      throw e;
    }
    if (!this.namespaces.has(spec.netns)) throw new NetnsError(`netns: pod namespace ${spec.netns} does not exist`, true);
    // The real host route names the gateway as source: it fails without the gateway device's address.
    const have = [...this.gateways.values()].flatMap((s) => [...s].map((c) => c.split('/')[0]));
    for (const g of spec.gateways) if (!have.includes(g)) throw new NetnsError(`netns: gateway ${g} is on no device`, false);
    if (this.links.has(spec.hostIfname)) throw new NetnsError(`netns: ${spec.hostIfname} exists`, false);
    this.links.set(spec.hostIfname, spec);
    this.hostRoutesGone.delete(spec.hostIfname);
  }
  async delPod(hostIfname: string): Promise<void> {
    this.calls.push(`delPod ${hostIfname}`);
    if (this.failDel) throw this.failDel;
    this.links.delete(hostIfname);
    this.hostRoutesGone.delete(hostIfname);
  }
  async checkPod(spec: Pick<PodLinkSpec, 'netns' | 'ifname' | 'hostIfname' | 'addresses' | 'gateways'>): Promise<string[]> {
    const link = [...this.links.values()].find((l) => l.netns === spec.netns && l.ifname === spec.ifname);
    if (!link) return [`interface ${spec.ifname} is missing`];
    const problems: string[] = [];
    for (const a of spec.addresses) if (!link.addresses.includes(a)) problems.push(`address ${a} missing on ${spec.ifname}`);
    if (this.hostRoutesGone.has(spec.hostIfname) || link.hostIfname !== spec.hostIfname) {
      for (const a of spec.addresses) problems.push(`host route ${a} dev ${spec.hostIfname} missing`);
    }
    return problems;
  }
}
