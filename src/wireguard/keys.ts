/**
 * WireGuard (X25519) keys: generation, validation, base64/hex/bytes conversion, public-from-private,
 * and the node's private key file. Keys never appear in error messages or logs: errors name the
 * file or the kind of problem, never the key material.
 *
 * Key file policy (decided here, relied on by the agent): the file holds the base64 key and a
 * newline, like `wg genkey`. It is created atomically with mode 0600 (written to a temporary file in
 * the same directory, then hard-linked into place so that a concurrent creator never clobbers an
 * existing key). An existing file whose mode grants any access to group or others is REFUSED with a
 * {@link KeyFileError}: the key may already have leaked, so silently fixing the mode would hide it.
 * The operator either `chmod 600`s it (if they trust it) or deletes it to rotate.
 */
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { link, mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import nacl from 'tweetnacl';

/** Length of a WireGuard key in bytes. */
export const KEY_LEN = 32;

/** A malformed key (wrong length, bad encoding). The message never contains the key. */
export class KeyError extends Error {
  override name = 'KeyError';
}

/** The private key file cannot be read, created or trusted. */
export class KeyFileError extends Error {
  override name = 'KeyFileError';
  /** The path at fault. */
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(`keys: ${path}: ${message}`, options);
    this.path = path;
  }
}

const B64_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const HEX_RE = /^[0-9a-fA-F]{64}$/;

/** Decodes a canonical base64 WireGuard key (44 characters) to 32 bytes; throws {@link KeyError}. */
export function keyFromBase64(b64: string, what = 'key'): Uint8Array {
  if (typeof b64 !== 'string' || !B64_RE.test(b64)) {
    throw new KeyError(`keys: ${what} is not a 44-character base64 encoding of 32 bytes`);
  }
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/** Encodes 32 key bytes as base64; throws {@link KeyError} on a wrong length. */
export function keyToBase64(bytes: Uint8Array, what = 'key'): string {
  checkLen(bytes, what);
  return Buffer.from(bytes).toString('base64');
}

/** Decodes a 64-digit hex key (the UAPI wire form) to 32 bytes; throws {@link KeyError}. */
export function keyFromHex(hex: string, what = 'key'): Uint8Array {
  if (typeof hex !== 'string' || !HEX_RE.test(hex)) throw new KeyError(`keys: ${what} is not 64 hex digits`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** Encodes 32 key bytes as lowercase hex; throws {@link KeyError} on a wrong length. */
export function keyToHex(bytes: Uint8Array, what = 'key'): string {
  checkLen(bytes, what);
  return Buffer.from(bytes).toString('hex');
}

/** base64 -> hex (UAPI form). Throws {@link KeyError}. */
export function base64ToHex(b64: string, what = 'key'): string {
  return keyToHex(keyFromBase64(b64, what), what);
}

/** hex (UAPI form) -> base64. Throws {@link KeyError}. */
export function hexToBase64(hex: string, what = 'key'): string {
  return keyToBase64(keyFromHex(hex, what), what);
}

/** True when `b64` is a canonical base64 32-byte key. */
export function isValidKey(b64: string): boolean {
  return typeof b64 === 'string' && B64_RE.test(b64);
}

/**
 * Generates a new private key, clamped as Curve25519 requires (like `wg genkey`), as base64.
 * `random` is injectable for tests; it must return `n` cryptographically random bytes.
 */
export function generatePrivateKey(random: (n: number) => Uint8Array = (n) => new Uint8Array(cryptoRandomBytes(n))): string {
  const k = random(KEY_LEN);
  checkLen(k, 'random bytes');
  const c = new Uint8Array(k);
  c[0]! &= 248;
  c[31]! &= 127;
  c[31]! |= 64;
  return keyToBase64(c);
}

/** Derives the base64 public key from a base64 private key (X25519 scalar multiplication with the base point). */
export function publicKeyFromPrivate(privateKeyB64: string): string {
  const priv = keyFromBase64(privateKeyB64, 'private key');
  return keyToBase64(nacl.scalarMult.base(priv));
}

/** Generates a key pair `{ privateKey, publicKey }`, both base64. */
export function generateKeyPair(random?: (n: number) => Uint8Array): { privateKey: string; publicKey: string } {
  const privateKey = generatePrivateKey(random);
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey) };
}

/** Generates a random 32-byte preshared key (not clamped), as base64. */
export function generatePresharedKey(random: (n: number) => Uint8Array = (n) => new Uint8Array(cryptoRandomBytes(n))): string {
  return keyToBase64(random(KEY_LEN));
}

/** The largest key file we read: a key, a newline and some slack for a CRLF or spaces. */
const MAX_KEY_FILE = 128;

/**
 * Loads the base64 private key at `path`, or creates one (mode 0600, atomically, parent directory
 * created 0700) when the file does not exist. Refuses, with {@link KeyFileError}: a file readable or
 * writable by group or others, a file that is not a regular file (symlinks are not followed), and a
 * file that does not hold exactly one valid key. Safe against concurrent callers: exactly one key
 * wins and every caller returns it.
 */
export async function loadOrCreatePrivateKey(
  path: string,
  random?: (n: number) => Uint8Array,
): Promise<{ privateKey: string; publicKey: string; created: boolean }> {
  const existing = await readKeyFile(path);
  if (existing !== null) return { privateKey: existing, publicKey: publicKeyFromPrivate(existing), created: false };

  const dir = dirname(path);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new KeyFileError(path, `cannot create directory ${dir}`, { cause: err });
  }
  const privateKey = generatePrivateKey(random);
  try {
    if (!(await writePrivateFile(path, `${privateKey}\n`, 'create'))) {
      // Someone else created it first: theirs wins.
      const theirs = await readKeyFile(path);
      if (theirs === null) throw new KeyFileError(path, 'key file vanished while being created');
      return { privateKey: theirs, publicKey: publicKeyFromPrivate(theirs), created: false };
    }
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(path, 'cannot create private key file', { cause: err });
  }
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey), created: true };
}

