import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  KeyError,
  KeyFileError,
  base64ToHex,
  generateKeyPair,
  generatePrivateKey,
  hexToBase64,
  isValidKey,
  keyFromBase64,
  keyFromHex,
  keyToBase64,
  loadOrCreatePrivateKey,
  publicKeyFromPrivate,
} from '../../src/wireguard/keys.ts';

const hasWg = (() => {
  try {
    execFileSync('wg', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('key encodings', () => {
  it('round-trips bytes <-> base64 <-> hex for any 32 bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        const b64 = keyToBase64(bytes);
        expect(isValidKey(b64)).toBe(true);
        expect(keyFromBase64(b64)).toEqual(bytes);
        const hex = base64ToHex(b64);
        expect(hex).toMatch(/^[0-9a-f]{64}$/);
        expect(keyFromHex(hex)).toEqual(bytes);
        expect(hexToBase64(hex)).toBe(b64);
      }),
    );
  });

  it.each([
    ['empty', ''],
    ['too short', 'AAAA'],
    ['no padding', 'A'.repeat(44)],
    ['non-canonical last char', `${'A'.repeat(42)}B=`],
    ['bad alphabet', `${'-'.repeat(42)}A=`],
    ['33 bytes', Buffer.alloc(33).toString('base64')],
  ])('rejects base64 key: %s', (_n, s) => {
    expect(() => keyFromBase64(s)).toThrow(KeyError);
    expect(isValidKey(s)).toBe(false);
  });

  it('rejects bad hex and wrong byte lengths, without echoing the input', () => {
    const secret = 'zz'.repeat(32);
    try {
      keyFromHex(secret);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(KeyError);
      expect((err as Error).message).not.toContain(secret);
    }
    expect(() => keyFromHex('ab'.repeat(31))).toThrow(KeyError);
    expect(() => keyToBase64(new Uint8Array(31))).toThrow(KeyError);
  });
});

describe('key generation', () => {
  it('clamps private keys and derives distinct public keys', () => {
    const { privateKey, publicKey } = generateKeyPair();
    const b = keyFromBase64(privateKey);
    expect(b[0]! & 7).toBe(0);
    expect(b[31]! & 128).toBe(0);
    expect(b[31]! & 64).toBe(64);
    expect(publicKey).not.toBe(privateKey);
    expect(generatePrivateKey()).not.toBe(privateKey);
  });

  it('uses the injected random source', () => {
    const k = generatePrivateKey((n) => new Uint8Array(n).fill(0xff));
    expect(keyFromBase64(k)[0]).toBe(248);
    expect(keyFromBase64(k)[31]).toBe(127);
  });

  it('derives the RFC 7748 test vector public key', () => {
    // RFC 7748 section 6.1, Alice.
    const priv = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
    const pub = '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a';
    expect(base64ToHex(publicKeyFromPrivate(keyToBase64(priv)))).toBe(pub);
  });

  it.skipIf(!hasWg)('agrees with `wg pubkey` (skipped: wireguard-tools not installed)', () => {
    for (let i = 0; i < 5; i++) {
      const priv = generatePrivateKey();
      const out = execFileSync('wg', ['pubkey'], { input: `${priv}\n` }).toString().trim();
      expect(publicKeyFromPrivate(priv)).toBe(out);
    }
  });
});

describe('loadOrCreatePrivateKey', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wwg-keys-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a 0600 key file in a new 0700 directory, then loads the same key', async () => {
    const path = join(dir, 'state', 'wg.key');
    const a = await loadOrCreatePrivateKey(path);
    expect(a.created).toBe(true);
    expect(isValidKey(a.privateKey)).toBe(true);
    expect(a.publicKey).toBe(publicKeyFromPrivate(a.privateKey));
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'state'))).mode & 0o777).toBe(0o700);
    expect(await readFile(path, 'utf8')).toBe(`${a.privateKey}\n`);
    const b = await loadOrCreatePrivateKey(path);
    expect(b).toEqual({ ...a, created: false });
  });

  it('concurrent callers all get the one key that won', async () => {
    const path = join(dir, 'wg.key');
    const results = await Promise.all(Array.from({ length: 8 }, () => loadOrCreatePrivateKey(path)));
    const keys = new Set(results.map((r) => r.privateKey));
    expect(keys.size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect((await readFile(path, 'utf8')).trim()).toBe([...keys][0]);
  });

  it('accepts an existing key written by `wg genkey` style (trailing newline)', async () => {
    const path = join(dir, 'wg.key');
    const priv = generatePrivateKey();
    await writeFile(path, `${priv}\r\n`, { mode: 0o600 });
    expect((await loadOrCreatePrivateKey(path)).privateKey).toBe(priv);
  });

  it('refuses a file readable by group or others, and does not change it', async () => {
    const path = join(dir, 'wg.key');
    const priv = generatePrivateKey();
    await writeFile(path, `${priv}\n`);
    await chmod(path, 0o644);
    const err = await loadOrCreatePrivateKey(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeyFileError);
    expect((err as Error).message).toMatch(/0644.*group or others/);
    expect((err as Error).message).not.toContain(priv);
    expect((await stat(path)).mode & 0o777).toBe(0o644);
  });

  it('refuses garbage, oversize files and symlinks', async () => {
    const bad = join(dir, 'bad.key');
    await writeFile(bad, 'not a key\n', { mode: 0o600 });
    await expect(loadOrCreatePrivateKey(bad)).rejects.toThrow(/valid base64/);
    const big = join(dir, 'big.key');
    await writeFile(big, 'A'.repeat(4096), { mode: 0o600 });
    await expect(loadOrCreatePrivateKey(big)).rejects.toThrow(KeyFileError);
    const real = join(dir, 'real.key');
    await writeFile(real, `${generatePrivateKey()}\n`, { mode: 0o600 });
    const link = join(dir, 'link.key');
    await symlink(real, link);
    await expect(loadOrCreatePrivateKey(link)).rejects.toThrow(/symbolic link/);
  });
});
