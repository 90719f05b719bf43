/**
 * `weft-cni`: the CNI plugin executable (spec 1.1.0; accepts configs of 0.3.0 to 1.1.0). A thin
 * client of the agent's local API: it decodes and validates what the runtime passed (stdin +
 * `CNI_*` env), forwards ADD/DEL/CHECK/GC/STATUS to the agent socket, and prints the result
 * converted to the config's version. Errors are spec JSON on stdout with a non-zero exit; logs go
 * to stderr; no stack trace is ever printed. When the agent is down, ADD/CHECK fail with code 11
 * and DEL succeeds after queueing the release for the agent (see del-queue.ts).
 */
import { AgentError, AgentUnavailableError, callAgent } from './agent-client.ts';
import { enqueueDel } from './del-queue.ts';
import {
  CNI_LIMITS,
  CniCode,
  CniError,
  compareVersions,
  convertResult,
  CURRENT_VERSION,
  isSupportedVersion,
  parseCniArgs,
  SUPPORTED_VERSIONS,
  type CniCommand,
  type CniResult,
  type CniVersion,
  type ForwardedRequest,
} from './spec.ts';

/** Default agent socket (decisions: `<runDir>/weft.sock`). */
export const DEFAULT_SOCKET = '/run/weft/weft.sock';
/** Default state directory, where the DEL queue lives. */
export const DEFAULT_STATE_DIR = '/var/lib/weft';

/** The plugin's logger: pino's call shape, so a pino logger can be passed in tests. */
export interface PluginLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;

/**
 * JSON lines on stderr in pino's format (level number, time, msg). The plugin does not load pino
 * itself: it is a short-lived process whose start-up time is ADD latency, and pino's stream stack
 * costs more to load than the plugin writes in its whole life.
 */
export function stderrLogger(level: string | undefined, write: (line: string) => void = (l) => process.stderr.write(l)): PluginLogger {
  const min = LEVELS[(level ?? 'warn') as keyof typeof LEVELS] ?? LEVELS.warn;
  const at = (n: number) => (obj: object, msg: string) => {
    if (n < min) return;
    write(`${JSON.stringify({ level: n, time: Date.now(), component: 'weft-cni', ...obj, msg })}\n`);
  };
  return { info: at(LEVELS.info), warn: at(LEVELS.warn), error: at(LEVELS.error) };
}

/** What one plugin invocation sees and where it writes; injected so tests can run it in-process. */
export interface PluginIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdin: Buffer;
  readonly logger: PluginLogger;
  readonly now?: () => number;
  /** Per-request timeouts, ms. */
  readonly timeouts?: Partial<Record<'add' | 'del' | 'check' | 'gc' | 'status', number>>;
}

/** Outcome: what to print on stdout and the exit code. */
export interface PluginOutcome {
  readonly stdout: string;
  readonly exitCode: number;
}

const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];

/** The plugin's network configuration after validation. */
interface NetConf {
  readonly raw: Record<string, unknown>;
  readonly cniVersion: CniVersion;
  readonly socket: string;
  readonly stateDir: string;
}

function parseConf(stdin: Buffer): Record<string, unknown> {
  if (stdin.length > CNI_LIMITS.stdinBytes) throw new CniError(CniCode.decoding, `network configuration on stdin is larger than ${CNI_LIMITS.stdinBytes} bytes`);
  const text = stdin.toString('utf8').trim();
  if (text === '') throw new CniError(CniCode.decoding, 'no network configuration on stdin');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new CniError(CniCode.decoding, 'network configuration on stdin is not valid JSON', (err as Error).message);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new CniError(CniCode.decoding, 'network configuration must be a JSON object');
  return v as Record<string, unknown>;
}

