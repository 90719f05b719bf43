/**
 * Agent.rotateKey over the fake mesh: node a's device (fake WireGuard behind the real datapath
 * reconciler) takes the new key, a's record carries the new public key, node b's plan follows
 * with a peer-key-changed audit line, and a's status shows the new key and its age.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.ts';
import { FileBlockStore } from '../../src/agent/block-store.ts';
import { datapathFrom } from '../../src/agent/components.ts';
import { makePlanFn } from '../../src/agent/plan.ts';
import type { DatapathPort } from '../../src/agent/ports.ts';
import { parseConfig } from '../../src/config.ts';
import { FakeRtNetlink, linkFakes } from '../../src/datapath/rtnetlink-fake.ts';
import { FakeWireGuardBackend } from '../../src/wireguard/fake.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { FakeMeshNet } from './fake-mesh.ts';
import { LastDatapath, noopHostNet } from './fake-ports.ts';

let dir: string | undefined;
const agents: Agent[] = [];
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

function sink(): { logger: pino.Logger; lines: () => Record<string, unknown>[] } {
  let buf = '';
  const dest = new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } });
  return { logger: pino({ level: 'info' }, dest), lines: () => buf.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

async function until(what: string, fn: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out: ${what}`);
}

describe('Agent.rotateKey', () => {
  it('puts the new key on the device, republishes, and the peer follows', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-agrot-'));
    const net = new FakeMeshNet();
    const logA = sink();
    const logB = sink();
    const keyA = generateKeyPair();
    const fake = new FakeWireGuardBackend();
    const rt = new FakeRtNetlink();
    const dpA = datapathFrom(linkFakes(fake, rt), rt, { ifname: 'weft0', resyncMs: 30_000 }, logA.logger, keyA.privateKey);
    const dpB = new LastDatapath();
    const make = (name: string, i: number, dp: DatapathPort, logger: pino.Logger, publicKey: string): Agent => {
      const config = parseConfig({ name, listenAddr: `192.0.2.${10 + i}`, stateDir: join(dir!, name), runDir: join(dir!, `${name}-run`), podCidr: `10.244.${i}.0/24` }, {});
      const a = new Agent({
        config, logger, clock: Date.now, random: Math.random, mesh: net.member(name), wgPublicKey: publicKey, wgKeyCreatedAt: 1000, backendKind: 'fake',
        endpoints: [`192.0.2.${10 + i}:51820`], plan: makePlanFn(config, { mtu: 1500, families: [4] }), datapath: dp, blockStore: new FileBlockStore(join(dir!, name)),
        hostNet: noopHostNet, initialSyncMs: 5, readDevice: name === 'a' ? () => fake.getDevice('weft0') : undefined,
      });
      agents.push(a);
      return a;
    };
    const a = make('a', 1, dpA, logA.logger, keyA.publicKey);
    const b = make('b', 2, dpB, logB.logger, generateKeyPair().publicKey);
    await Promise.all([a.start(), b.start()]);
    await until('b plans a with its first key', () => dpB.last?.peers.some((p) => p.name === 'a' && p.publicKey === keyA.publicKey) === true);
    await a.idle();
    expect((await fake.getDevice('weft0'))?.publicKey).toBe(keyA.publicKey);

    const next = { ...generateKeyPair(), createdAt: 5_000 };
    await a.rotateKey(next, 'test');
    expect((await fake.getDevice('weft0'))?.publicKey).toBe(next.publicKey);
    expect(a.self?.wgPublicKey).toBe(next.publicKey);
    await until('b plans a with the new key', () => dpB.last?.peers.some((p) => p.name === 'a' && p.publicKey === next.publicKey) === true);
    const s = await a.status();
    expect(s.node.publicKey).toBe(next.publicKey);
    expect(s.node.keyCreatedAt).toBe(5_000);

    expect(logA.lines().find((l) => l.event === 'key-rotated')).toMatchObject({ audit: true, trigger: 'test', publicKey: next.publicKey, previousPublicKey: keyA.publicKey });
    await b.idle();
    expect(logB.lines().find((l) => l.event === 'peer-key-changed')).toMatchObject({ audit: true, peer: 'a', publicKey: next.publicKey });
    const all = JSON.stringify([...logA.lines(), ...logB.lines()]);
    expect(all).not.toContain(next.privateKey);
    expect(all).not.toContain(keyA.privateKey);
    await dpA.stop();
  });

  it('refuses (and changes nothing) when the datapath cannot take a key', async () => {
    dir = await mkdtemp(join(tmpdir(), 'wob-agrot-'));
    const net = new FakeMeshNet();
    const config = parseConfig({ name: 'c', listenAddr: '192.0.2.30', stateDir: join(dir, 'c'), runDir: join(dir, 'c-run'), podCidr: '10.244.3.0/24' }, {});
    const pub = generateKeyPair().publicKey;
    const c = new Agent({
      config, logger: pino({ level: 'silent' }), clock: Date.now, random: Math.random, mesh: net.member('c'), wgPublicKey: pub, backendKind: 'fake',
      endpoints: ['192.0.2.30:51820'], plan: makePlanFn(config, { mtu: 1500, families: [4] }), datapath: new LastDatapath(), blockStore: new FileBlockStore(join(dir, 'c')),
      hostNet: noopHostNet, initialSyncMs: 5,
    });
    agents.push(c);
    await c.start();
    await expect(c.rotateKey({ ...generateKeyPair(), createdAt: 1 }, 'test')).rejects.toThrow(/cannot change its key/);
    expect(c.self?.wgPublicKey).toBe(pub);
  });
});
