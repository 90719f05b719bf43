/**
 * `weft join <token> [agent flags]`: runs the join handshake with one of the token's seeds, writes the
 * mesh key (`--mesh-key-file`, default `<state-dir>/mesh.key`, mode 0600) and the signed admission
 * (`<state-dir>/admission.json`, 0600), then starts the agent normally with the seeds the mesh returned
 * (unless `--seeds` is given). Run again after a restart, it finds the admission for its identity and
 * starts the agent without redeeming the (spent) token again.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { AGENT_OPTIONS, type Config, type HostPort } from '../config.ts';
import { identityFromSeed } from '../../mesh/crypto.ts';
import { loadOrCreateSecretFile, readSecretFile } from '../agent/secrets.ts';
import { writePrivateFile } from '../wireguard/keys.ts';
import { JoinError, joinMesh } from '../token/join-client.ts';
import { verifyAdmission, type JoinGrant } from '../token/handshake.ts';
import { TokenFormatError, parseToken } from '../token/token.ts';
import { EXIT_CONFIG, EXIT_STARTUP, configOrExit } from './agent.ts';

/** What `<state-dir>/admission.json` holds. */
export interface StoredAdmission {
  readonly admission: string;
  readonly admissionSig: string;
  readonly admitterKey: string;
  readonly seeds: readonly string[];
}

/** Reads a stored admission that verifies and names this identity, or undefined. */
export async function readStoredAdmission(stateDir: string, name: string, identityKey: string): Promise<StoredAdmission | undefined> {
  let text: string;
  try {
    text = await readFile(join(stateDir, 'admission.json'), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const v = JSON.parse(text) as StoredAdmission;
    const a = verifyAdmission(v.admission, v.admissionSig, v.admitterKey);
    if (!a || a.name !== name || a.identityKey !== identityKey) return undefined;
    return { admission: v.admission, admissionSig: v.admissionSig, admitterKey: v.admitterKey, seeds: Array.isArray(v.seeds) ? v.seeds.filter((s) => typeof s === 'string') : [] };
  } catch {
    return undefined;
  }
}

/**
 * Redeems `token` (unless this identity already holds an admission and the mesh key exists) and returns
 * the config to start the agent with: mesh key file set, seeds from the grant when none were given.
 */
export async function joinAndPrepare(config: Config, token: string, log: (line: string) => void = () => {}): Promise<{ config: Config; joined: boolean }> {
  const parsed = parseToken(token);
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const identity = identityFromSeed((await loadOrCreateSecretFile(join(config.stateDir, 'identity.key'))).value);
  const identityKey = Buffer.from(identity.publicKey).toString('base64');
  const meshKeyFile = config.meshKeyFile ?? join(config.stateDir, 'mesh.key');
  let stored = await readStoredAdmission(config.stateDir, config.name, identityKey);
  let joined = false;
  if (!stored || !(await readSecretFile(meshKeyFile))) {
    const grant: JoinGrant & { seed: string } = await joinMesh({ token: parsed, name: config.name, identity, podCIDRs: config.podCIDRs });
    const existing = await readSecretFile(meshKeyFile);
    if (existing && Buffer.compare(Buffer.from(existing), Buffer.from(grant.meshKey)) !== 0) {
      throw new JoinError('protocol', `${meshKeyFile} already holds a different mesh key; remove it to join this mesh`);
    }
    if (!existing) await loadOrCreateSecretFile(meshKeyFile, () => grant.meshKey);
    stored = { admission: grant.admissionJson, admissionSig: grant.admissionSig, admitterKey: grant.admitterKey, seeds: grant.seeds };
    await writePrivateFile(join(config.stateDir, 'admission.json'), `${JSON.stringify(stored, null, 2)}\n`, 'replace');
    log(`admitted by ${grant.admission.admittedBy} through ${grant.seed} with token ${parsed.id}`);
    joined = true;
  } else {
    log(`already admitted (${join(config.stateDir, 'admission.json')}); starting the agent`);
  }
  const seeds: HostPort[] =
    config.seeds.length > 0
      ? [...config.seeds]
      : stored.seeds.flatMap((s) => {
          const m = /^\[(.+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
          return m ? [{ host: m[1]!, port: Number(m[2]) }] : [];
        });
  return { config: { ...config, meshKeyFile, seeds }, joined };
}

/** Registers `weft join <token>` with every agent option. */
export function registerJoinCommand(program: Command): void {
  const cmd = program
    .command('join')
    .description('join a weft mesh with a token (from `weft token create` on a member), then run the agent')
    .argument('<token>', 'the join token (or "-" to read it from stdin, keeping it out of the process list)');
  for (const o of AGENT_OPTIONS) cmd.option(`${o.flag} ${o.arg}`, `${o.help} [${o.env}]`);
  cmd.option('--no-start', 'only join: write the mesh key and admission, do not start the agent');
  cmd.action(async (tokenArg: string, opts: Record<string, unknown>) => {
    const config = configOrExit(opts, process.env);
    let prepared: Awaited<ReturnType<typeof joinAndPrepare>>;
    try {
      const token = tokenArg === '-' ? (await readStdin()).trim() : tokenArg;
      prepared = await joinAndPrepare(config, token, (l) => process.stderr.write(`weft join: ${l}\n`));
    } catch (err) {
      if (err instanceof TokenFormatError) {
        process.stderr.write(`weft join: ${err.message}\n`);
        process.exit(EXIT_CONFIG);
      }
      process.stderr.write(`weft join: ${(err as Error).message.replace(/^join: /, '')}\n`);
      process.exit(EXIT_STARTUP);
    }
    if (opts.start === false) return;
    const wire = await import('../agent/wire.ts');
    let running: Awaited<ReturnType<typeof wire.runAgent>>;
    try {
      running = await wire.runAgent(prepared.config);
    } catch (err) {
      process.stderr.write(`weft join: agent: ${(err as Error).message}\n`);
      process.exit(EXIT_STARTUP);
    }
    process.on('unhandledRejection', (err) => running.logger.error({ err }, 'unhandled rejection (ignored)'));
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      running.logger.info({ signal }, 'shutting down (datapath stays in place)');
      setTimeout(() => process.exit(0), 10_000).unref();
      running.stop().then(
        () => process.exit(0),
        () => process.exit(0),
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > 4096) throw new TokenFormatError('stdin holds more than a token');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
