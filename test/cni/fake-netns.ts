/** An in-memory {@link NetnsOps} for unit tests: records calls, keeps links, injects failures. */
import type { NetnsOps, PodLinkSpec } from '../../src/cni/netns.ts';
import { NetnsError } from '../../src/cni/netns.ts';

export class FakeNetns implements NetnsOps {
  bridges = new Map<string, Set<string>>();
  /** host veth name -> spec. */
  links = new Map<string, PodLinkSpec>();
  /** Netns paths that exist. */
  namespaces = new Set<string>();
  calls: string[] = [];
  failNextAdd: Error | undefined;
  failDel: Error | undefined;

  async ensureBridge(bridge: string, gatewayCidrs: readonly string[]): Promise<void> {
    this.calls.push(`ensureBridge ${bridge} ${gatewayCidrs.join(',')}`);
    const s = this.bridges.get(bridge) ?? new Set<string>();
    for (const g of gatewayCidrs) s.add(g);
    this.bridges.set(bridge, s);
  }
  async removeBridge(bridge: string): Promise<void> {
    this.bridges.delete(bridge);
  }
  async addPod(spec: PodLinkSpec): Promise<void> {
    this.calls.push(`addPod ${spec.hostIfname}`);
    if (this.failNextAdd) {
      const e = this.failNextAdd;
      this.failNextAdd = undefined;
      throw e;
    }
    if (!this.namespaces.has(spec.netns)) throw new NetnsError(`netns: pod namespace ${spec.netns} does not exist`, true);
    if (!this.bridges.has(spec.bridge)) throw new NetnsError(`netns: bridge ${spec.bridge} missing`, true);
    if (this.links.has(spec.hostIfname)) throw new NetnsError(`netns: ${spec.hostIfname} exists`, false);
    this.links.set(spec.hostIfname, spec);
  }
  async delPod(hostIfname: string): Promise<void> {
    this.calls.push(`delPod ${hostIfname}`);
    if (this.failDel) throw this.failDel;
    this.links.delete(hostIfname);
  }
  async checkPod(spec: Pick<PodLinkSpec, 'netns' | 'ifname' | 'addresses' | 'gateways'>): Promise<string[]> {
    const link = [...this.links.values()].find((l) => l.netns === spec.netns && l.ifname === spec.ifname);
    if (!link) return [`interface ${spec.ifname} is missing`];
    const problems: string[] = [];
    for (const a of spec.addresses) if (!link.addresses.includes(a)) problems.push(`address ${a} missing on ${spec.ifname}`);
    return problems;
  }
}
