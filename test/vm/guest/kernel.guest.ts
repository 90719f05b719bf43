/**
 * Runs INSIDE the kernel VM lane only (as root, wireguard.ko loaded, host root read-only): the
 * compliance suite against the kernel backend, plus kernel-specific checks. Started by
 * test/vm/guest/run.sh; its results are asserted on the host by test/vm/kernel-lane.test.ts.
 */
import { execFileSync } from 'node:child_process';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createWireGuardBackend } from '../../../src/wireguard/index.ts';
import { KernelWireGuardBackend } from '../../../src/wireguard/kernel.ts';
import { generateKeyPair, generatePrivateKey } from '../../../src/wireguard/keys.ts';
import { describeCompliance } from '../../wireguard/compliance.ts';

const logger = pino({ level: 'silent' });
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

describeCompliance(
  'kernel (generic netlink)',
  async () => ({
    open: () => KernelWireGuardBackend.open({ logger }),
    async removePeerOutOfBand(ifname, publicKey) {
      sh('wg', ['set', ifname, 'peer', publicKey, 'remove']);
    },
    async setAllowedIPsOutOfBand(ifname, publicKey, allowedIPs) {
      sh('wg', ['set', ifname, 'peer', publicKey, 'allowed-ips', allowedIPs.join(',')]);
    },
    async close() {},
  }),
  { ifPrefix: 'wgk' },
);

describe('kernel backend specifics', () => {
  it('auto-selects the kernel backend when the module is loaded', async () => {
    const b = await createWireGuardBackend({ kind: 'auto', logger });
    expect(b.kind).toBe('kernel');
    await b.close();
  });

  it('creates a link of kind wireguard that wg(8) agrees with', async () => {
    const wg = await KernelWireGuardBackend.open({ logger });
    try {
      await wg.ensureDevice('wgx0');
      expect(sh('ip', ['-d', 'link', 'show', 'wgx0'])).toMatch(/wireguard/);
      const priv = generatePrivateKey();
      const peer = generateKeyPair().publicKey;
      await wg.setDevice('wgx0', { privateKey: priv, listenPort: 45555, peers: [{ publicKey: peer, endpoint: '192.0.2.9:51820', persistentKeepalive: 15, allowedIPs: ['10.77.0.0/16', 'fd77::/64'] }] });
      const dump = sh('wg', ['show', 'wgx0', 'dump']).trim().split('\n');
      expect(dump[0]!.split('\t').slice(0, 3)).toEqual([priv, (await wg.getDevice('wgx0'))!.publicKey, '45555']);
      const cols = dump[1]!.split('\t');
      expect(cols[0]).toBe(peer);
      expect(cols[2]).toBe('192.0.2.9:51820');
      expect(cols[3]!.split(',').sort()).toEqual(['10.77.0.0/16', 'fd77::/64']);
      expect(cols[7]).toBe('15');
    } finally {
      await wg.deleteDevice('wgx0');
      await wg.close();
    }
  });

  it('reads back one peer whose allowed IPs span several dump messages', async () => {
    const wg = await KernelWireGuardBackend.open({ logger });
    try {
      await wg.ensureDevice('wgx1');
      const peer = generateKeyPair().publicKey;
      const ips = Array.from({ length: 3000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`);
      await wg.setDevice('wgx1', { peers: [{ publicKey: peer, allowedIPs: ips, replaceAllowedIPs: true }] });
      const d = await wg.getDevice('wgx1');
      expect(d!.peers).toHaveLength(1);
      expect([...d!.peers[0]!.allowedIPs].sort()).toEqual([...ips].sort());
      // "<peer key>\t<cidr> <cidr> ..." (the key itself may contain '/').
      const listed = sh('wg', ['show', 'wgx1', 'allowed-ips']).trim().split('\t')[1]!.split(' ');
      expect(listed).toHaveLength(3000);
    } finally {
      await wg.deleteDevice('wgx1');
      await wg.close();
    }
  });

  it('two configured kernel devices handshake and carry traffic', async () => {
    // Both links are created and configured here (their UDP sockets stay in this namespace, on
    // loopback), then each is moved into its own network namespace, where ping goes through them.
    const wg = await KernelWireGuardBackend.open({ logger });
    const ns = ['wwg-ka', 'wwg-kb'];
    try {
      const ka = generateKeyPair();
      const kb = generateKeyPair();
      await wg.ensureDevice('wgy0');
      await wg.ensureDevice('wgy1');
      await wg.setDevice('wgy0', { privateKey: ka.privateKey, listenPort: 52001, peers: [{ publicKey: kb.publicKey, endpoint: '127.0.0.1:52002', allowedIPs: ['10.98.0.2/32'] }] });
      await wg.setDevice('wgy1', { privateKey: kb.privateKey, listenPort: 52002, peers: [{ publicKey: ka.publicKey, endpoint: '127.0.0.1:52001', allowedIPs: ['10.98.0.1/32'] }] });
      const plan = [
        ['wgy0', ns[0]!, '10.98.0.1', '10.98.0.2'],
        ['wgy1', ns[1]!, '10.98.0.2', '10.98.0.1'],
      ] as const;
      for (const [dev, n, self, other] of plan) {
        sh('ip', ['netns', 'add', n]);
        sh('ip', ['link', 'set', dev, 'netns', n]);
        sh('ip', ['-n', n, 'addr', 'add', `${self}/32`, 'dev', dev]);
        sh('ip', ['-n', n, 'link', 'set', dev, 'up']);
        sh('ip', ['-n', n, 'route', 'add', `${other}/32`, 'dev', dev]);
      }
      sh('ip', ['netns', 'exec', ns[0]!, 'ping', '-c', '2', '-W', '5', '10.98.0.2']);
      // Bring one back to read it with the backend.
      sh('ip', ['-n', ns[0]!, 'link', 'set', 'wgy0', 'netns', '1']);
      const p = (await wg.getDevice('wgy0'))!.peers[0]!;
      expect(p.lastHandshake).toBeGreaterThan(0);
      expect(p.rxBytes).toBeGreaterThan(0);
      expect(p.txBytes).toBeGreaterThan(0);
    } finally {
      for (const n of ns) {
        try {
          execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
        } catch {
          // not created
        }
      }
      await wg.deleteDevice('wgy0').catch(() => {});
      await wg.deleteDevice('wgy1').catch(() => {});
      await wg.close();
    }
  });

  it('refuses to adopt or delete a link that is not WireGuard', async () => {
    const wg = await KernelWireGuardBackend.open({ logger });
    try {
      sh('ip', ['link', 'add', 'wgx2', 'type', 'veth', 'peer', 'name', 'wgx2b']);
      await expect(wg.getDevice('wgx2')).rejects.toThrow(/not a WireGuard device/);
      await expect(wg.ensureDevice('wgx2')).rejects.toThrow(/not a WireGuard device/);
      await expect(wg.deleteDevice('wgx2')).rejects.toThrow(/not a WireGuard device/);
    } finally {
      try {
        execFileSync('ip', ['link', 'del', 'wgx2'], { stdio: 'ignore' });
      } catch {
        // not created
      }
      await wg.close();
    }
  });
});
