/**
 * The DNS lookup table: built (purely) from the local node and the remote nodes the mesh knows,
 * swapped into the server whole on every change. Lookups are Map hits on lowercase names, so the
 * table stays fast with tens of thousands of pods.
 *
 * Input records are assumed already validated for ownership by the planner (`src/plan/records.ts`
 * rejects and counts pod IPs outside their node's pod CIDRs); this module only maps names to labels
 * (rule in names.ts), skips non-IP strings defensively and resolves label collisions:
 * - the same pod (namespace/name) published twice (e.g. by the old and the new node during a
 *   move) publishes the union of its addresses;
 * - two different names mapping to the same label: a name that already was a valid label wins over
 *   a mapped one; otherwise the lexicographically lower original name wins. The loser is not
 *   published and is counted in `stats.collisions`. Every node builds the same table from the same
 *   records, so every agent answers the same.
 * Dead and left remote nodes contribute nothing: their names disappear with them.
 */

import { isIP } from 'node:net';
import type { NodeInfo, PodRecord, RemoteNode } from '../model.ts';
import { nodeFqdn, normalizeZone, podFqdn, reverseName, reverseZonesOf, toDnsLabel } from './names.ts';

/** The records one DNS name owns. A name with all three empty exists (NOERROR, no data). */
export interface NameRecords {
  readonly a: readonly string[];
  readonly aaaa: readonly string[];
  /** PTR targets, fully qualified, lowercase, without trailing dot. */
  readonly ptr: readonly string[];
}

/** What building the table kept and dropped; exported as metrics by the agent. */
export interface DnsTableStats {
  /** Pods published under a name. */
  readonly pods: number;
  /** Nodes published under a name. */
  readonly nodes: number;
  /** Distinct names in the table, including empty non-terminals. */
  readonly names: number;
  /** Pod, namespace or node names that map to no label (nothing alphanumeric). */
  readonly unmappable: number;
  /** Records not published because another name took their label. */
  readonly collisions: number;
  /** Addresses skipped because they are not IP addresses. */
  readonly badAddresses: number;
}

/** An immutable lookup table for one zone; build it with {@link buildTable}. */
export interface DnsTable {
  /** Lowercase, no trailing dot, e.g. `weft.local`. */
  readonly zone: string;
  /** Every existing name (lowercase, no trailing dot) to its records. */
  readonly names: ReadonlyMap<string, NameRecords>;
  /**
   * Zone apexes this table is authoritative for: the forward zone and the reverse zones of the
   * cluster CIDRs and of the pod CIDRs of the nodes it includes. Unknown names under these get NXDOMAIN; other names are
   * forwarded.
   */
  readonly authorities: ReadonlySet<string>;
  readonly stats: DnsTableStats;
}

/** The inputs of {@link buildTable}. */
export interface TableSource {
  /** The zone, e.g. `weft.local` (normalised; invalid zones throw). */
  readonly zone: string;
  /** This node and its own pods, when known. */
  readonly self?: { readonly info: NodeInfo; readonly pods: readonly PodRecord[] };
  /** The remote nodes from the mesh snapshot, already validated by the planner. */
  readonly remotes: readonly RemoteNode[];
  /**
   * The cluster pod CIDRs. Their reverse zones are authoritative even where no live node holds a
   * block, so a PTR query for a departed pod's address gets NXDOMAIN instead of being forwarded
   * (which would leak cluster-internal lookups to the upstream resolvers).
   */
  readonly clusterCIDRs?: readonly string[];
}

interface Candidate {
  /** The original name (pods: `namespace/name`), for deterministic collision resolution. */
  readonly original: string;
  /** The original was already a valid label (no mapping applied). */
  readonly exact: boolean;
  readonly ips: string[];
  /** Family (4 or 6) of each address in `ips`. */
  readonly families: number[];
}

/** Shared by every absent record type: most names have one type, so most arrays stay unallocated. */
const NONE: readonly string[] = Object.freeze([]);

interface MutableRecords {
  a: readonly string[];
  aaaa: readonly string[];
  ptr: readonly string[];
}

function push(r: MutableRecords, type: keyof MutableRecords, value: string): void {
  const cur = r[type];
  if (cur === NONE) r[type] = [value];
  else if (!cur.includes(value)) (cur as string[]).push(value);
}

/** An empty table for `zone`: every in-zone name is NXDOMAIN except the apex and its fixed subtrees. */
export function emptyTable(zone: string): DnsTable {
  return buildTable({ zone, remotes: [] });
}

/**
 * Builds the lookup table for `src.zone` from the local node, its pods and the live (alive or
 * suspect) remote nodes. Pure and deterministic: the same inputs in any order give the same table.
 */
