/**
 * Issue 9 mesh-key rotation in a real lab (3 nodes, real agents): `weft mesh-key rotate install`,
 * then `switch`, then `retire`, each run node by node. After every single node's step, every
 * agent still sees all three members alive and no node counted a gossip decryption failure: the
 * mesh never partitions. A restarted agent keeps the rotated keyring (its key file still holds
 * the retired key) and rejoins; a pod added after the rotation is published to every node.
 */
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const NODE = process.execPath;
const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare'], wireguard: true, prefix: 'wob' });
const log = (msg: string): void => {
  process.stderr.write(`[mesh-key] ${msg}\n`);
};

let lab: Lab;
let nodes: string[] = [];

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wob[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '5s' });
  await lab.up({ nodes: 3, podsPerNode: 0 });
  nodes = lab.meta.nodes.map((n) => n.name);
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

async function decryptFailures(node: string): Promise<number> {
  const r = await lab.client(node).raw('GET', '/metrics');
  const m = /^weft_gossip_decryption_failures_total (\d+)/m.exec(r.body);
  if (!m) throw new Error(`${node}: no weft_gossip_decryption_failures_total in /metrics`);
  return Number(m[1]);
}

async function allAlive(): Promise<boolean> {
  for (const n of nodes) {
    const s = await lab.client(n).get<AgentStatus>('/v1/status');
    if (s.mesh.members.alive !== nodes.length) return false;
  }
  return true;
}

async function meshKey(node: string, ...args: string[]): Promise<{ primary: string; keys: string[] }> {
  const r = await lab.exec(node, [NODE, MAIN, 'mesh-key', ...args, '--json'], { check: false, timeoutMs: 20_000 });
  expect(r.code, `${node} mesh-key ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as { primary: string; keys: string[] };
}

describe.skipIf(skip)(`mesh key rotation without a partition${WHY}`, () => {
  it('install, switch, retire node by node: all members alive and no decryption failure after every step', async () => {
    const newKey = randomBytes(32).toString('base64');
    for (const n of nodes) await writeFile(join(lab.handle(n).stateDir, 'mesh-new.key'), `${newKey}\n`, { mode: 0o600 });
    const before = await meshKey(nodes[0]!, 'list');
    expect(before.keys).toHaveLength(1);
    const oldId = before.primary;
    const base = await Promise.all(nodes.map(decryptFailures));

    const steps: [string, string][] = [['install', 'mesh-new.key'], ['switch', 'mesh-new.key'], ['retire', 'mesh.key']];
    let newId = '';
    for (const [step, file] of steps) {
      for (const n of nodes) {
        const r = await meshKey(n, 'rotate', step, '--key-file', `/var/lib/weft/${file}`);
        if (step === 'switch') newId = r.primary;
        // Let a few gossip rounds and probes run with the mesh in this mixed state.
        await new Promise((res) => setTimeout(res, 1500));
        expect(await allAlive(), `all members alive after ${step} on ${n}`).toBe(true);
        const now = await Promise.all(nodes.map(decryptFailures));
        expect(now, `no decryption failures after ${step} on ${n}`).toEqual(base);
      }
    }
    expect(newId).not.toBe(oldId);
    for (const n of nodes) expect(await meshKey(n, 'list')).toEqual({ primary: newId, keys: [newId] });
  }, 120_000);

  it('a restarted agent keeps the rotated keyring (its key file still holds the retired key) and rejoins; new records still spread', async () => {
    const n1 = nodes[0]!;
    await lab.stopAgent(n1, 'term');
    await lab.startAgent(n1);
    await lab.waitReady(n1);
    const list = await meshKey(n1, 'list');
    expect(list.keys).toEqual([list.primary]);
    await waitFor('all members alive after the restart', 30_000, async () => ((await allAlive()) ? true : undefined), 500);
    await lab.addPod(nodes[2]!, 1);
    // The pod's name is in the record of node 3, sealed with the new key: node 1 learns it.
    await waitFor(`${n1} to learn the new pod's name`, 30_000, async () => {
      const r = await lab.exec(n1, [NODE, MAIN, 'status', 'dns', '--json'], { check: false });
      return r.code === 0 && (JSON.parse(r.stdout) as { table?: { pods?: number } }).table?.pods === 1 ? true : undefined;
    }, 500);
  }, 120_000);
});
