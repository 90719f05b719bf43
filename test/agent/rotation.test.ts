import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyRotator, KeyRotationError, writeNewPrivateKey, type RotatedKey } from '../../src/agent/rotation.ts';
import { DatapathReconciler } from '../../src/datapath/reconciler.ts';
import { FakeRtNetlink, linkFakes } from '../../src/datapath/rtnetlink-fake.ts';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';
import { isValidKey, publicKeyFromPrivate } from '../../src/wireguard/keys.ts';
import { keyPair } from '../plan/helpers.ts';

const logger = pino({ level: 'silent' });
let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('writeNewPrivateKey', () => {
  it('replaces the key file atomically with a new valid key, mode 0600, no temporary left', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-rot-'));
    const path = join(dir, 'wg.key');
    await writeFile(path, `${keyPair(1).privateKey}\n`, { mode: 0o600 });
    const k = await writeNewPrivateKey(path, () => 1234);
    const text = (await readFile(path, 'utf8')).trim();
    expect(text).toBe(k.privateKey);
    expect(isValidKey(text)).toBe(true);
    expect(k.publicKey).toBe(publicKeyFromPrivate(text));
    expect(k.createdAt).toBe(1234);
    expect(text).not.toBe(keyPair(1).privateKey);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['wg.key']);
  });

  it('fails with a named error when the directory is missing', async () => {
    await expect(writeNewPrivateKey('/nonexistent-wob/wg.key')).rejects.toBeInstanceOf(KeyRotationError);
  });
});

describe('KeyRotator', () => {
  it('runs one rotation at a time, shares concurrent requests, and reports a failed apply', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-rot-'));
    const applied: RotatedKey[] = [];
    let fail = false;
    const r = new KeyRotator({
      keyPath: join(dir, 'wg.key'), logger, everyMs: 0,
      target: {
        async rotateKey(next) {
          await new Promise((res) => setTimeout(res, 20));
          if (fail) throw new Error('device gone');
          applied.push(next);
        },
      },
    });
    const [a, b] = await Promise.all([r.rotate('api'), r.rotate('api')]);
    expect(a).toEqual(b);
    expect(applied).toHaveLength(1);
    const c = await r.rotate('api');
    expect(c.publicKey).not.toBe(a.publicKey);
    expect(applied.map((k) => k.publicKey)).toEqual([a.publicKey, c.publicKey]);
    fail = true;
    await expect(r.rotate('api')).rejects.toThrow(/new key written but not applied.*device gone/);
    r.start(); // everyMs 0: no timer
    await r.stop();
  });
});

describe('DatapathReconciler.setPrivateKey', () => {
  it('puts the new key on the device on the next pass and keeps the peers', async () => {
    const fake = new FakeWireGuardBackend();
    const rt = new FakeRtNetlink();
    const rec = new DatapathReconciler({ wg: linkFakes(fake, rt), rt, logger, privateKey: keyPair(1).privateKey, resyncMs: 30_000 });
    expect(rec.setPrivateKey(keyPair(3).privateKey)).toBeNull(); // before the first apply: nothing to reconcile yet
    const peer = { name: 'n2', publicKey: keyPair(2).publicKey, endpoint: '192.0.2.2:51820', allowedIPs: ['10.244.2.0/24'], persistentKeepalive: 0 };
    const r1 = await rec.apply({ ifname: 'weft0', listenPort: 51820, mtu: 1420, addresses: ['10.244.1.1/32'], peers: [peer], routes: [{ dst: '10.244.0.0/16', dev: 'weft0' }] });
    expect(r1.ok).toBe(true);
    expect((await fake.getDevice('weft0'))!.publicKey).toBe(keyPair(3).publicKey);
    const r2 = await rec.setPrivateKey(keyPair(4).privateKey)!;
    expect(r2.ok).toBe(true);
    const dev = (await fake.getDevice('weft0'))!;
    expect(dev.publicKey).toBe(keyPair(4).publicKey);
    expect(rec.publicKey).toBe(keyPair(4).publicKey);
    expect(dev.peers.map((p) => p.publicKey)).toEqual([keyPair(2).publicKey]);
    expect(() => rec.setPrivateKey('not a key')).toThrow();
    await rec.stop();
  });
});

describe('KeyRotator schedule and --key-rotation', () => {
  it('rotates on its schedule until stopped', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-rot-'));
    const triggers: string[] = [];
    const r = new KeyRotator({ keyPath: join(dir, 'wg.key'), logger, everyMs: 30, target: { async rotateKey(_next, trigger) { triggers.push(trigger); } } });
    r.start();
    // Wait for two scheduled rotations (bounded), not for a fixed time: each one writes and fsyncs
    // a key file, which a loaded host can stretch well past the 30 ms period.
    for (const deadline = Date.now() + 10_000; triggers.length < 2 && Date.now() < deadline; ) {
      await new Promise((res) => setTimeout(res, 20));
    }
    await r.stop();
    const n = triggers.length;
    expect(n).toBeGreaterThanOrEqual(2);
    expect(new Set(triggers)).toEqual(new Set(['schedule']));
    await new Promise((res) => setTimeout(res, 100));
    expect(triggers.length).toBe(n);
  });

  it('parses --key-rotation: off by default, a duration, or a clear error', async () => {
    const { parseConfig, ConfigError } = await import('../../src/config.ts');
    const host = { hostname: 'node-a' };
    expect(parseConfig({}, {}, host).keyRotationMs).toBe(0);
    expect(parseConfig({ keyRotation: '24h' }, {}, host).keyRotationMs).toBe(24 * 3_600_000);
    expect(parseConfig({}, { WEFT_KEY_ROTATION: '90m' }, host).keyRotationMs).toBe(90 * 60_000);
    expect(() => parseConfig({ keyRotation: '5s' }, {}, host)).toThrow(ConfigError);
    expect(() => parseConfig({ keyRotation: 'soon' }, {}, host)).toThrow(/key-rotation/);
  });
});
