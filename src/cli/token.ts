/**
 * `weft token create|list|revoke` and `weft node remove <name>`: thin clients of the local agent's API
 * (routes mounted by `src/token/service.ts`). The table renderer is pure for tests.
 */
import type { Command } from 'commander';
import { ApiClient, ApiClientError, ApiUnavailableError } from '../api/client.ts';
import type { TokenListing } from '../token/store.ts';

const defaultSocket = (): string => (process.env.WEFT_RUN_DIR ? `${process.env.WEFT_RUN_DIR}/weft.sock` : '/run/weft/weft.sock');

/** Renders `weft token list`. `now` in ms. */
export function renderTokens(tokens: readonly TokenListing[], now: number): string {
  if (tokens.length === 0) return 'no tokens\n';
  const rows = [['ID', 'STATUS', 'EXPIRES', 'USES LEFT', 'ISSUED BY', 'REDEEMED BY', 'DESCRIPTION']];
  for (const t of tokens) {
    const left = t.expiresAt - now;
    const exp = left <= 0 ? 'expired' : left < 3600_000 ? `in ${Math.ceil(left / 60_000)}m` : `in ${Math.floor(left / 3600_000)}h${Math.floor((left % 3600_000) / 60_000)}m`;
    const issuer = t.restoredBy !== undefined ? `${t.issuedBy} (restored by ${t.restoredBy})` : t.issuedBy;
    rows.push([t.id, t.status, exp, `${t.usesLeft}/${t.uses}`, issuer, t.redeemedBy.join(',') || '-', t.description ?? '']);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return `${rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n')}\n`;
}

async function call<T>(socket: string, what: string, fn: (c: ApiClient) => Promise<T>): Promise<T | undefined> {
  try {
    return await fn(new ApiClient({ socketPath: socket, timeoutMs: 10_000 }));
  } catch (err) {
    if (err instanceof ApiClientError) {
      process.stderr.write(`weft ${what}: ${err.message}\n`);
      process.exitCode = 1;
      return undefined;
    }
    if (err instanceof ApiUnavailableError) {
      process.stderr.write(`weft ${what}: ${err.message}\n`);
      process.exitCode = 3;
      return undefined;
    }
    throw err;
  }
}

/** Registers `weft token ...` and `weft node remove`. Exit codes: 0 ok, 1 refused by the agent, 2 bad usage, 3 agent unreachable. */
export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description('manage join tokens for nodes outside the cluster network (weft join)');
  token
    .command('create')
    .description('create a join token and print it (the only time its secret is shown)')
    .option('--ttl <duration>', 'lifetime, e.g. 30m, 1h, 24h', '1h')
    .option('--uses <n>', 'how many nodes may join with it', '1')
    .option('--seeds <host:port,...>', 'join addresses embedded in the token (default: this agent\'s join listener)')
    .option('--description <text>', 'free text shown by token list')
    .option('--json', 'print {token, id, expiresAt} as JSON')
    .option('--socket <path>', 'agent API socket', defaultSocket())
    .action(async (o: { ttl: string; uses: string; seeds?: string; description?: string; json?: boolean; socket: string }) => {
      if (!/^\d{1,4}$/.test(o.uses)) {
        process.stderr.write('weft token create: --uses must be a number\n');
        process.exitCode = 2;
        return;
      }
      const seeds = o.seeds ? o.seeds.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
      const out = await call(o.socket, 'token create', (c) => c.post<{ token: string; id: string; expiresAt: number }>('/v1/token/create', { ttl: o.ttl, uses: Number(o.uses), seeds, description: o.description }));
      if (!out) return;
      if (o.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      else process.stdout.write(`${out.token}\n`);
      if (!o.json) process.stderr.write(`token ${out.id} expires ${new Date(out.expiresAt).toISOString()}; join with: weft join <token> --listen-addr <ip>\n`);
    });
  token
    .command('list')
    .description('list the tokens the mesh knows: id, status, expiry, uses left, issuer')
    .option('--json', 'print JSON')
    .option('--socket <path>', 'agent API socket', defaultSocket())
    .action(async (o: { json?: boolean; socket: string }) => {
      const out = await call(o.socket, 'token list', (c) => c.get<{ tokens: TokenListing[] }>('/v1/token/list'));
      if (!out) return;
      process.stdout.write(o.json ? `${JSON.stringify(out.tokens, null, 2)}\n` : renderTokens(out.tokens, Date.now()));
    });
  token
    .command('revoke')
    .description('revoke a token everywhere in the mesh')
    .argument('<id>', 'token id (the part after "weft1.")')
    .option('--socket <path>', 'agent API socket', defaultSocket())
    .action(async (id: string, o: { socket: string }) => {
      const out = await call(o.socket, 'token revoke', (c) => c.post<{ id: string }>('/v1/token/revoke', { id }));
      if (out) process.stdout.write(`token ${out.id} revoked\n`);
    });
  const node = program.command('node').description('manage mesh nodes');
  node
    .command('remove')
    .description("revoke a node's admission: every member drops its peer, routes and DNS names and rejects its records")
    .argument('<name>', 'node name')
    .option('--reason <text>', 'recorded in the revocation and the audit log')
    .option('--socket <path>', 'agent API socket', defaultSocket())
    .action(async (name: string, o: { reason?: string; socket: string }) => {
      const out = await call(o.socket, 'node remove', (c) => c.post<{ name: string; identityKey?: string }>('/v1/node/remove', { name, reason: o.reason }));
      if (out) process.stdout.write(`node ${out.name} removed${out.identityKey ? ` (identity ${out.identityKey} revoked)` : ' (not currently a member: its name is revoked)'}\n`);
    });
}
