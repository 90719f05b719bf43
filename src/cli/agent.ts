/**
 * `weft agent`: parse flags and `WEFT_*` env into a Config (a bad value: one line on stderr, exit
 * code 2), then run the agent until SIGTERM/SIGINT, or `--uninstall` to remove what weft created.
 */
import type { Command } from 'commander';
import { AGENT_OPTIONS, ConfigError, parseConfig, type Config } from '../config.ts';

/** Exit code for a bad configuration value. */
export const EXIT_CONFIG = 2;
/** Exit code for a fatal startup error (keys, sockets, no block). */
export const EXIT_STARTUP = 1;

/** Parses the agent's options; prints one line and exits 2 on a bad value. */
export function configOrExit(opts: Record<string, unknown>, env: NodeJS.ProcessEnv): Config {
  const raw: Record<string, string | undefined> = {};
  for (const o of AGENT_OPTIONS) {
    const v = opts[o.key];
    if (typeof v === 'string') raw[o.key] = v;
  }
  try {
    return parseConfig(raw, env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`weft agent: ${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
}

/** Registers `weft agent [--uninstall [--purge]]` with every agent option. */
export function registerAgentCommand(program: Command): void {
  const cmd = program.command('agent').description('run the weft node agent (mesh, WireGuard datapath, CNI API, DNS)');
  for (const o of AGENT_OPTIONS) {
    cmd.option(`${o.flag} ${o.arg}`, `${o.help} [${o.env}]${o.default ? ` (default: ${o.default === '' ? 'none' : o.default})` : ''}`);
  }
  cmd.option('--uninstall', 'remove everything weft created on this node (interface, routes, pod gateway device weftgw0 and a legacy weftbr0, pod block and addresses), keep the keys, and exit');
  cmd.option('--purge', 'with --uninstall: also delete the state directory (keys included; the node rejoins as a new identity)');
  cmd.action(async (opts: Record<string, unknown>) => {
    const config = configOrExit(opts, process.env);
    const wire = await import('../agent/wire.ts');
    if (opts.uninstall) {
      try {
        await wire.uninstall(config, { purge: opts.purge === true });
        process.exitCode = 0;
      } catch (err) {
        process.stderr.write(`weft agent --uninstall: ${(err as Error).message}\n`);
        process.exitCode = EXIT_STARTUP;
      }
      return;
    }
    let running: Awaited<ReturnType<typeof wire.runAgent>>;
    try {
      running = await wire.runAgent(config);
    } catch (err) {
      process.stderr.write(`weft agent: ${(err as Error).message}\n`);
      process.exit(EXIT_STARTUP);
    }
    // A stray rejection is logged and the agent goes on; an uncaught exception leaves the process
    // in an unknown state, so it is logged and the process exits (the datapath stays; the
    // supervisor restarts the agent, which adopts it).
    process.on('unhandledRejection', (err) => running.logger.error({ err }, 'unhandled rejection (ignored)'));
    process.on('uncaughtException', (err) => {
      running.logger.fatal({ err }, 'uncaught exception; exiting (the datapath stays in place)');
      process.exit(EXIT_STARTUP);
    });
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      running.logger.info({ signal }, 'shutting down (datapath stays in place)');
      const force = setTimeout(() => process.exit(0), 10_000);
      force.unref();
      running.stop().then(
        () => process.exit(0),
        () => process.exit(0),
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });
}
