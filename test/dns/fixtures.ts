/** Shared fixtures for the DNS tests: a small mesh and a query builder. */
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, RecordType } from 'dns-packet';
import type { NodeInfo, PodRecord, RemoteNode } from '../../src/model.ts';
import { buildTable, type DnsTable } from '../../src/dns/table.ts';

export function nodeInfo(name: string, block: number, extra: Partial<NodeInfo> = {}): NodeInfo {
  return {
    format: 1, name, wgPublicKey: `key-${name}`, listenPort: 51820, endpoints: [`192.0.2.${block}:51820`],
    meshIP: `10.244.${block}.1`, podCIDRs: [`10.244.${block}.0/24`], claimedAt: block, keepalive: 0, ...extra,
  };
}

export function remote(info: NodeInfo, pods: PodRecord[], state: RemoteNode['state'] = 'alive'): RemoteNode {
  return { info, pods, state };
}

/** node-1 (self, block 1, dual stack pod), node-2 alive, node-3 dead. */
export function sampleTable(zone = 'weft.local'): DnsTable {
  const self = nodeInfo('node-1', 1, { podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
  return buildTable({
    zone,
    self: {
      info: self,
      pods: [
        { name: 'web', namespace: 'default', ips: ['10.244.1.5', 'fd00:10:244:1::5'] },
        { name: 'db.primary', namespace: 'prod', ips: ['10.244.1.6'] },
        { name: 'v4only', namespace: 'default', ips: ['10.244.1.7'] },
      ],
    },
    remotes: [
      remote(nodeInfo('node-2', 2), [{ name: 'api', namespace: 'default', ips: ['10.244.2.9'] }]),
      remote(nodeInfo('node-3', 3), [{ name: 'ghost', namespace: 'default', ips: ['10.244.3.9'] }], 'dead'),
    ],
  });
}

export function query(name: string, type: RecordType | 'ANY', opts: { id?: number; edns?: number; ednsVersion?: number; do?: boolean; klass?: string } = {}): Buffer {
  const additionals: Answer[] = [];
  if (opts.edns !== undefined) {
    additionals.push({
      type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: opts.ednsVersion ?? 0,
      flags: opts.do ? dnsPacket.DNSSEC_OK : 0, flag_do: !!opts.do, options: [],
    });
  }
  return dnsPacket.encode({
    id: opts.id ?? 4242, type: 'query', flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as RecordType, class: (opts.klass ?? 'IN') as 'IN' }], additionals,
  });
}

export function decode(b: Buffer): DecodedPacket & { rcode?: string; opcode?: string } {
  return dnsPacket.decode(b) as DecodedPacket & { rcode?: string; opcode?: string };
}
