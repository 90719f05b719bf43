/**
 * Relaying in a real lab (issue 7, src/relay/README.md), on the `--clouds 2` topology
 * (src/lab/clouds.ts): two cloud-1 nodes (public) and two cloud-2 nodes A and B behind the
 * masquerading router, joined by token. A and B first reach each other directly over the cloud-2
 * bridge. Then the test isolates them from each other like a VPC with client isolation (an nftables
 * bridge filter between their two ports of br1): the link prober finds the direct link failed after
 * --relay-after, A or B asks for a relay, the chosen cloud-1 node opens a session, and both aim at it.
 * Pods on A and B reach each other again through the relay; `weft status --json` on A shows B
 * `relayed` via that node; a capture of cloud 1's underlay during that traffic holds only WireGuard
 * (relay ports included) and sealed control traffic, no pod address; links to the cloud-1 nodes stay
 * direct. Prefix: wrl.
 *
 * Timing: before isolation A and B handshake directly, so the failure is only detected once their
 * last handshake is older than 150 s plus --relay-after (10 s here): about 3 minutes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { argvPort, isolateNodes } from '../../src/lab/clouds.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';
import { peerOf, peerRow, pingPod, reachPod } from './pod-links.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const NODE = process.execPath;
const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'ping', 'wg', 'nft', 'tcpdump'], wireguard: true, prefix: 'wrl' });
const log = (msg: string): void => void process.stderr.write(`[relay-nat] ${msg}\n`);

let lab: Lab;
let c1: string[] = [];
let a = '';
let b = '';

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wrl[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '10s' });
  await lab.up({ nodes: 2, podsPerNode: 1, clouds: 2, cloud2Nodes: 2, agentArgs: ['--relay-after', '10s'] });
  c1 = lab.meta.nodes.filter((n) => n.cloud !== 2).map((n) => n.name);
  [a, b] = lab.meta.nodes.filter((n) => n.cloud === 2).map((n) => n.name) as [string, string];
}, 360_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

const ping = (from: string, to: string, count = 1): Promise<boolean> => pingPod(lab, from, to, count);
const reach = (from: string, to: string, timeoutMs = 60_000) => reachPod(lab, from, to, timeoutMs);

/** `weft status --json` run in the node (the CLI, through the agent's socket). */
async function statusJson(node: string): Promise<AgentStatus> {
  const r = await lab.exec(node, [NODE, MAIN, 'status', '--json'], { check: false, timeoutMs: 15_000 });
  try {
    return JSON.parse(r.stdout) as AgentStatus;
  } catch {
    throw new Error(`weft status --json on ${node} printed no status (exit ${r.code}): ${r.stderr.slice(0, 300)}`);
  }
}
const row = peerRow;

async function dumpPeers(): Promise<void> {
  for (const n of [...c1, a, b]) {
    const st = await lab.client(n).get<AgentStatus>('/v1/status').catch(() => undefined);
    log(`${n}: ${st?.peers.map(row).join(' | ') ?? 'no status'}`);
  }
}

