/**
 * WireGuard over an IPv6 underlay: two lab nodes publish endpoints of both families, plan with the
 * IPv6 underlay preferred (MTU = 1500 - 80), and pod traffic between them (IPv4 and IPv6 pod
 * ranges) crosses the underlay only as WireGuard UDP over IPv6. Needs root, wireguard-go, ip,
 * unshare, tcpdump.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredState, NodeInfo } from '../../src/model.ts';
import { planDatapath } from '../../src/plan/datapath.ts';
import { recordsFromSnapshot } from '../../src/plan/records.ts';
import { keyPair, member, snapshot } from '../plan/helpers.ts';
import { DatapathDriver, deleteNamespaces, makeUnderlay, nsRun, sh } from './datapath-node.ts';
import { labPrerequisites } from './prerequisites.ts';

const { skip, why } = labPrerequisites({ tools: ['ip', 'wg', 'unshare', 'nsenter', 'tcpdump', 'ping', 'wireguard-go'], tun: true });
const PREFIX = `wdp-6${process.pid % 10000}`;
const CLUSTER = ['10.244.0.0/16', 'fd00:10::/56'];

function ping(ns: string, dst: string, src?: string): boolean {
  try {
    nsRun(ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', ...(src ? ['-I', src] : []), dst]);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(skip)(`WireGuard over an IPv6 underlay${why}`, () => {
  let nodes: string[] = [];
  let underlay = '';
  const drivers: DatapathDriver[] = [];
  const desired: DesiredState[] = [];
  let dir = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), `${PREFIX}-pcap-`));
    deleteNamespaces([`${PREFIX}-u`, `${PREFIX}-0`, `${PREFIX}-1`]);
    ({ underlay, nodes } = makeUnderlay(PREFIX, 2));
    const infos: NodeInfo[] = [];
    for (let i = 0; i < 2; i++) {
      const keys = keyPair(300 + i);
      infos.push({
        format: 1,
        name: `node-${i}`,
        wgPublicKey: keys.publicKey,
        listenPort: 51820,
        endpoints: [`192.0.2.${i + 1}:51820`, `[2001:db8::${i + 1}]:51820`],
        meshIP: `10.244.${i + 1}.1`,
        podCIDRs: [`10.244.${i + 1}.0/24`, `fd00:10:0:${i + 1}::/64`],
        claimedAt: 1000 + i,
        keepalive: 0,
      });
      const d = new DatapathDriver(nodes[i]!);
      drivers.push(d);
      await d.call({ init: { privateKey: keys.privateKey, stateDir: d.stateDir } });
      // A pod-range IPv6 address on lo stands in for a pod, so IPv6 pod traffic has an endpoint.
      nsRun(nodes[i]!, ['ip', 'addr', 'add', `fd00:10:0:${i + 1}::1/128`, 'dev', 'lo']);
    }
    const members = infos.map((info) => member(info.name, info));
    for (let i = 0; i < 2; i++) {
      const rec = recordsFromSnapshot(snapshot(`node-${i}`, members), { clusterCIDRs: CLUSTER });
      expect(rec.rejected).toEqual([]);
      desired.push(planDatapath(infos[i]!, rec.nodes, { ifname: 'weft0', listenPort: 51820, clusterCIDRs: CLUSTER, mtu: 'auto', underlayMTU: 1500, underlayFamilies: [6, 4] }));
    }
  });

  afterAll(async () => {
    for (const d of drivers) await d.close();
    deleteNamespaces([...nodes, underlay].filter(Boolean));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('plans IPv6 endpoints and the IPv6 overhead', () => {
    expect(desired[0]!.peers[0]!.endpoint).toBe('[2001:db8::2]:51820');
    expect(desired[0]!.mtu).toBe(1420);
  });

  it('carries IPv4 and IPv6 pod traffic only as WireGuard over IPv6', async () => {
    for (let i = 0; i < 2; i++) expect((await drivers[i]!.call<{ errors: string[] }>({ apply: desired[i] })).errors).toEqual([]);
    const file = join(dir, 'v6.pcap');
    const cap = spawn('ip', ['netns', 'exec', nodes[0]!, 'tcpdump', '-i', 'eth0', '-n', '-U', '--immediate-mode', '-Z', 'root', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      let err = '';
      cap.stderr!.on('data', (b: Buffer) => {
        err += b.toString();
        if (err.includes('listening on')) setTimeout(resolve, 200);
      });
      cap.once('exit', (c) => reject(new Error(`tcpdump exited ${c}: ${err}`)));
    });
    const v4 = ping(nodes[0]!, '10.244.2.1', '10.244.1.1');
    const v6 = ping(nodes[0]!, 'fd00:10:0:2::1', 'fd00:10:0:1::1');
    await new Promise((r) => setTimeout(r, 300));
    const done = new Promise((r) => cap.once('exit', r));
    cap.kill('SIGINT');
    await done;
    expect({ v4, v6 }).toEqual({ v4: true, v6: true });
    const lines = (f: string) => sh(['tcpdump', '-r', file, '-n', f]).split('\n').filter((l) => l.trim() !== '');
    expect(lines('net 10.244.0.0/16 or net fd00:10::/56')).toEqual([]);
    expect(lines('ip and udp port 51820')).toEqual([]);
    expect(lines('ip6 and udp port 51820 and host 2001:db8::1 and host 2001:db8::2').length).toBeGreaterThanOrEqual(6);
  });
});
