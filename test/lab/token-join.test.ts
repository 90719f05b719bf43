/**
 * `weft join` end to end in one lab (issue 7, single underlay; the NAT case is token-nat.test.ts):
 * two nodes with the shared mesh key, a third node created WITHOUT the mesh key that joins with a token
 * through node 1's join listener. Checks: expired, revoked, tampered and (after the join) spent tokens
 * are refused with a clear message; the joined node's pod reaches a pod on node 1 and back;
 * `weft node remove` cuts the node off and it cannot rejoin with its old identity. Prefix: wtk.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'ping', 'wg'], wireguard: true, prefix: 'wtk' });
const log = (msg: string): void => void process.stderr.write(`[token-lab] ${msg}\n`);

let lab: Lab;
let n1 = '';
let n3 = '';

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wtk[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '10s' });
  await lab.up({ nodes: 2, podsPerNode: 1 });
  n1 = lab.meta.nodes[0]!.name;
  n3 = await lab.addNode({ start: false });
  // The joiner has no mesh key: it gets it only through the token.
  await rm(join(lab.handle(n3).stateDir, 'mesh.key'));
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

const token = async (body: Record<string, unknown>) => lab.client(n1, 10_000).post<{ token: string; id: string }>('/v1/token/create', body);
const joinArgv = (tok: string, extra: string[] = []): string[] => {
  const argv = [...lab.node(n3).agentArgv];
  const i = argv.indexOf('agent');
  return [...argv.slice(0, i), 'join', tok, ...argv.slice(i + 1), ...extra];
};
const tryJoin = (tok: string, stateDir = '/var/lib/weft') =>
  lab.host.exec(lab.handle(n3), joinArgv(tok, ['--no-start', '--state-dir', stateDir, '--mesh-key-file', `${stateDir}/mesh.key`]), { check: false, timeoutMs: 60_000 });

describe.skipIf(skip)(`weft join with a token in the lab${WHY}`, () => {
  it('refuses an expired, a revoked and a tampered token with a clear error', async () => {
    const seeds = [`${lab.node(n1).underlayIP}:7947`];
    const expired = await token({ ttl: '1s', uses: 1, seeds });
    const revoked = await token({ ttl: '10m', uses: 1, seeds });
    await lab.client(n1).post('/v1/token/revoke', { id: revoked.id });
    await new Promise((r) => setTimeout(r, 2100));
    const e = await tryJoin(expired.token);
    expect(e.code).not.toBe(0);
    expect(e.stderr).toMatch(/expired/);
    const r = await tryJoin(revoked.token);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the mesh refused the token: token \w+ was revoked/);
    const good = await token({ ttl: '10m', uses: 1, seeds });
    const pos = good.token.length - 6;
    const tampered = good.token.slice(0, pos) + (good.token[pos] === 'A' ? 'B' : 'A') + good.token.slice(pos + 1);
    const t = await tryJoin(tampered);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/checksum mismatch|canonical/);
    // Nothing was written: the node still has no mesh key.
    expect(existsSync(join(lab.handle(n3).stateDir, 'mesh.key'))).toBe(false);
  });

  it('a node without the mesh key joins with a token; its pod and a pod on node 1 reach each other', async () => {
    const { token: tok } = await token({ ttl: '10m', uses: 1, seeds: [`${lab.node(n1).underlayIP}:7947`] });
    const h = lab.host.node(n3);
    await lab.host.spawn(h, joinArgv(tok), { logFile: join(h.logDir, 'agent.log'), label: `agent:${n3}` });
    await lab.waitReady(n3, 90_000);
    expect(existsSync(join(lab.handle(n3).stateDir, 'mesh.key'))).toBe(true);
    expect(existsSync(join(lab.handle(n3).stateDir, 'admission.json'))).toBe(true);
    const p3 = await lab.addPod(n3, 1);
    const p1 = lab.meta.pods.find((p) => p.node === n1)!;
    await waitFor(`a peer for ${n3} on ${n1}`, 60_000, async () => {
      const s = await lab.client(n1).get<AgentStatus>('/v1/status');
      return s.peers.some((p) => p.name === n3) ? true : undefined;
    });
    await waitFor(`${p3.netns} -> ${p1.ip}`, 60_000, async () => ((await lab.exec(p3.netns, ['ping', '-n', '-c', '1', '-W', '2', p1.ip], { check: false })).code === 0 ? true : undefined));
    const back = await lab.exec(p1.netns, ['ping', '-n', '-c', '1', '-W', '2', p3.ip], { check: false });
    expect(back.code).toBe(0);
    // The token is spent: a captured copy used from another state dir (a new identity) gets nothing.
    const again = await tryJoin(tok, '/var/lib/weft/other');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/used up|redeemed/);
    const list = await lab.client(n1).get<{ tokens: { status: string; redeemedBy: string[] }[] }>('/v1/token/list');
    expect(list.tokens.some((t) => t.status === 'spent' && t.redeemedBy.includes(n3))).toBe(true);
  });

  it('weft node remove drops the node on every member and it loses connectivity', async () => {
    const p3 = lab.meta.pods.find((p) => p.node === n3)!;
    const p1 = lab.meta.pods.find((p) => p.node === n1)!;
    await lab.client(n1).post('/v1/node/remove', { name: n3, reason: 'lab test' });
    for (const n of lab.meta.nodes.filter((x) => x.name !== n3)) {
      await waitFor(`${n.name} to drop ${n3}`, 60_000, async () => {
        const s = await lab.client(n.name).get<AgentStatus>('/v1/status');
        return s.peers.some((p) => p.name === n3) ? undefined : true;
      });
    }
    const r = await lab.exec(p3.netns, ['ping', '-n', '-c', '2', '-W', '2', p1.ip], { check: false });
    expect(r.code).not.toBe(0);
    // It cannot rejoin with its old identity, even with a fresh token.
    const { token: fresh } = await token({ ttl: '10m', uses: 1, seeds: [`${lab.node(n1).underlayIP}:7947`] });
    await rm(join(lab.handle(n3).stateDir, 'admission.json'));
    const again = await tryJoin(fresh);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/was removed from the mesh/);
  });
});
