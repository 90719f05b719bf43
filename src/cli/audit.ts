/**
 * `weft audit [--file F] [--since 2h] [--event E...] [--json]`: reads the agent's audit trail
 * (pino lines with `audit: true`) back from its log file or stdin. Exit 0 when it could read the
 * input (even with no events), 1 when it could not, 2 for a bad flag.
 */
import type { Command } from 'commander';
import { createReadStream } from 'node:fs';
import { filterAudit, parseSince, renderAudit } from '../observe/audit.ts';

/** Input read at most (a log larger than this is read from its last part). */
export const MAX_AUDIT_INPUT = 256 * 1024 * 1024;

async function readInput(file: string | undefined): Promise<string> {
  const stream = file === undefined || file === '-' ? process.stdin : createReadStream(file);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stream as AsyncIterable<Buffer | string>) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    chunks.push(b);
    size += b.length;
    // Bounded: keep only the newest MAX_AUDIT_INPUT bytes.
    while (size > MAX_AUDIT_INPUT && chunks.length > 1) size -= chunks.shift()!.length;
  }
  return Buffer.concat(chunks).toString('utf8');
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];
}

/** Registers `weft audit`. */
export function registerAuditCommand(program: Command): void {
  program
    .command('audit')
    .description('read the audit trail (joins, removals, key rotations, rejected records and packets) back from an agent log')
    .option('--file <path>', 'agent log file (default: stdin, e.g. kubectl logs ... | weft audit)')
    .option('--since <when>', 'only events since a duration ago (15m, 2h, 7d) or an ISO date')
    .option('--event <name>', 'only these events (repeatable or comma list)', collect, [] as string[])
    .option('--json', 'print the events as JSON lines (every field)')
    .action(async (opts: { file?: string; since?: string; event: string[]; json?: boolean }) => {
      let since: number | undefined;
      try {
        since = opts.since === undefined ? undefined : parseSince(opts.since, Date.now());
      } catch (err) {
        process.stderr.write(`weft ${(err as Error).message}\n`);
        process.exitCode = 2;
        return;
      }
      let text: string;
      try {
        text = await readInput(opts.file);
      } catch (err) {
        process.stderr.write(`weft audit: cannot read ${opts.file ?? 'stdin'}: ${(err as Error).message}\n`);
        process.exitCode = 1;
        return;
      }
      const events = filterAudit(text, { since, events: opts.event });
      process.stdout.write(opts.json ? events.map((e) => JSON.stringify(e.fields)).join('\n') + (events.length ? '\n' : '') : renderAudit(events));
    });
}
