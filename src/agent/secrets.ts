/**
 * The agent's secret files besides the WireGuard key (which `src/wireguard/keys.ts` owns): the
 * mesh identity seed (`<state-dir>/identity.key`, created on first start) and the mesh key
 * (`--mesh-key-file`, provided by the operator). Both hold one base64 32-byte value and must not be
 * readable by group or others. Their contents are never logged.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writePrivateFile } from '../wireguard/keys.ts';

/** A secret file is missing, unsafe (mode, symlink, not a regular file) or malformed. */
export class SecretFileError extends Error {
  override name = 'SecretFileError';
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(`secret ${path}: ${message}`, options);
  }
}

const MAX_FILE = 4096;

/** Reads a base64 32-byte secret; refuses symlinks, non-regular files and group/other access. Null when missing. */
export async function readSecretFile(path: string): Promise<Uint8Array | null> {
  let fh;
  try {
    fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new SecretFileError(path, 'is a symbolic link; refusing to follow it', { cause: err });
    throw new SecretFileError(path, `cannot open: ${code ?? (err as Error).message}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new SecretFileError(path, 'is not a regular file');
    if ((st.mode & 0o077) !== 0) throw new SecretFileError(path, `has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}; it must not be accessible by group or others (chmod 600)`);
    if (st.size > MAX_FILE) throw new SecretFileError(path, `is larger than ${MAX_FILE} bytes`);
    const text = (await fh.readFile('utf8')).trim();
    if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) throw new SecretFileError(path, 'must hold exactly one base64-encoded 32-byte key');
    return new Uint8Array(Buffer.from(text, 'base64'));
  } finally {
    await fh.close();
  }
}

/** Reads a secret that must exist (e.g. the mesh key). */
export async function requireSecretFile(path: string): Promise<Uint8Array> {
  const v = await readSecretFile(path);
  if (v === null) throw new SecretFileError(path, 'does not exist');
  return v;
}

/**
 * Loads a base64 32-byte secret, or creates a random one atomically with mode 0600 (parent
 * directory 0700). Concurrent callers all end up with the same value.
 */
export async function loadOrCreateSecretFile(path: string, random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))): Promise<{ value: Uint8Array; created: boolean }> {
  const existing = await readSecretFile(path);
  if (existing) return { value: existing, created: false };
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const value = random(32);
  if (value.length !== 32) throw new SecretFileError(path, 'random source returned the wrong length');
  let written: boolean;
  try {
    written = await writePrivateFile(path, `${Buffer.from(value).toString('base64')}\n`, 'create');
  } catch (err) {
    throw new SecretFileError(path, 'cannot create', { cause: err });
  }
  if (!written) {
    const theirs = await readSecretFile(path);
    if (!theirs) throw new SecretFileError(path, 'vanished while being created');
    return { value: theirs, created: false };
  }
  return { value, created: true };
}
