/**
 * `weft rotate-key`: asks the local agent to rotate its WireGuard key now (new key persisted 0600
 * atomically, put on the device, published through the mesh; peers follow). Prints the new public
 * key. Exit codes: 0 rotated, 1 the agent failed to rotate, 3 agent unreachable.
 *
 * `weft mesh-key list | generate <file> | rotate <install|switch|retire> --key-file F`: mesh key
 * rotation on this node's agent (see `src/agent/mesh-keys.ts`). Run each step on EVERY node before
 * the next step: install the new key, switch the primary to it, retire the old key. Keys are read
 * from files (never from the command line) and shown only as ids.
 */
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { ApiClient, ApiClientError, ApiUnavailableError } from '../api/client.ts';
import { parseMeshKey } from '../agent/mesh-keys.ts';

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

const SOCKET_DEFAULT = process.env.WEFT_RUN_DIR ? `${process.env.WEFT_RUN_DIR}/weft.sock` : '/run/weft/weft.sock';

async function callAgent(socket: string, what: string, fn: (c: ApiClient) => Promise<unknown>): Promise<unknown> {
  try {
    return await fn(new ApiClient({ socketPath: socket, timeoutMs: 10_000 }));
  } catch (err) {
    if (err instanceof ApiClientError || err instanceof ApiUnavailableError) {
      process.stderr.write(`weft mesh-key ${what}: ${err.message}\n`);
      process.exitCode = err instanceof ApiClientError ? 1 : 3;
      return undefined;
    }
    throw err;
  }
}

/** Reads a base64 32-byte key from a file; exits 2 with a message when unreadable. */
async function keyFromFile(path: string): Promise<string | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    parseMeshKey(text);
    return text;
  } catch (err) {
    process.stderr.write(`weft mesh-key: ${path}: ${(err as Error).message}\n`);
    process.exitCode = 2;
    return undefined;
  }
}

function printList(r: unknown, json: boolean | undefined): void {
  const l = r as { primary: string; keys: string[] };
  process.stdout.write(json ? `${JSON.stringify(l)}\n` : `${l.keys.map((k) => `${k}${k === l.primary ? '  primary' : ''}`).join('\n')}\n`);
}

/** Registers `weft mesh-key`. */
export function registerMeshKeyCommands(program: Command): void {
  const mk = program.command('mesh-key').description('mesh (gossip) key rotation: install the new key on every node, switch the primary on every node, retire the old key on every node');
  mk.command('list')
    .description('key ids installed on this node, primary first')
    .option('--json', 'print as JSON')
    .option('--socket <path>', 'agent API socket', SOCKET_DEFAULT)
    .action(async (opts: { json?: boolean; socket: string }) => {
      const r = await callAgent(opts.socket, 'list', (c) => c.get('/v1/mesh-key'));
      if (r) printList(r, opts.json);
    });
  mk.command('generate')
    .description('write a new random mesh key (base64, mode 0600) to a new file')
    .argument('<file>', 'file to create (must not exist)')
    .action(async (file: string) => {
      try {
        const fh = await open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        try {
          await fh.chmod(0o600);
          await fh.writeFile(`${randomBytes(32).toString('base64')}\n`);
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch (err) {
        process.stderr.write(`weft mesh-key generate: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
  mk.command('rotate')
    .description('one step of a mesh key rotation on this node: install (accept the new key), switch (seal with it), retire (drop the old key)')
    .argument('<step>', 'install | switch | retire')
    .requiredOption('--key-file <path>', 'the key of this step: the new key for install and switch, the old key for retire')
    .option('--json', 'print the resulting key ids as JSON')
    .option('--socket <path>', 'agent API socket', SOCKET_DEFAULT)
    .action(async (step: string, opts: { keyFile: string; json?: boolean; socket: string }) => {
      const route = ({ install: 'install', switch: 'use', retire: 'remove' } as Record<string, string>)[step];
      if (!route) {
        process.stderr.write(`weft mesh-key rotate: unknown step ${JSON.stringify(step)} (install, switch, retire)\n`);
        process.exitCode = 2;
        return;
      }
      const key = await keyFromFile(opts.keyFile);
      if (key === undefined) return;
      const r = await callAgent(opts.socket, `rotate ${step}`, (c) => c.post(`/v1/mesh-key/${route}`, { key }));
      if (r) printList(r, opts.json);
    });
}
