/**
 * The compliance suite against the userspace backend: real wireguard-go processes in a network
 * namespace plus a mount namespace with its own tmpfs on /run/wireguard, reached from this process
 * through nsenter and /proc/<pid>/root. Needs root, wireguard-go, wg, ip, nsenter and unshare.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserspaceWireGuardBackend } from '../../src/wireguard/userspace.ts';
import { WireGuardError } from '../../src/wireguard/errors.ts';
import { generateKeyPair } from '../../src/wireguard/keys.ts';
import { describeCompliance, type ComplianceHarness } from '../wireguard/compliance.ts';
import { labPrerequisites } from './prerequisites.ts';

const { skip, why } = labPrerequisites({ tools: ['wireguard-go', 'wg', 'ip', 'nsenter', 'unshare'] });

/** One lab node: a netns and a mount namespace (held by a sleeping process) with tmpfs on /run/wireguard. */
export interface LabNode {
  readonly ns: string;
  readonly holder: ChildProcess;
  readonly wrap: (argv: readonly string[]) => string[];
  readonly socketDir: string;
  readonly stateDir: string;
  run(argv: readonly string[]): string;
  close(): Promise<void>;
}

export async function makeLabNode(tag: string): Promise<LabNode> {
  const ns = `wwg-${tag}-${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c',
    'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0755,size=4m tmpfs /run/wireguard && echo ready && exec sleep 100000'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.once('data', () => resolve());
    holder.once('exit', (c) => reject(new Error(`mount namespace holder exited with ${c}`)));
  });
  const pid = holder.pid!;
  const stateDir = await mkdtemp(join(tmpdir(), `wwg-${tag}-state-`));
  const wrap = (argv: readonly string[]) => ['nsenter', `--net=/run/netns/${ns}`, `--mount=/proc/${pid}/ns/mnt`, '--', ...argv];
  const run = (argv: readonly string[]) => {
    const a = wrap(argv);
    return execFileSync(a[0]!, a.slice(1), { encoding: 'utf8' });
  };
  return {
    ns,
    holder,
    wrap,
    socketDir: `/proc/${pid}/root/run/wireguard`,
    stateDir,
    run,
    async close() {
      // Links first (wireguard-go exits on its own), then any wireguard-go we recorded, then the holder.
      try {
        const links = execFileSync('ip', ['-n', ns, '-o', 'link', 'show'], { encoding: 'utf8' });
        for (const m of links.matchAll(/^\d+: ([^:@]+)[:@]/gm)) {
          if (m[1] !== 'lo') execFileSync('ip', ['-n', ns, 'link', 'del', m[1]!], { stdio: 'ignore' });
        }
      } catch {
        // namespace already gone
      }
      await new Promise((r) => setTimeout(r, 300));
      try {
        const { readdirSync } = await import('node:fs');
        for (const f of readdirSync(stateDir).filter((x) => x.endsWith('.pid'))) {
          const rec = JSON.parse(await readFile(join(stateDir, f), 'utf8')) as { pid: number };
          const cmd = await readFile(`/proc/${rec.pid}/cmdline`, 'utf8').catch(() => '');
          if (cmd.includes('wireguard-go')) process.kill(rec.pid, 'SIGKILL');
        }
      } catch {
        // nothing recorded
      }
      if (holder.exitCode === null) holder.kill('SIGKILL');
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

const logger = pino({ level: process.env.WEFT_TEST_LOG ?? 'silent' });

describe.skipIf(skip)(`userspace backend (lab)${why}`, () => {
  describeCompliance('userspace (wireguard-go)', async (): Promise<ComplianceHarness> => {
    const node = await makeLabNode('c');
    return {
      async open() {
        return new UserspaceWireGuardBackend({ logger, wrap: node.wrap, socketDir: node.socketDir, stateDir: node.stateDir });
      },
      async removePeerOutOfBand(ifname, publicKey) {
        node.run(['wg', 'set', ifname, 'peer', publicKey, 'remove']);
      },
      async setAllowedIPsOutOfBand(ifname, publicKey, allowedIPs) {
        node.run(['wg', 'set', ifname, 'peer', publicKey, 'allowed-ips', allowedIPs.join(',')]);
      },
      close: () => node.close(),
    };
  }, { ifPrefix: 'wgu' });

  describe('process supervision', () => {
    let node: LabNode;
    beforeAll(async () => {
      node = await makeLabNode('p');
    });
    afterAll(async () => {
      await node?.close();
    });
    const mk = (extra: Partial<ConstructorParameters<typeof UserspaceWireGuardBackend>[0]> = {}) =>
      new UserspaceWireGuardBackend({ logger, wrap: node.wrap, socketDir: node.socketDir, stateDir: node.stateDir, ...extra });

    it('wireguard-go outlives the backend that started it; a new instance adopts and then stops it by PID', async () => {
      const a = mk();
      await a.ensureDevice('wgp0');
      const { privateKey } = generateKeyPair();
      await a.setDevice('wgp0', { privateKey, listenPort: 43000 });
      const rec = JSON.parse(await readFile(join(node.stateDir, 'wgp0.pid'), 'utf8')) as { pid: number };
      expect(await readFile(`/proc/${rec.pid}/cmdline`, 'utf8')).toContain('wireguard-go');
      // The agent "dies" without cleanup: no close(), no delete.
      const b = mk();
      await b.ensureDevice('wgp0');
      const d = await b.getDevice('wgp0');
      expect(d!.privateKey).toBe(privateKey);
      expect(d!.listenPort).toBe(43000);
      expect(node.run(['ip', '-o', 'link', 'show', 'wgp0'])).toContain('wgp0');
      await b.deleteDevice('wgp0');
      expect(existsSync(`/proc/${rec.pid}/cmdline`) && (await readFile(`/proc/${rec.pid}/cmdline`, 'utf8')).includes('wireguard-go')).toBe(false);
      expect(await b.getDevice('wgp0')).toBeNull();
      expect(existsSync(join(node.stateDir, 'wgp0.pid'))).toBe(false);
      await a.close();
      await b.close();
    });

    it('wireguard-go survives a SIGKILLed agent process and keeps its configuration', async () => {
      // A separate "agent" process starts the device, configures it, and is killed with SIGKILL.
      const dir = await mkdtemp(join(tmpdir(), 'wwg-agent-'));
      const script = join(dir, 'agent.ts');
      const { writeFile } = await import('node:fs/promises');
      const mod = new URL('../../src/wireguard/userspace.ts', import.meta.url).pathname;
      await writeFile(
        script,
        [
          `import pino from ${JSON.stringify(createRequire(import.meta.url).resolve('pino'))};`,
          `import { UserspaceWireGuardBackend } from ${JSON.stringify(mod)};`,
          `const wrap = (a) => ${JSON.stringify(node.wrap([]))}.concat(a);`,
          `const b = new UserspaceWireGuardBackend({ logger: pino({ level: 'silent' }), wrap, socketDir: ${JSON.stringify(node.socketDir)}, stateDir: ${JSON.stringify(node.stateDir)} });`,
          `await b.ensureDevice('wgp5');`,
          `await b.setDevice('wgp5', JSON.parse(process.argv[2]));`,
          `console.log('configured');`,
          `setInterval(() => {}, 1000);`,
        ].join('\n'),
      );
      const { privateKey } = generateKeyPair();
      const peer = generateKeyPair().publicKey;
      const update = { privateKey, listenPort: 43100, peers: [{ publicKey: peer, endpoint: '192.0.2.7:51820', allowedIPs: ['10.55.0.0/16'] }] };
      const nodeBin = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
      const agent = spawn(nodeBin, [script, JSON.stringify(update)], { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        await new Promise<void>((resolve, reject) => {
          agent.stdout!.on('data', (d: Buffer) => d.toString().includes('configured') && resolve());
          agent.once('exit', (c) => reject(new Error(`agent exited early with ${c}`)));
        });
        agent.kill('SIGKILL');
        await new Promise((r) => agent.once('exit', r));
        const b = mk();
        await b.ensureDevice('wgp5');
        const d = await b.getDevice('wgp5');
        expect(d!.privateKey).toBe(privateKey);
        expect(d!.listenPort).toBe(43100);
        expect(d!.peers.map((p) => [p.publicKey, p.endpoint, p.allowedIPs])).toEqual([[peer, '192.0.2.7:51820', ['10.55.0.0/16']]]);
        // The restarted agent can still stop the wireguard-go the killed one started.
        const rec = JSON.parse(await readFile(join(node.stateDir, 'wgp5.pid'), 'utf8')) as { pid: number };
        await b.deleteDevice('wgp5');
        expect(existsSync(`/proc/${rec.pid}`) && (await readFile(`/proc/${rec.pid}/cmdline`, 'utf8')).includes('wireguard-go')).toBe(false);
        await b.close();
      } finally {
        if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('reports a device lost when its link is deleted behind its back, and ensureDevice brings it back', async () => {
      const lost: string[] = [];
      const a = mk({ onDeviceLost: (n) => lost.push(n) });
      await a.ensureDevice('wgp1');
      node.run(['ip', 'link', 'del', 'wgp1']);
      const deadline = Date.now() + 5000;
      while (lost.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(lost).toEqual(['wgp1']);
      expect(await a.getDevice('wgp1')).toBeNull();
      await a.ensureDevice('wgp1');
      expect(await a.getDevice('wgp1')).not.toBeNull();
      await a.deleteDevice('wgp1');
      await a.close();
    });

    it('refuses to adopt a link that has no wireguard-go behind it', async () => {
      node.run(['ip', 'link', 'add', 'wgp2', 'type', 'veth', 'peer', 'name', 'wgp2b']);
      const a = mk();
      await expect(a.ensureDevice('wgp2')).rejects.toThrow(/exists but no wireguard-go answers/);
      node.run(['ip', 'link', 'del', 'wgp2']);
      await a.close();
    });

    it('fails clearly when wireguard-go cannot be run', async () => {
      const a = mk({ wireguardGo: '/nonexistent/wireguard-go', startTimeoutMs: 2000 });
      await expect(a.ensureDevice('wgp3')).rejects.toBeInstanceOf(WireGuardError);
      await a.close();
    });

    it('two configured devices handshake and carry traffic over a veth underlay', async () => {
      const peerNode = await makeLabNode('q');
      const a = mk();
      const b = new UserspaceWireGuardBackend({ logger, wrap: peerNode.wrap, socketDir: peerNode.socketDir, stateDir: peerNode.stateDir });
      try {
        // Underlay: a veth pair between the two namespaces, 192.0.2.1 <-> 192.0.2.2.
        execFileSync('ip', ['link', 'add', 'wwgva', 'netns', node.ns, 'type', 'veth', 'peer', 'name', 'wwgvb', 'netns', peerNode.ns]);
        node.run(['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'wwgva']);
        node.run(['ip', 'link', 'set', 'wwgva', 'up']);
        peerNode.run(['ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'wwgvb']);
        peerNode.run(['ip', 'link', 'set', 'wwgvb', 'up']);
        const ka = generateKeyPair();
        const kb = generateKeyPair();
        await a.ensureDevice('wgt0');
        await b.ensureDevice('wgt0');
        await a.setDevice('wgt0', { privateKey: ka.privateKey, listenPort: 51820, peers: [{ publicKey: kb.publicKey, endpoint: '192.0.2.2:51820', allowedIPs: ['10.99.0.2/32'] }] });
        await b.setDevice('wgt0', { privateKey: kb.privateKey, listenPort: 51820, peers: [{ publicKey: ka.publicKey, endpoint: '192.0.2.1:51820', allowedIPs: ['10.99.0.1/32'] }] });
        for (const [n, self, other] of [[node, '10.99.0.1', '10.99.0.2'], [peerNode, '10.99.0.2', '10.99.0.1']] as const) {
          n.run(['ip', 'addr', 'add', `${self}/32`, 'dev', 'wgt0']);
          n.run(['ip', 'link', 'set', 'wgt0', 'up']);
          n.run(['ip', 'route', 'add', `${other}/32`, 'dev', 'wgt0']);
        }
        node.run(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.99.0.2']);
        const pa = (await a.getDevice('wgt0'))!.peers[0]!;
        expect(pa.lastHandshake).toBeGreaterThan(0);
        expect(pa.rxBytes).toBeGreaterThan(0);
        expect(pa.txBytes).toBeGreaterThan(0);
        const pb = (await b.getDevice('wgt0'))!.peers[0]!;
        // wireguard-go learned the sender's endpoint from the authenticated packets.
        expect(pb.endpoint).toBe('192.0.2.1:51820');
      } finally {
        await a.deleteDevice('wgt0').catch(() => {});
        await b.deleteDevice('wgt0').catch(() => {});
        await a.close();
        await b.close();
        await peerNode.close();
      }
    });

    it('concurrent ensureDevice calls start one wireguard-go', async () => {
      const a = mk();
      await Promise.all([a.ensureDevice('wgp4'), a.ensureDevice('wgp4'), a.ensureDevice('wgp4')]);
      const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => /wireguard-go -f wgp4$/.test(l.trim()));
      expect(ps).toHaveLength(1);
      await a.deleteDevice('wgp4');
      await a.close();
    });
  });
});
