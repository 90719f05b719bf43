#!/usr/bin/env node
/**
 * The `weft` command line. Wiring only: each command lives in `src/cli/<command>.ts` (or, for the
 * lab, `src/lab/cli.ts`) and is registered here.
 */
import { Command } from 'commander';
import { registerAgentCommand } from './cli/agent.ts';
import { registerBenchCommand } from './cli/bench.ts';
import { registerStatusCommand } from './cli/status.ts';
import { registerVerifyCommand } from './cli/verify.ts';
import { registerAuditCommand } from './cli/audit.ts';
import { registerKeyCommands, registerMeshKeyCommands } from './cli/keys.ts';
import { registerLabCommands } from './lab/cli.ts';
import { registerTokenCommands } from './cli/token.ts';
import { registerJoinCommand } from './cli/join.ts';

/** Builds the program with every command registered (exported for tests). */
export function buildProgram(): Command {
  const program = new Command();
  program.name('weft').description('weft: a WireGuard mesh overlay network for Kubernetes').showHelpAfterError();
  registerAgentCommand(program);
  registerStatusCommand(program);
  registerVerifyCommand(program);
  registerAuditCommand(program);
  registerKeyCommands(program);
  registerMeshKeyCommands(program);
  registerLabCommands(program);
  registerTokenCommands(program);
  registerJoinCommand(program);
  registerBenchCommand(program);
  return program;
}

if (import.meta.main) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`weft: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
}
