/**
 * End-to-end tests of issue 4 in one lab (3 nodes x 2 pods, real agents, real CNI plugin,
 * wireguard-go): pod-to-pod reachability (ICMP and TCP; same-node pods are routed by the node),
 * the routed pod veths and weftgw0, an underlay capture holding only
 * WireGuard UDP, established TCP connections surviving an agent SIGKILL + restart, a removed
 * node's peer and routes disappearing within the mesh's detection time, and a fourth node joining.
 * The cases run in order and share the lab, because CI has 2 cores and 30 minutes for everything.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type LabPod } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import { LAN_TIMING, suspicionBounds } from '../../mesh/options.ts';
import type { CaptureSummary } from '../../src/lab/pcap.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const ECHO_PORT = 7777;
const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'tcpdump', 'ping', 'wg'], wireguard: true, prefix: 'wle' });

let lab: Lab;
let capture: { stop: () => Promise<CaptureSummary> } | undefined;
const log = (msg: string): void => {
  process.stderr.write(`[e2e] ${msg}\n`);
};

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wle[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '10s' });
  await lab.up({ nodes: 3, podsPerNode: 2 });
  for (const p of lab.meta.pods) await lab.spawnIn(p.netns, lab.probeArgv('serve', String(ECHO_PORT)), `echo:${p.netns}`);
  for (const p of lab.meta.pods) {
    await waitFor(`echo server in ${p.netns}`, 15_000, async () => {
      const r = await lab.exec(p.netns, ['ss', '-Hltn', `sport = :${ECHO_PORT}`], { check: false });
      return r.stdout.includes(`:${ECHO_PORT}`) ? true : undefined;
    }, 100);
  }
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await capture?.stop().catch(() => {});
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

/** Pings `ip` from `pod` until one echo comes back (the first packet may wait for a handshake). */
async function pingOnce(pod: string, ip: string, tries = 3): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    const r = await lab.exec(pod, ['ping', '-n', '-c', '1', '-W', '2', ip], { check: false });
    if (r.code === 0) return true;
  }
  return false;
}

function pod(name: string): LabPod {
  const p = lab.meta.pods.find((x) => x.netns === `${PREFIX}-${name}`);
  if (!p) throw new Error(`no pod ${name}`);
  return p;
}

