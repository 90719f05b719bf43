/**
 * The fail-closed leak test. Three lab nodes on a bridged underlay (192.0.2.0/24), wireguard-go in
 * each (own mount namespace), the real pipeline per node: mesh snapshot -> recordsFromSnapshot ->
 * planDatapath -> DatapathReconciler (userspace backend, LinuxRtNetlink). Node A has no record of
 * node C. Traffic from A to C's pod range must put no packet with a pod address in its IP header on
 * A's underlay interface (tcpdump), even though A's default route points at C, while traffic to B
 * flows, encrypted. IPv6 pod ranges (the second cluster CIDR) are checked the same way. A control
 * capture first proves the capture would see such a leak, and a second
 * phase deletes A's WireGuard interface to check the blackhole fallback keeps the CIDR closed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MemberView } from '../../mesh/api.ts';
import type { DesiredState, NodeInfo } from '../../src/model.ts';
import { planDatapath } from '../../src/plan/datapath.ts';
import { recordsFromSnapshot } from '../../src/plan/records.ts';
import { keyPair, member, snapshot } from '../plan/helpers.ts';
import { DatapathDriver, deleteNamespaces, makeUnderlay, nsRun, sh } from './datapath-node.ts';
import { labPrerequisites } from './prerequisites.ts';

const { skip, why } = labPrerequisites({ tools: ['ip', 'wg', 'unshare', 'nsenter', 'tcpdump', 'ping', 'wireguard-go'], tun: true });
const PREFIX = `wdp-l${process.pid % 10000}`;
const CLUSTER = ['10.244.0.0/16', 'fd00:10::/56'];
/** Any packet with a pod (cluster) address in its IP header. */
const POD_TRAFFIC = 'net 10.244.0.0/16 or net fd00:10::/56';

/**
 * A capture on a namespace's eth0, written to a pcap file. Immediate mode matters: without it
 * libpcap hands packets over in blocks, and the packets of the last second before SIGINT are lost,
 * which would make a "no leak" assertion pass vacuously (the control test guards against that).
 */
async function capture(ns: string, file: string): Promise<{ stop(): Promise<void> }> {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', 'eth0', '-n', '-U', '--immediate-mode', '-Z', 'root', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      if (err.includes('listening on')) setTimeout(resolve, 200);
    });
    child.once('exit', (c) => reject(new Error(`tcpdump exited ${c}: ${err}`)));
  });
  return {
    async stop() {
      await new Promise((r) => setTimeout(r, 300));
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await done;
    },
  };
}

/** Packets in a pcap matching a filter, one line each. */
function readPcap(file: string, filter: string): string[] {
  return sh(['tcpdump', '-r', file, '-n', filter])
    .split('\n')
    .filter((l) => l.trim() !== '');
}

