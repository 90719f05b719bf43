/**
 * A relayed pair goes back to direct once the direct path works again (issue 7, src/relay/README.md
 * "Going back to direct"), in a real lab: three public nodes on one underlay. The test cuts nodes 1
 * and 2 off from each other with an nftables bridge filter (a firewall between two hosts; both still
 * reach node 3) while pod traffic flows between them: the link stalls, the pair is relayed through
 * node 3, and the pods reach each other through it. Then the cut is lifted: the mesh's failure
 * detector gets direct answers from the peer again, so after `--relay-retry` (10 s here) both sides
 * stop asking for the relay, node 3 closes the session, and the pair talks directly again, without the
 * endpoints of either side changing. Prefix: wrr.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { isolateNodes, reconnectNodes } from '../../src/lab/clouds.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { AgentStatus, PeerStatus } from '../../src/agent/agent.ts';
import { peerOf, peerRow, pingPod, reachPod } from './pod-links.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const NODE = process.execPath;
const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'ping', 'wg', 'nft'], wireguard: true, prefix: 'wrr' });
const log = (msg: string): void => void process.stderr.write(`[relay-retry] ${msg}\n`);

let lab: Lab;
let n1 = '';
let n2 = '';
let n3 = '';

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wrr[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '10s' });
  await lab.up({ nodes: 3, podsPerNode: 1, agentArgs: ['--relay-after', '10s', '--relay-retry', '10s'] });
  [n1, n2, n3] = lab.meta.nodes.map((n) => n.name) as [string, string, string];
}, 300_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

const ping = (from: string, to: string, count = 1): Promise<boolean> => pingPod(lab, from, to, count);
const status = (node: string) => lab.client(node).get<AgentStatus>('/v1/status');
const row = peerRow;

/** Waits until `node` sees `peer` in the wanted state, pinging the peer's pod every round so the link carries traffic. */
const linkOn = (node: string, peer: string, want: (p: PeerStatus) => boolean, timeoutMs: number) =>
  waitFor(`${peer} on ${node}`, timeoutMs, async () => {
    await ping(node, peer);
    const p = peerOf(await status(node), peer);
    return p && want(p) ? p : undefined;
  }, 1000).catch(async (err: unknown) => {
    for (const n of [n1, n2, n3]) log(`${n}: ${(await status(n).catch(() => undefined))?.peers.map(row).join(' | ') ?? 'no status'}`);
    throw err;
  });

describe.skipIf(skip)(`a relayed pair returns to direct once the direct path works again${WHY}`, () => {
  it('direct, then relayed through node 3 while cut off, then direct again after the cut is lifted', async () => {
    for (const [a, b] of [[n1, n2], [n2, n1], [n1, n3]] as const) await reachPod(lab, a, b);
    const direct = peerOf(await status(n1), n2)!;
    expect(direct.relay, row(direct)).toBeUndefined();

    // Cut: the stalled link (sent without an answer for 20 s) plus --relay-after makes the pair relayed.
    await isolateNodes(lab, n1, n2);
    log(`cut ${n1} <-> ${n2}; waiting for the relay`);
    const relayed = await linkOn(n1, n2, (p) => p.link === 'relayed', 150_000);
    expect(relayed.relay).toBe(n3);
    expect(relayed.endpoint).toMatch(new RegExp(`^${lab.node(n3).underlayIP.replace(/\./g, '\\.')}:519\\d\\d$`));
    await reachPod(lab, n1, n2);
    expect(await ping(n2, n1, 3)).toBe(true);

    // Lift the cut: both sides see direct mesh answers again and drop their wants after --relay-retry;
    // the relay closes the session after its grace period and the pair goes direct.
    await reconnectNodes(lab);
    log(`reconnected; waiting for ${n1} <-> ${n2} to go direct`);
    const back = await linkOn(n1, n2, (p) => p.link !== 'relayed' && p.relay === undefined, 180_000);
    expect(back.endpoint).toBe(direct.endpoint);
    const other = await linkOn(n2, n1, (p) => p.link !== 'relayed' && p.relay === undefined, 60_000);
    expect(other.endpoint?.startsWith(`${lab.node(n3).underlayIP}:`), row(other)).toBe(false);
    await reachPod(lab, n1, n2);
    const wg = await lab.exec(n1, ['wg', 'show', 'weft0', 'endpoints']);
    expect(wg.stdout).toContain(direct.endpoint);
    // Whichever side asked for the relay (the first to notice the stall) dropped it on the mesh's evidence, not for changed endpoints.
    const logs = await Promise.all([n1, n2].map((n) => readFile(join(lab.host.node(n).logDir, 'agent.log'), 'utf8')));
    const relayLines = logs.flatMap((l) => l.split('\n').filter((x) => x.includes('"component":"relay"')));
    expect(relayLines.some((l) => l.includes('asking for a relay')), relayLines.join('\n')).toBe(true);
    expect(relayLines.some((l) => l.includes('the mesh reaches the peer directly again')), relayLines.join('\n')).toBe(true);
    expect(relayLines.some((l) => l.includes('endpoints changed')), relayLines.join('\n')).toBe(false);
  }, 600_000);
});