export function buildTable(src: TableSource): DnsTable {
  const zone = normalizeZone(src.zone);
  let unmappable = 0;
  let collisions = 0;
  let badAddresses = 0;

  const nodes: { info: NodeInfo; pods: readonly PodRecord[] }[] = [];
  if (src.self) nodes.push(src.self);
  for (const r of src.remotes) {
    if (r.state === 'alive' || r.state === 'suspect') nodes.push(r);
  }

  // Authorities first, so empty non-terminals below a reverse apex can be filled in.
  const authorities = new Set<string>([zone]);
  for (const cidr of src.clusterCIDRs ?? []) {
    for (const rz of reverseZonesOf(cidr)) authorities.add(rz);
  }
  for (const n of nodes) {
    for (const cidr of n.info.podCIDRs) {
      for (const rz of reverseZonesOf(cidr)) authorities.add(rz);
    }
  }

  const podCandidates = new Map<string, Candidate>();
  const nodeCandidates = new Map<string, Candidate>();
  const offer = (map: Map<string, Candidate>, fqdn: string, original: string, exact: boolean, ips: readonly string[]): void => {
    const valid: Candidate = { original, exact, ips: [], families: [] };
    for (const ip of ips) {
      const family = typeof ip === 'string' ? isIP(ip) : 0;
      if (family === 0) {
        badAddresses++;
        continue;
      }
      const norm = family === 6 ? ip.toLowerCase() : ip;
      if (!valid.ips.includes(norm)) {
        valid.ips.push(norm);
        valid.families.push(family);
      }
    }
    const cur = map.get(fqdn);
    if (cur === undefined) {
      map.set(fqdn, valid);
      return;
    }
    if (cur.original === original) {
      valid.ips.forEach((ip, i) => {
        if (!cur.ips.includes(ip)) {
          cur.ips.push(ip);
          cur.families.push(valid.families[i]);
        }
      });
      return;
    }
    collisions++;
    const wins = exact !== cur.exact ? exact : original < cur.original;
    if (wins) map.set(fqdn, valid);
  };

  for (const n of nodes) {
    const nodeLabel = toDnsLabel(n.info.name);
    if (nodeLabel === undefined) unmappable++;
    else offer(nodeCandidates, nodeFqdn(nodeLabel, zone), n.info.name, nodeLabel === n.info.name, [n.info.meshIP]);
    for (const p of n.pods) {
      const podLabel = toDnsLabel(p.name);
      const nsLabel = toDnsLabel(p.namespace);
      if (podLabel === undefined || nsLabel === undefined) {
        unmappable++;
        continue;
      }
      const exact = podLabel === p.name && nsLabel === p.namespace;
      offer(podCandidates, podFqdn(podLabel, nsLabel, zone), `${p.namespace}/${p.name}`, exact, p.ips);
    }
  }

  const names = new Map<string, MutableRecords>();
  const entry = (name: string): MutableRecords => {
    let r = names.get(name);
    if (r === undefined) {
      r = { a: NONE, aaaa: NONE, ptr: NONE };
      names.set(name, r);
      addAncestors(name);
    }
    return r;
  };
  // Empty non-terminals: every ancestor of a name down to its authority apex exists.
  const addAncestors = (name: string): void => {
    let cur = name;
    while (!authorities.has(cur)) {
      const dot = cur.indexOf('.');
      if (dot < 0) return;
      cur = cur.slice(dot + 1);
      if (names.has(cur)) return;
      names.set(cur, { a: NONE, aaaa: NONE, ptr: NONE });
    }
  };
  for (const apex of authorities) entry(apex);
  entry(`pod.${zone}`);
  entry(`node.${zone}`);

  // Records are sorted where a name has several, so answers do not depend on input order.
  const publish = (map: Map<string, Candidate>): number => {
    for (const [fqdn, c] of map) {
      const r = entry(fqdn);
      for (let i = 0; i < c.ips.length; i++) {
        const ip = c.ips[i];
        push(r, c.families[i] === 4 ? 'a' : 'aaaa', ip);
        const rev = reverseName(ip)!;
        if (!names.has(rev) && !underAuthority(rev, authorities)) authorities.add(rev);
        push(entry(rev), 'ptr', fqdn);
      }
    }
    return map.size;
  };
  const nodeCount = publish(nodeCandidates);
  const podCount = publish(podCandidates);
  for (const r of names.values()) {
    if (r.a.length > 1) (r.a as string[]).sort();
    if (r.aaaa.length > 1) (r.aaaa as string[]).sort();
    if (r.ptr.length > 1) (r.ptr as string[]).sort();
  }

  return {
    zone,
    names,
    authorities,
    stats: { pods: podCount, nodes: nodeCount, names: names.size, unmappable, collisions, badAddresses },
  };
}

function underAuthority(name: string, authorities: ReadonlySet<string>): boolean {
  return findAuthority(name, authorities) !== undefined;
}

/**
 * The apex of the zone `name` (lowercase, no trailing dot) falls in, or undefined when the table is
 * not authoritative for it. Walks at most one step per label.
 */
export function findAuthority(name: string, authorities: ReadonlySet<string>): string | undefined {
  let cur = name;
  for (;;) {
    if (authorities.has(cur)) return cur;
    const dot = cur.indexOf('.');
    if (dot < 0) return undefined;
    cur = cur.slice(dot + 1);
  }
}