/**
 * Writes `contents` to `path` atomically with mode exactly 0600: a temporary file in the same
 * directory (O_EXCL, O_NOFOLLOW, fsynced) is renamed over `path` (`replace`) or hard-linked into
 * place (`create`, which never clobbers: it returns false, writing nothing, when `path` already
 * exists). The temporary file is always removed; the directory is then fsynced (best effort). A
 * crash leaves the old file or the new one, never a partial file. Errors are thrown unwrapped, for
 * the caller to name; they never contain `contents`. Used for every secret file the agent writes.
 */
export async function writePrivateFile(path: string, contents: string, how: 'create' | 'replace'): Promise<boolean> {
  const dir = dirname(path);
  const tmp = join(dir, `.${process.pid}.${cryptoRandomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      // umask may have cleared bits but never adds any; chmod anyway so the mode is exactly 0600.
      await fh.chmod(0o600);
      await fh.writeFile(contents);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (how === 'replace') {
      await rename(tmp, path);
    } else {
      try {
        await link(tmp, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw err;
      }
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
  await syncDir(dir);
  return true;
}

/** Reads and validates a key file; null when it does not exist. */
async function readKeyFile(path: string): Promise<string | null> {
  let fh;
  try {
    fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new KeyFileError(path, 'is a symbolic link; refusing to follow it', { cause: err });
    throw new KeyFileError(path, 'cannot open private key file', { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new KeyFileError(path, 'is not a regular file');
    if ((st.mode & 0o077) !== 0) {
      throw new KeyFileError(
        path,
        `mode ${(st.mode & 0o777).toString(8).padStart(4, '0')} grants access to group or others; ` +
          'the key may have leaked. chmod 600 it if you trust it, or delete it to generate a new key',
      );
    }
    if (st.size > MAX_KEY_FILE) throw new KeyFileError(path, `is ${st.size} bytes; a key file holds one base64 key`);
    const buf = Buffer.alloc(MAX_KEY_FILE + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const text = buf.subarray(0, bytesRead).toString('utf8').trim();
    if (!isValidKey(text)) throw new KeyFileError(path, 'does not hold a valid base64 WireGuard private key');
    return text;
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, fsc.O_RDONLY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Directory fsync is best effort (not supported on every filesystem).
  }
}

function checkLen(bytes: Uint8Array, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== KEY_LEN) {
    throw new KeyError(`keys: ${what} must be ${KEY_LEN} bytes`);
  }
}
