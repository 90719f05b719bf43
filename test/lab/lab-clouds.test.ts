/**
 * Pure parts of `weft lab up --clouds 2` (src/lab/clouds.ts): cloud-2 addressing and the distinct
 * ports of nodes behind one NAT, and the CLI refusing bad --clouds values. The topology itself runs
 * in test/lab/token-nat.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { argvPort, cloud2IP, cloud2Ports, CLOUD2, MAX_CLOUD2_NODES } from '../../src/lab/clouds.ts';
import { REPO_DIR } from '../../src/lab/lab.ts';
import { cidrHas, parseAddr, parseCidr } from '../../src/ipam/cidr.ts';

describe('cloud 2 addressing', () => {
  it('gives every cloud-2 node an address in 192.0.2.0/24 other than the gateway, and its own WireGuard and mesh ports', () => {
    expect(cloud2IP(1)).toBe('192.0.2.10');
    expect(cloud2Ports(1)).toEqual({ wgPort: 51820, meshPort: 7946 });
    expect(cloud2Ports(2)).toEqual({ wgPort: 51821, meshPort: 7956 });
    const ks = Array.from({ length: MAX_CLOUD2_NODES }, (_, i) => i + 1);
    const subnet = parseCidr(CLOUD2.subnet);
    const ips = ks.map(cloud2IP);
    for (const ip of ips) {
      const a = parseAddr(ip);
      expect(cidrHas(subnet, a.family, a.value)).toBe(true);
    }
    expect(new Set([...ips, CLOUD2.gateway]).size).toBe(ks.length + 1);
    const ports = ks.flatMap((k) => Object.values(cloud2Ports(k)));
    // No two ports collide, and none is a join listener port (7947) or the next mesh port's neighbour.
    expect(new Set([...ports, 7947]).size).toBe(ports.length + 1);
    for (const bad of [0, -1, 1.5, MAX_CLOUD2_NODES + 1]) expect(() => cloud2IP(bad)).toThrow(RangeError);
  });

  it('argvPort reads a port flag and ignores anything that is not a port', () => {
    expect(argvPort(['agent', '--wg-port', '51821'], '--wg-port')).toBe(51821);
    fc.assert(
      fc.property(fc.string(), (v) => {
        const p = argvPort(['--mesh-port', v], '--mesh-port');
        expect(p === undefined || (Number.isInteger(p) && p > 0 && p < 65_536)).toBe(true);
      }),
    );
    expect(argvPort(['--mesh-port'], '--mesh-port')).toBeUndefined();
    expect(argvPort(['--mesh-port', '70000'], '--mesh-port')).toBeUndefined();
  });
});

describe('weft lab up --clouds', () => {
  it('rejects a cloud count other than 1 or 2 and a bad --cloud2-nodes with one clear line, before touching anything', () => {
    const run = (...args: string[]) => spawnSync(process.execPath, [join(REPO_DIR, 'src', 'lab', 'cli.ts'), 'lab', 'up', '--prefix', 'wcl', ...args], { encoding: 'utf8' });
    const r = run('--clouds', '3');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--clouds.*between 1 and 2/);
    const n = run('--clouds', '2', '--cloud2-nodes', '0');
    expect(n.status).not.toBe(0);
    expect(n.stderr).toMatch(/--cloud2-nodes.*between 1 and 50/);
  });
});