/** ping exit status: true when at least one reply came back. */
function ping(ns: string, dst: string, src?: string): boolean {
  try {
    nsRun(ns, ['ping', '-c', '2', '-i', '0.2', '-W', '1', ...(src ? ['-I', src] : []), dst]);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(skip)(`fail-closed leak test${why}`, () => {
  let nodes: string[] = [];
  let underlay = '';
  const drivers: DatapathDriver[] = [];
  const infos: NodeInfo[] = [];
  const desired: DesiredState[] = [];
  let dir = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), `${PREFIX}-pcap-`));
    deleteNamespaces([`${PREFIX}-u`, `${PREFIX}-0`, `${PREFIX}-1`, `${PREFIX}-2`]);
    ({ underlay, nodes } = makeUnderlay(PREFIX, 3));
    for (let i = 0; i < 3; i++) {
      const keys = keyPair(200 + i);
      infos.push({
        format: 1,
        name: `node-${i}`,
        wgPublicKey: keys.publicKey,
        listenPort: 51820,
        endpoints: [`192.0.2.${i + 1}:51820`],
        meshIP: `10.244.${i + 1}.1`,
        podCIDRs: [`10.244.${i + 1}.0/24`, `fd00:10:0:${i + 1}::/64`],
        claimedAt: 1000 + i,
        keepalive: 0,
      });
      const d = new DatapathDriver(nodes[i]!);
      drivers.push(d);
      await d.call({ init: { privateKey: keys.privateKey, stateDir: d.stateDir } });
      nsRun(nodes[i]!, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    }
    // Without weft, A would send cluster traffic to its default gateway (C) in clear.
    sh(['ip', '-n', nodes[0]!, 'route', 'add', 'default', 'via', '192.0.2.3']);
    sh(['ip', '-n', nodes[0]!, '-6', 'route', 'add', 'default', 'via', '2001:db8::3']);
    // Node A's view lacks C's record; B and C see everyone.
    for (let i = 0; i < 3; i++) {
      const visible = i === 0 ? [0, 1] : [0, 1, 2];
      const members: MemberView[] = visible.map((j) => member(`node-${j}`, infos[j]));
      const rec = recordsFromSnapshot(snapshot(`node-${i}`, members), { clusterCIDRs: CLUSTER });
      expect(rec.rejected).toEqual([]);
      desired.push(planDatapath(infos[i]!, rec.nodes, { ifname: 'weft0', listenPort: 51820, clusterCIDRs: CLUSTER, mtu: 'auto', underlayMTU: 1500, underlayFamilies: [4] }));
    }
    expect(desired[0]!.peers.map((p) => p.name)).toEqual(['node-1']);
  });

  afterAll(async () => {
    for (const d of drivers) await d.close();
    deleteNamespaces([...nodes, underlay].filter(Boolean));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('control: without the weft datapath, traffic to a pod range leaves in clear (the capture sees it)', async () => {
    // Wait for the underlay to carry traffic (fresh veths need a moment) before trusting a capture.
    for (let i = 0; i < 20 && !ping(nodes[0]!, '192.0.2.3'); i++) await new Promise((r) => setTimeout(r, 250));
    const file = join(dir, 'control.pcap');
    const cap = await capture(nodes[0]!, file);
    ping(nodes[0]!, '10.244.3.5');
    ping(nodes[0]!, 'fd00:10:0:3::5');
    await cap.stop();
    expect(readPcap(file, 'net 10.244.0.0/16').length).toBeGreaterThan(0);
    expect(readPcap(file, 'net fd00:10::/56').length).toBeGreaterThan(0);
  });

  it('with the datapath applied, traffic to the unknown node never leaves in clear; to the known node it flows encrypted', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await drivers[i]!.call<{ ok: boolean; errors: string[] }>({ apply: desired[i] });
      expect(r.errors).toEqual([]);
    }
    const file = join(dir, 'applied.pcap');
    const cap = await capture(nodes[0]!, file);
    const toB = ping(nodes[0]!, '10.244.2.1', '10.244.1.1');
    const toC = ping(nodes[0]!, '10.244.3.1', '10.244.1.1');
    const toCPod = ping(nodes[0]!, '10.244.3.5');
    const toNobody = ping(nodes[0]!, '10.244.200.9');
    const toCPod6 = ping(nodes[0]!, 'fd00:10:0:3::5');
    const toBPod6 = ping(nodes[0]!, 'fd00:10:0:2::5');
    // C knows A and tries to reach it: A has no peer for C, so nothing is accepted or answered in clear.
    const fromC = ping(nodes[2]!, '10.244.1.1', '10.244.3.1');
    await cap.stop();
    expect({ toB, toC, toCPod, toNobody, toCPod6, toBPod6, fromC }).toEqual({ toB: true, toC: false, toCPod: false, toNobody: false, toCPod6: false, toBPod6: false, fromC: false });
    expect(readPcap(file, POD_TRAFFIC)).toEqual([]);
    const wg = readPcap(file, 'udp and host 192.0.2.1 and host 192.0.2.2 and port 51820');
    expect(wg.length).toBeGreaterThanOrEqual(4);
  });

  it('with the WireGuard interface gone, the blackhole fallback keeps the cluster CIDR closed; resync restores it', async () => {
    nsRun(nodes[0]!, ['ip', 'link', 'del', 'weft0']);
    await new Promise((r) => setTimeout(r, 500));
    const file = join(dir, 'fallback.pcap');
    const cap = await capture(nodes[0]!, file);
    const toB = ping(nodes[0]!, '10.244.2.1');
    const toCPod = ping(nodes[0]!, '10.244.3.5');
    const toCPod6 = ping(nodes[0]!, 'fd00:10:0:3::5');
    await cap.stop();
    expect({ toB, toCPod, toCPod6 }).toEqual({ toB: false, toCPod: false, toCPod6: false });
    expect(readPcap(file, POD_TRAFFIC)).toEqual([]);
    const r = await drivers[0]!.call<{ ok: boolean; errors: string[] }>({ resync: true });
    expect(r.errors).toEqual([]);
    expect(ping(nodes[0]!, '10.244.2.1', '10.244.1.1')).toBe(true);
  });
});
