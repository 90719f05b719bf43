/**
 * `weft rotate-key`: asks the local agent to rotate its WireGuard key now (new key persisted 0600
 * atomically, put on the device, published through the mesh; peers follow). Prints the new public
 * key. Exit codes: 0 rotated, 1 the agent failed to rotate, 3 agent unreachable.
 */
import type { Command } from 'commander';
import { ApiClient, ApiClientError, ApiUnavailableError } from '../api/client.ts';

/** Registers `weft rotate-key`. */
export function registerKeyCommands(program: Command): void {
  program
    .command('rotate-key')
    .description('rotate this node\'s WireGuard key now; peers pick up the new public key through the mesh')
    .option('--json', 'print the result as JSON')
    .option('--socket <path>', 'agent API socket', process.env.WEFT_RUN_DIR ? `${process.env.WEFT_RUN_DIR}/weft.sock` : '/run/weft/weft.sock')
    .action(async (opts: { json?: boolean; socket: string }) => {
      try {
        const r = await new ApiClient({ socketPath: opts.socket, timeoutMs: 30_000 }).post<{ publicKey: string; createdAt: number }>('/v1/keys/rotate', {});
        process.stdout.write(opts.json ? `${JSON.stringify(r)}\n` : `rotated: new public key ${r.publicKey}\n`);
      } catch (err) {
        if (err instanceof ApiClientError) {
          process.stderr.write(`weft rotate-key: ${err.message}${err.details ? `: ${err.details}` : ''}\n`);
          process.exitCode = 1;
          return;
        }
        if (err instanceof ApiUnavailableError) {
          process.stderr.write(`weft rotate-key: ${err.message}\n`);
          process.exitCode = 3;
          return;
        }
        throw err;
      }
    });
}
