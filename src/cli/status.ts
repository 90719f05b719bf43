/**
 * `weft status [--json]`: asks the local agent for its status and prints this node, then one row
 * per WireGuard peer. The renderer is pure (status + now -> text) so it is table-tested.
 */
import type { Command } from 'commander';
import { ApiClient, ApiClientError, ApiUnavailableError } from '../api/client.ts';
import type { AgentStatus, PeerStatus } from '../agent/agent.ts';
import { HANDSHAKE_FRESH_S } from '../observe/peers.ts';

/** A peer without a handshake for longer than this is flagged (WireGuard re-keys every 2 minutes). */
export const HANDSHAKE_STALE_S = HANDSHAKE_FRESH_S;

/** Human byte count: 1.5 KiB, 3.2 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Age of a handshake: "never", "42s", "3m12s", "2h5m". */
export function formatAge(lastHandshake: number, now: number): string {
  if (!lastHandshake) return 'never';
  const s = Math.max(0, now - lastHandshake);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

/** True when the peer has not completed a handshake within {@link HANDSHAKE_STALE_S}. */
export function peerUnhealthy(p: PeerStatus, now: number): boolean {
  return !p.lastHandshake || now - p.lastHandshake > HANDSHAKE_STALE_S;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n');
}

/** Renders the status as the human table. `now` is seconds since the epoch. */
export function renderStatus(s: AgentStatus, now: number): string {
  const n = s.node;
  const head = [
    ['node', n.name],
    ['backend', n.backend],
    ['public key', n.publicKey],
    ['mesh IP', n.meshIP ?? '-'],
    ['pod CIDR', n.podCIDRs.join(', ') || '-'],
    ['listen port', String(n.listenPort)],
    ['MTU', n.mtu === undefined ? '-' : String(n.mtu)],
    ['key age', n.keyCreatedAt ? formatAge(Math.floor(n.keyCreatedAt / 1000), now) : '-'],
    ['interface', n.ifname],
    ['ready', s.ready ? 'yes' : 'no'],
    ['mesh members', Object.entries(s.mesh.members).filter(([, v]) => v > 0).map(([k, v]) => `${v} ${k}`).join(', ') || '-'],
  ];
  return `${table(head.map(([k, v]) => [`${k}:`, v!]))}\n\n${renderPeers(s, now)}`;
}

/** Renders the peer table alone (`weft status peers`). */
export function renderPeers(s: AgentStatus, now: number): string {
  const rows = [['PEER', 'ENDPOINT', 'ALLOWED IPS', 'HANDSHAKE', 'RX', 'TX', 'LINK', 'MESH']];
  for (const p of s.peers) {
    rows.push([
      p.name,
      p.endpoint ?? '-',
      p.allowedIPs.join(',') || '-',
      formatAge(p.lastHandshake, now) + (peerUnhealthy(p, now) ? ' !' : ''),
      formatBytes(p.rxBytes),
      formatBytes(p.txBytes),
      p.link === 'relayed' && p.relay ? `relayed via ${p.relay}` : (p.link ?? '-'),
      p.state,
    ]);
  }
  if (s.peers.length === 0) return 'no peers\n';
  const stale = s.peers.filter((p) => peerUnhealthy(p, now)).length;
  const note = stale > 0 ? `\n! ${stale} of ${s.peers.length} peers without a handshake in the last ${HANDSHAKE_STALE_S / 60} minutes\n` : '';
  return `${table(rows)}\n${note}`;
}

/** What `GET /v1/status/ipam` returns. */
export interface IpamStatus {
  readonly podCIDRs: readonly string[];
  readonly claimedAt: number;
  readonly gateway?: string;
  readonly allocations: readonly { ip: string; pod?: string; namespace?: string; containerId: string; ifname: string; allocatedAt: number }[];
}

/** What `GET /v1/status/dns` returns. */
export interface DnsStatus {
  readonly zone: string;
  readonly ttl: number;
  readonly listen: readonly { address: string; port: number }[];
  readonly table?: Readonly<Record<string, number>>;
  readonly counters: Readonly<Record<string, number>>;
}

/** Renders `weft status ipam`. `nowMs` is ms since the epoch. */
export function renderIpam(s: IpamStatus, nowMs: number): string {
  const head = `pod CIDR: ${s.podCIDRs.join(', ') || '-'}  gateway: ${s.gateway ?? '-'}  claimed: ${s.claimedAt ? new Date(s.claimedAt).toISOString() : '-'}\n`;
  if (s.allocations.length === 0) return `${head}\nno pod addresses allocated\n`;
  const rows = [['IP', 'POD', 'NAMESPACE', 'CONTAINER', 'IF', 'AGE']];
  for (const a of s.allocations) rows.push([a.ip, a.pod ?? '-', a.namespace ?? '-', a.containerId.slice(0, 12), a.ifname, formatAge(Math.floor(a.allocatedAt / 1000), Math.floor(nowMs / 1000))]);
  return `${head}\n${table(rows)}\n`;
}

/** Renders `weft status dns`. */
export function renderDns(s: DnsStatus): string {
  const lines = [`zone: ${s.zone}  ttl: ${s.ttl}s  listen: ${s.listen.map((l) => `${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.port}`).join(', ') || 'not serving'}`];
  if (s.table) lines.push(`table: ${Object.entries(s.table).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const counters = Object.entries(s.counters).filter(([, v]) => v > 0);
  lines.push(`counters: ${counters.map(([k, v]) => `${k}=${v}`).join(' ') || 'none yet'}`);
  return `${lines.join('\n')}\n`;
}

/** Registers `weft status`. Exit codes: 0 fine, 1 a peer is unhealthy or the agent not ready, 3 agent unreachable. */
export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('show this node and its WireGuard peers from the local agent; views: peers, dns, ipam')
    .argument('[view]', 'detail view: peers | dns | ipam')
    .option('--json', 'print the status as JSON')
    .option('--socket <path>', 'agent API socket', process.env.WEFT_RUN_DIR ? `${process.env.WEFT_RUN_DIR}/weft.sock` : '/run/weft/weft.sock')
    .action(async (view: string | undefined, opts: { json?: boolean; socket: string }) => {
      if (view !== undefined && !['peers', 'dns', 'ipam'].includes(view)) {
        process.stderr.write(`weft status: unknown view ${JSON.stringify(view)} (peers, dns, ipam)\n`);
        process.exitCode = 2;
        return;
      }
      const client = new ApiClient({ socketPath: opts.socket, timeoutMs: 5000 });
      const path = view === 'dns' || view === 'ipam' ? `/v1/status/${view}` : '/v1/status';
      let body: unknown;
      try {
        body = await client.get(path);
      } catch (err) {
        if (err instanceof ApiUnavailableError || err instanceof ApiClientError) {
          process.stderr.write(`weft status: ${err.message}\n`);
          process.exitCode = 3;
          return;
        }
        throw err;
      }
      if (view === 'dns' || view === 'ipam') {
        if (opts.json) process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
        else process.stdout.write(view === 'dns' ? renderDns(body as DnsStatus) : renderIpam(body as IpamStatus, Date.now()));
        return;
      }
      const status = body as AgentStatus;
      const now = status.now ?? Math.floor(Date.now() / 1000);
      if (opts.json) process.stdout.write(`${JSON.stringify(view === 'peers' ? status.peers : status, null, 2)}\n`);
      else process.stdout.write(view === 'peers' ? renderPeers(status, now) : renderStatus(status, now));
      if (!status.ready || status.peers.some((p) => peerUnhealthy(p, now))) process.exitCode = 1;
    });
}
