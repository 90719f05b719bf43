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
    ['interface', n.ifname],
    ['ready', s.ready ? 'yes' : 'no'],
    ['mesh members', Object.entries(s.mesh.members).filter(([, v]) => v > 0).map(([k, v]) => `${v} ${k}`).join(', ') || '-'],
  ];
  const rows = [['PEER', 'ENDPOINT', 'ALLOWED IPS', 'HANDSHAKE', 'RX', 'TX', 'LINK', 'MESH']];
  for (const p of s.peers) {
    rows.push([
      p.name,
      p.endpoint ?? '-',
      p.allowedIPs.join(',') || '-',
      formatAge(p.lastHandshake, now) + (peerUnhealthy(p, now) ? ' !' : ''),
      formatBytes(p.rxBytes),
      formatBytes(p.txBytes),
      p.link ?? '-',
      p.state,
    ]);
  }
  const peers = s.peers.length === 0 ? 'no peers' : table(rows);
  return `${table(head.map(([k, v]) => [`${k}:`, v!]))}\n\n${peers}\n`;
}

/** Registers `weft status`. Exit codes: 0 fine, 1 a peer is unhealthy or the agent not ready, 3 agent unreachable. */
export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('show this node and its WireGuard peers, from the local agent')
    .option('--json', 'print the status as JSON')
    .option('--socket <path>', 'agent API socket', process.env.WEFT_RUN_DIR ? `${process.env.WEFT_RUN_DIR}/weft.sock` : '/run/weft/weft.sock')
    .action(async (opts: { json?: boolean; socket: string }) => {
      const client = new ApiClient({ socketPath: opts.socket, timeoutMs: 5000 });
      let status: AgentStatus;
      try {
        status = await client.get<AgentStatus>('/v1/status');
      } catch (err) {
        if (err instanceof ApiUnavailableError || err instanceof ApiClientError) {
          process.stderr.write(`weft status: ${err.message}\n`);
          process.exitCode = 3;
          return;
        }
        throw err;
      }
      const now = status.now ?? Math.floor(Date.now() / 1000);
      if (opts.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
      else process.stdout.write(renderStatus(status, now));
      if (!status.ready || status.peers.some((p) => peerUnhealthy(p, now))) process.exitCode = 1;
    });
}
