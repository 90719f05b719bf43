import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring } from '../../mesh/index.ts';
import { MeshKeyOpError, MeshKeyStore, meshKeyId, parseMeshKey } from '../../src/agent/mesh-keys.ts';

const logger = pino({ level: 'silent' });
const k1 = new Uint8Array(32).fill(1);
const k2 = new Uint8Array(32).fill(2);
let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** True when a packet sealed by `from` opens with `to`. */
const talks = (from: Keyring, to: Keyring): boolean => to.open(from.seal(new Uint8Array([1, 2, 3]))) !== undefined;

describe('MeshKeyStore', () => {
  it('walks install -> switch -> retire with both sides talking at every step, persisted 0600, ids only', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-mk-'));
    const s = await MeshKeyStore.open(dir, k1, logger);
    const peer = new Keyring(k1); // a node that has not done any step yet
    expect(s.list()).toEqual({ primary: meshKeyId(k1), keys: [meshKeyId(k1)] });

    expect(await s.install(k2)).toEqual({ primary: meshKeyId(k1), keys: [meshKeyId(k1), meshKeyId(k2)] });
    expect(talks(s.keyring, peer) && talks(peer, s.keyring)).toBe(true);
    peer.install(k2);
    await s.use(k2);
    expect(s.list().primary).toBe(meshKeyId(k2));
    expect(talks(s.keyring, peer) && talks(peer, s.keyring)).toBe(true);
    peer.use(k2);
    await s.remove(k1);
    expect(s.list()).toEqual({ primary: meshKeyId(k2), keys: [meshKeyId(k2)] });
    expect(talks(s.keyring, peer) && talks(peer, s.keyring)).toBe(true);
    expect(talks(new Keyring(k1), s.keyring)).toBe(false);

    const file = join(dir, 'mesh-keyring.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(file, 'utf8')).toContain(meshKeyId(k1)); // in `retired`, as an id

    // A restart with the old configured key keeps the rotated keyring and does not bring k1 back.
    const again = await MeshKeyStore.open(dir, k1, logger);
    expect(again.list()).toEqual({ primary: meshKeyId(k2), keys: [meshKeyId(k2)] });
  });

  it('refuses to switch to a key not installed and to retire the primary; rejects malformed keys', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-mk-'));
    const s = await MeshKeyStore.open(dir, k1, logger);
    await expect(s.use(k2)).rejects.toThrow(/not installed/);
    await expect(s.remove(k1)).rejects.toThrow(/is the primary/);
    expect(s.list().keys).toEqual([meshKeyId(k1)]);
    expect(() => parseMeshKey('short')).toThrow(MeshKeyOpError);
    expect(() => parseMeshKey(42)).toThrow(MeshKeyOpError);
    expect(parseMeshKey(Buffer.from(k2).toString('base64'))).toEqual(k2);
  });

  it('installs a new configured key next to a persisted keyring, and rejects a corrupt state file', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-mk-'));
    const s = await MeshKeyStore.open(dir, k1, logger);
    await s.install(k2);
    const k3 = new Uint8Array(32).fill(3);
    const again = await MeshKeyStore.open(dir, k3, logger);
    expect(again.list().keys).toEqual([meshKeyId(k1), meshKeyId(k2), meshKeyId(k3)]);
    await (await import('node:fs/promises')).writeFile(join(dir, 'mesh-keyring.json'), '{"version":1,"keys":["x"]}');
    await expect(MeshKeyStore.open(dir, k1, logger)).rejects.toThrow(/not a keyring written by weft/);
  });
});