function checkConf(raw: Record<string, unknown>, env: PluginIo['env']): NetConf {
  const version = raw.cniVersion;
  if (typeof version !== 'string' || version === '') throw new CniError(CniCode.invalidConfig, 'network configuration has no cniVersion');
  if (!isSupportedVersion(version)) {
    throw new CniError(CniCode.incompatibleVersion, `incompatible CNI version ${JSON.stringify(version.slice(0, 32))}`, `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  if (typeof raw.name !== 'string' || raw.name === '') throw new CniError(CniCode.invalidConfig, 'network configuration has no name');
  const path = (k: string, fallback: string): string => {
    const v = raw[k];
    if (v === undefined) return fallback;
    if (typeof v !== 'string' || !v.startsWith('/') || v.length > 1024) throw new CniError(CniCode.invalidConfig, `network configuration field ${k} must be an absolute path`);
    return v;
  };
  return { raw, cniVersion: version, socket: path('socket', DEFAULT_SOCKET), stateDir: path('stateDir', env.WEFT_STATE_DIR || DEFAULT_STATE_DIR) };
}

function requireEnv(env: PluginIo['env'], name: string, max: number): string {
  const v = env[name];
  if (v === undefined || v === '') throw new CniError(CniCode.invalidEnv, `environment variable ${name} is required`);
  if (v.length > max || /[\u0000-\u001f]/.test(v)) throw new CniError(CniCode.invalidEnv, `environment variable ${name} is invalid (at most ${max} printable characters)`);
  return v;
}

function errorOut(version: string, err: unknown): PluginOutcome {
  const e = err instanceof CniError ? err : new CniError(CniCode.generic, 'internal error', err instanceof Error ? err.message : String(err));
  const body: Record<string, unknown> = { cniVersion: version, code: e.code, msg: e.message };
  if (e.details) body.details = e.details;
  return { stdout: `${JSON.stringify(body)}\n`, exitCode: 1 };
}

/**
 * Runs one invocation. Never throws: every failure becomes a spec error on stdout. The caller
 * writes `stdout` and exits with `exitCode`.
 */
export async function runPlugin(io: PluginIo): Promise<PluginOutcome> {
  const log = io.logger;
  let version: string = CURRENT_VERSION;
  try {
    const command = io.env.CNI_COMMAND;
    if (!command) throw new CniError(CniCode.invalidEnv, 'environment variable CNI_COMMAND is required (ADD, DEL, CHECK, VERSION, STATUS or GC)');
    if (!COMMANDS.includes(command as CniCommand)) throw new CniError(CniCode.invalidEnv, `unknown CNI_COMMAND ${JSON.stringify(command.slice(0, 32))}`);
    if (command === 'VERSION') {
      // The runtime may send {"cniVersion": ...}; the answer is the same whatever it sent.
      return { stdout: `${JSON.stringify({ cniVersion: CURRENT_VERSION, supportedVersions: SUPPORTED_VERSIONS })}\n`, exitCode: 0 };
    }
    const raw = parseConf(io.stdin);
    if (typeof raw.cniVersion === 'string' && isSupportedVersion(raw.cniVersion)) version = raw.cniVersion;
    const conf = checkConf(raw, io.env);
    const cmd = command as Exclude<CniCommand, 'VERSION'>;
    if (cmd === 'CHECK' && compareVersions(conf.cniVersion, '0.4.0') < 0) throw new CniError(CniCode.incompatibleVersion, `CHECK is not defined for cniVersion ${conf.cniVersion} (needs 0.4.0 or later)`);
    if ((cmd === 'GC' || cmd === 'STATUS') && compareVersions(conf.cniVersion, '1.1.0') < 0) throw new CniError(CniCode.incompatibleVersion, `${cmd} is not defined for cniVersion ${conf.cniVersion} (needs 1.1.0)`);

    const target = cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK';
    const req: ForwardedRequest = {
      command: cmd,
      containerId: target ? requireEnv(io.env, 'CNI_CONTAINERID', CNI_LIMITS.containerId) : '',
      ifname: target ? requireEnv(io.env, 'CNI_IFNAME', CNI_LIMITS.ifname) : '',
      netns: cmd === 'ADD' || cmd === 'CHECK' ? requireEnv(io.env, 'CNI_NETNS', CNI_LIMITS.netns) : (io.env.CNI_NETNS ?? '').slice(0, CNI_LIMITS.netns),
      args: parseCniArgs(io.env.CNI_ARGS),
      config: raw,
      ...(raw.prevResult !== undefined ? { prevResult: raw.prevResult } : {}),
    };
    if (target && !/^[^\s/:]{1,15}$/.test(req.ifname)) throw new CniError(CniCode.invalidEnv, 'CNI_IFNAME must be 1..15 characters without whitespace, "/" or ":"');

    const t = { add: 20_000, del: 20_000, check: 20_000, gc: 60_000, status: 5_000, ...io.timeouts };
    const client = (ms: number) => ({
      post: (path: string, body: unknown) => callAgent({ socketPath: conf.socket, method: 'POST', path, body, timeoutMs: ms }),
      get: (path: string) => callAgent({ socketPath: conf.socket, method: 'GET', path, timeoutMs: ms }),
    });
    const started = performance.now();
    try {
      switch (cmd) {
        case 'ADD': {
          const result = (await client(t.add).post('/v1/cni/add', req)) as CniResult;
          if (!result || !Array.isArray(result.ips) || !Array.isArray(result.interfaces)) throw new CniError(CniCode.generic, 'the agent returned a malformed ADD result');
          log.info({ cmd, containerId: req.containerId, ms: Math.round(performance.now() - started) }, 'done');
          return { stdout: `${JSON.stringify(convertResult(result, conf.cniVersion))}\n`, exitCode: 0 };
        }
        case 'DEL':
          await client(t.del).post('/v1/cni/del', req);
          return { stdout: '', exitCode: 0 };
        case 'CHECK':
          await client(t.check).post('/v1/cni/check', req);
          return { stdout: '', exitCode: 0 };
        case 'GC':
          await client(t.gc).post('/v1/cni/gc', req);
          return { stdout: '', exitCode: 0 };
        case 'STATUS':
          await client(t.status).get('/v1/cni/status');
          return { stdout: '', exitCode: 0 };
      }
    } catch (err) {
      if (err instanceof AgentError) throw new CniError(err.code, err.message, err.details || undefined);
      if (!(err instanceof AgentUnavailableError)) throw err;
      log.warn({ cmd, socket: conf.socket, err: err.message }, 'agent unavailable');
      if (cmd === 'DEL') {
        try {
          const file = await enqueueDel(conf.stateDir, { containerId: req.containerId, ifname: req.ifname, netns: req.netns, queuedAt: (io.now ?? Date.now)() });
          log.warn({ file }, 'agent down: DEL queued for the agent');
        } catch (qerr) {
          // DEL must still succeed; the agent's GC reclaims what the queue could not record.
          log.error({ err: (qerr as Error).message }, 'agent down and the DEL queue is not writable; GC will reclaim the address');
        }
        return { stdout: '', exitCode: 0 };
      }
      if (cmd === 'STATUS') throw new CniError(CniCode.pluginNotAvailable, 'the weft agent is not running', err.message);
      throw new CniError(CniCode.tryAgainLater, 'the weft agent is not reachable; try again later', err.message);
    }
  } catch (err) {
    if (err instanceof CniError) log.warn({ code: err.code, msg: err.message, details: err.details }, 'failed');
    else log.error({ err: err instanceof Error ? err.message : String(err) }, 'internal error');
    return errorOut(version, err);
  }
}

async function readStdin(max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    size += c.length;
    chunks.push(c);
    if (size > max) break; // runPlugin sees more than the bound and rejects it with code 6
  }
  return Buffer.concat(chunks);
}

/** Process entry: reads stdin (unless VERSION), runs, writes stdout, exits. */
export async function main(): Promise<void> {
  const logger = stderrLogger(process.env.WEFT_CNI_LOG_LEVEL);
  // VERSION ignores its input, so it never waits on a stdin the caller left open.
  const stdin = process.env.CNI_COMMAND === 'VERSION' ? Buffer.alloc(0) : await readStdin(CNI_LIMITS.stdinBytes + 1);
  const out = await runPlugin({ env: process.env, stdin, logger });
  process.stdout.write(out.stdout, () => process.exit(out.exitCode));
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    // Last resort: still a spec error, never a stack trace.
    process.stdout.write(`${JSON.stringify({ cniVersion: CURRENT_VERSION, code: CniCode.generic, msg: 'internal error', details: err instanceof Error ? err.message : String(err) })}\n`, () => process.exit(1));
  });
}
