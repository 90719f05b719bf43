/** Builders for mesh snapshots and node records used by the planner and datapath tests. */
import type { MemberView, MeshEntry, MeshSnapshot } from '../../mesh/api.ts';
import type { NodeInfo, PodRecord, RemoteNode } from '../../src/model.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';

/** A deterministic key pair from a small seed (tests only). */
export function keyPair(seed: number): { privateKey: string; publicKey: string } {
  return generateKeyPair((n) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (seed * 131 + i * 7 + 1) & 0xff;
    b[0] = seed & 0xff;
    b[1] = (seed >> 8) & 0xff;
    return b;
  });
}

/** A valid NodeInfo for node number `i` (pod block 10.244.i.0/24, mesh IP .1, endpoint 192.0.2.(i+1)). */
export function nodeInfo(i: number, over: Partial<NodeInfo> = {}): NodeInfo {
  return {
    format: 1,
    name: `node-${i}`,
    wgPublicKey: keyPair(i + 1).publicKey,
    listenPort: 51820,
    endpoints: [`192.0.2.${(i % 250) + 1}:51820`],
    meshIP: `10.244.${i}.1`,
    podCIDRs: [`10.244.${i}.0/24`],
    claimedAt: 1_000 + i,
    keepalive: 0,
    ...over,
  };
}

const enc = new TextEncoder();

/** A mesh entry holding `value` as JSON (or raw bytes/strings as given). */
export function entry(key: string, value: unknown, version = 1): MeshEntry {
  const payload = value instanceof Uint8Array ? value : enc.encode(typeof value === 'string' ? value : JSON.stringify(value));
  return { key, version, payload, expiresAt: 0, deleted: false };
}

/** A member with a node entry and pod entries. */
export function member(name: string, node: unknown, pods: PodRecord[] = [], state: MemberView['state'] = 'alive', extra: MeshEntry[] = []): MemberView {
  const entries = new Map<string, MeshEntry>();
  if (node !== undefined) entries.set('node', entry('node', node));
  for (const p of pods) entries.set(`pod/${p.namespace}/${p.name}`, entry(`pod/${p.namespace}/${p.name}`, p));
  for (const e of extra) entries.set(e.key, e);
  return { name, identityKey: 'id', addr: '192.0.2.1', port: 7946, state, incarnation: 1, entries };
}

/** A snapshot seen by `self`. */
export function snapshot(self: string, members: MemberView[]): MeshSnapshot {
  return { self, members };
}

/** A RemoteNode straight from a NodeInfo. */
export function remote(info: NodeInfo, state: RemoteNode['state'] = 'alive', pods: PodRecord[] = []): RemoteNode {
  return { info, pods, state };
}