describe.skipIf(skip)(`relaying between two cloud-2 nodes that cannot reach each other${WHY}`, () => {
  it('before isolation: A and B talk directly (no relay), every link is direct', async () => {
    try {
      await reach(a, b);
      await reach(b, a);
      for (const c of c1) await reach(a, c);
    } catch (err) {
      await dumpPeers();
      throw err;
    }
    const st = await statusJson(a);
    expect(peerOf(st, b)).toMatchObject({ link: 'connected', endpoint: `${lab.node(b).underlayIP}:${argvPort(lab.node(b).agentArgv, '--wg-port')}` });
    for (const p of st.peers) expect(p.relay, row(p)).toBeUndefined();
    // Keepalive only where needed: none between the two public cloud-1 nodes, 25 s towards and from a NATed node.
    const keepalives = async (node: string): Promise<Map<string, string>> => {
      const byKey = new Map((await statusJson(node)).peers.map((p) => [p.publicKey, p.name]));
      const out = await lab.exec(node, ['wg', 'show', 'weft0', 'persistent-keepalive']);
      return new Map(out.stdout.trim().split('\n').map((l) => l.split('\t') as [string, string]).map(([k, v]) => [byKey.get(k) ?? k, v]));
    };
    // A asks for keepalive once members have told it that it is behind NAT (observedSelf) and its
    // re-published record has reached cloud 1: that can follow the first working packets.
    const k1 = await waitFor(`keepalive 25 towards ${a} on ${c1[0]}`, 60_000, async () => {
      const k = await keepalives(c1[0]!);
      return k.get(a) === '25' ? k : undefined;
    }, 1000);
    expect(k1.get(c1[1]!)).toBe('off');
    expect(k1.get(a)).toBe('25');
    expect((await keepalives(a)).get(c1[0]!)).toBe('25');
  }, 120_000);

  it('after isolation: the pair goes through a cloud-1 relay, pods reach each other both ways, status shows it relayed, cloud 1 sees only WireGuard', async () => {
    await isolateNodes(lab, a, b);
    const direct = await lab.host.exec({ netns: a }, ['ping', '-n', '-c', '1', '-W', '1', lab.node(b).underlayIP], { check: false });
    expect(direct.code, 'A still reaches B over the cloud-2 bridge').not.toBe(0);
    log('isolated; waiting for the direct link to fail (last handshake older than 150 s + 10 s) and a relay');
    let st: AgentStatus;
    try {
      st = await waitFor(`${b} relayed on ${a}`, 330_000, async () => {
        const s = await statusJson(a);
        return peerOf(s, b)?.link === 'relayed' ? s : undefined;
      }, 5000);
    } catch (err) {
      await dumpPeers();
      throw err;
    }
    const relay = peerOf(st, b)!.relay!;
    log(`${b} relayed via ${relay} on ${a}: ${row(peerOf(st, b))}`);
    expect(c1).toContain(relay);
    expect(peerOf(st, b)!.endpoint).toMatch(new RegExp(`^${lab.node(relay).underlayIP.replace(/\./g, '\\.')}:519\\d\\d$`));
    try {
      await reach(a, b, 90_000);
      await reach(b, a, 30_000);
    } catch (err) {
      await dumpPeers();
      throw err;
    }
    // Both sides are relayed through the same node, and the handshake through it is fresh.
    const fresh = await waitFor(`${a} relayed on ${b} with a handshake`, 60_000, async () => {
      const s = await statusJson(b);
      const p = peerOf(s, a);
      return p?.link === 'relayed' && p.lastHandshake > 0 && s.now - p.lastHandshake < 180 ? p : undefined;
    }, 2000);
    expect(fresh.relay).toBe(relay);

    // Traffic A <-> B with cloud 1's underlay captured: WireGuard on the relay's ports, nothing else.
    const cap = await lab.captureUnderlay('relay-c1');
    expect(await ping(a, b, 5)).toBe(true);
    expect(await ping(b, a, 5)).toBe(true);
    const s = await cap.stop();
    log(`cloud 1 capture: ${JSON.stringify(s)}`);
    expect(s.otherSamples).toEqual([]);
    expect(s.other).toBe(0);
    expect(s.podAddressSamples).toEqual([]);
    expect(s.podAddress).toBe(0);
    expect(s.wireguardData).toBeGreaterThan(0);
    expect(s.relayed).toBeGreaterThanOrEqual(10);

    // Peers not isolated stay direct: A and B to the cloud-1 nodes, and cloud 1 to A and B.
    const after = await statusJson(a);
    for (const c of c1) expect(peerOf(after, c)?.relay, row(peerOf(after, c))).toBeUndefined();
    for (const c of c1) {
      const sc = await statusJson(c);
      for (const n of [a, b]) expect(peerOf(sc, n)?.relay, `${c}: ${row(peerOf(sc, n))}`).toBeUndefined();
    }
    for (const c of c1) expect(await ping(a, c)).toBe(true);
    // The relay's log holds the session it opened.
    const relayLog = await readFile(join(lab.host.node(relay).logDir, 'agent.log'), 'utf8');
    expect(relayLog).toMatch(new RegExp(`"a":"${[a, b].sort()[0]}","b":"${[a, b].sort()[1]}".*relay session open`));
  }, 520_000);
});