describe.skipIf(skip)(`e2e: 3 nodes x 2 pods${WHY}`, () => {
  it('every node sizes WireGuard from its own underlay: MTU = the node\'s underlay MTU - 60 (IPv4)', async () => {
    const mtuOf = async (node: string, ifname: string): Promise<number> => {
      const links = JSON.parse((await lab.exec(node, ['ip', '-j', 'link', 'show', 'dev', ifname])).stdout) as { mtu: number }[];
      return links[0]!.mtu;
    };
    for (const n of lab.meta.nodes) {
      const underlay = await mtuOf(n.name, 'eth0');
      expect(await mtuOf(n.name, 'weft0'), `${n.name}: weft0 vs eth0 (${underlay})`).toBe(underlay - 60);
    }
  });

  it('every pod reaches every other pod over ICMP and TCP (with an underlay capture running)', async () => {
    capture = await lab.captureUnderlay('e2e-capture');
    const pods = lab.meta.pods;
    expect(pods).toHaveLength(6);
    expect(new Set(lab.meta.nodes.map((n) => n.podCIDR)).size).toBe(3);

    const icmpFailures: string[] = [];
    await Promise.all(
      pods.map(async (src) => {
        for (const dst of pods) {
          if (dst.netns !== src.netns && !(await pingOnce(src.netns, dst.ip))) icmpFailures.push(`${src.netns} -> ${dst.netns} (${dst.ip})`);
        }
      }),
    );
    expect(icmpFailures).toEqual([]);

    const tcpFailures: string[] = [];
    await Promise.all(
      pods.map(async (src) => {
        const targets = pods.filter((d) => d.netns !== src.netns).map((d) => `${d.ip}:${ECHO_PORT}`);
        const r = await lab.exec(src.netns, lab.probeArgv('check', targets.join(','), '65536'), { check: false, timeoutMs: 60_000 });
        const results = JSON.parse(r.stdout || '[]') as Array<{ target: string; ok: boolean; error?: string }>;
        expect(results).toHaveLength(5);
        for (const x of results) if (!x.ok) tcpFailures.push(`${src.netns} -> ${x.target}: ${x.error}`);
      }),
    );
    expect(tcpFailures).toEqual([]);
  });

  it('the underlay capture during that traffic holds only WireGuard UDP (and sealed gossip), never a pod address', async () => {
    expect(capture).toBeDefined();
    const s = await capture!.stop();
    capture = undefined;
    log(`capture: ${JSON.stringify(s)}`);
    // 30 ping pairs and 30 TCP exchanges of 64 KiB between pods crossed nodes as WireGuard data.
    expect(s.wireguardData).toBeGreaterThan(100);
    expect(s.podAddressSamples).toEqual([]);
    expect(s.podAddress).toBe(0);
    expect(s.otherSamples).toEqual([]);
    expect(s.other).toBe(0);
    expect(s.total).toBe(s.wireguard + s.gossip + s.arp);
  });

  it('pods sit on routed veths: no bridge, the gateway on weftgw0, a host route per pod, host reaches its pods, unused block addresses go nowhere', async () => {
    for (const n of lab.meta.nodes) {
      const j = async (args: string[]) => JSON.parse((await lab.exec(n.name, ['ip', '-j', ...args])).stdout || '[]');
      expect(await j(['-d', 'link', 'show', 'type', 'bridge']), `${n.name}: bridges`).toEqual([]);
      const gw = (await j(['addr', 'show', 'dev', 'weftgw0']))[0].addr_info.map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`);
      expect(gw).toContain(`${n.meshIP}/24`);
      for (const p of lab.meta.pods.filter((x) => x.node === n.name)) {
        const routes = await j(['route', 'show', `${p.ip}/32`]);
        expect(routes, `${n.name}: host route to ${p.ip}`).toHaveLength(1);
        expect(routes[0].dev).toMatch(/^wv[0-9a-f]{11}$/);
        expect((await lab.exec(n.name, ['ping', '-n', '-c', '1', '-W', '2', p.ip], { check: false })).code, `${n.name} -> ${p.ip}`).toBe(0);
      }
      const local = lab.meta.pods.find((x) => x.node === n.name)!;
      const unused = `${n.meshIP.split('.').slice(0, 3).join('.')}.200`;
      expect((await j(['route', 'get', unused]))[0].dev).toBe('weftgw0');
      expect((await lab.exec(local.netns, ['ping', '-n', '-c', '1', '-W', '1', unused], { check: false })).code).not.toBe(0);
    }
  });

  it('SIGKILL of one agent and a restart keep established TCP connections, on other nodes and on that node', async () => {
    const victim = `${PREFIX}-n1`;
    const streams = [
      { from: pod('n2-p1'), to: pod('n3-p1'), what: 'between two other nodes' },
      { from: pod('n1-p1'), to: pod('n2-p2'), what: 'from the restarted node' },
      { from: pod('n3-p2'), to: pod('n1-p2'), what: 'into the restarted node' },
    ];
    const running = streams.map((s) =>
      lab.exec(s.from.netns, lab.probeArgv('stream', `${s.to.ip}:${ECHO_PORT}`, '14'), { check: false, timeoutMs: 90_000 }),
    );
    await new Promise((r) => setTimeout(r, 2000));
    const killed = await lab.stopAgent(victim, 'kill');
    expect(killed).toHaveLength(1);
    expect(lab.agentPid(victim)).toBeUndefined();
    // The datapath stays without its agent.
    const wg = await lab.exec(victim, ['wg', 'show', 'weft0', 'peers'], { check: false });
    expect(wg.code, wg.stderr).toBe(0);
    expect(wg.stdout.trim().split('\n')).toHaveLength(2);
    await new Promise((r) => setTimeout(r, 1000));
    await lab.startAgent(victim);
    await lab.waitReady(victim, 60_000);
    log(`agent of ${victim} restarted`);

    const results = await Promise.all(running);
    for (const [i, r] of results.entries()) {
      const s = streams[i]!;
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1) || '{}') as { sent?: number; received?: number; error?: string; maxGapMs?: number };
      log(`stream ${s.what}: ${r.stdout.trim()}`);
      expect({ what: s.what, code: r.code, error: out.error }).toEqual({ what: s.what, code: 0, error: undefined });
      expect(out.sent).toBeGreaterThan(100);
      expect(out.received).toBe(out.sent);
    }
    // New connections work too after the restart.
    const fresh = await lab.exec(pod('n1-p1').netns, lab.probeArgv('check', `${pod('n3-p2').ip}:${ECHO_PORT}`), { check: false });
    expect(JSON.parse(fresh.stdout)[0]).toMatchObject({ ok: true });
  });

  it("a removed node's peer and routes are gone from every other node within the mesh's detection time", async () => {
    const gone = `${PREFIX}-n3`;
    const st = await lab.client(gone).get<AgentStatus>('/v1/status');
    const key = st.node.publicKey;
    const block = lab.node(gone).podCIDR;
    const blockPrefix = block.split('.').slice(0, 3).join('.') + '.';
    const others = lab.meta.nodes.filter((n) => n.name !== gone).map((n) => n.name);
    const present = async (node: string): Promise<boolean> => {
      const peers = (await lab.exec(node, ['wg', 'show', 'weft0', 'allowed-ips'])).stdout;
      const routes = (await lab.exec(node, ['ip', '-4', 'route', 'show'])).stdout;
      return peers.includes(key) || peers.includes(blockPrefix) || routes.split('\n').some((l) => l.startsWith(blockPrefix));
    };
    for (const n of others) expect(await present(n)).toBe(true);

    // The machine disappears: agent SIGKILLed (no graceful leave), namespaces deleted.
    const n = lab.meta.nodes.length;
    const [, maxSuspicion] = suspicionBounds(LAN_TIMING, n);
    const detectionMs = n * LAN_TIMING.probeIntervalMs + LAN_TIMING.probeTimeoutMs + maxSuspicion;
    const t0 = Date.now();
    await lab.removeNode(gone);
    // Detection time plus one gossip/reconcile round of slack.
    await waitFor(`${gone}'s peer and routes to leave ${others.join(', ')}`, detectionMs + 3000, async () => {
      for (const o of others) if (await present(o)) return undefined;
      return true;
    }, 250);
    log(`removed node gone everywhere after ${Date.now() - t0} ms (bound ${detectionMs + 3000} ms)`);
    // Fail closed: the cluster CIDR still routes into weft0, so the old block is not reached in clear.
    for (const o of others) expect((await lab.exec(o, ['ip', '-4', 'route', 'show', '10.244.0.0/16'])).stdout).toContain('dev weft0');
  });

  it('a fourth node joins the running lab and is reachable within 5 s', async () => {
    const name = await lab.addNode({ podsPerNode: 0 });
    const joinedAt = Date.now();
    const meshIP = lab.node(name).meshIP;
    const p = await lab.addPod(name, 1);
    const from = [pod('n1-p1'), pod('n2-p2')];
    await waitFor(`${name} (${meshIP}) and ${p.netns} (${p.ip}) to be reachable from ${from.map((x) => x.netns).join(', ')}`, Math.max(0, 5000 - (Date.now() - joinedAt)), async () => {
      for (const f of from) {
        for (const ip of [meshIP, p.ip]) {
          const r = await lab.exec(f.netns, ['ping', '-n', '-c', '1', '-W', '1', ip], { check: false });
          if (r.code !== 0) return undefined;
        }
      }
      return true;
    }, 100);
    log(`${name} reachable ${Date.now() - joinedAt} ms after its agent was ready`);
    // And the new pod reaches the old ones over TCP.
    await lab.spawnIn(p.netns, lab.probeArgv('serve', String(ECHO_PORT)), `echo:${p.netns}`);
    const r = await lab.exec(p.netns, lab.probeArgv('check', from.map((f) => `${f.ip}:${ECHO_PORT}`).join(',')), { check: false });
    expect((JSON.parse(r.stdout) as Array<{ ok: boolean }>).every((x) => x.ok)).toBe(true);
  });
});
