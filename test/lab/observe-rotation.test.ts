/**
 * Issue 9 key rotation in a real lab (2 nodes x 1 pod, real agents, wireguard-go): while a bulk
 * iperf3 transfer and a message stream run between the pods on ONE TCP connection each, both nodes
 * rotate their WireGuard key with `weft rotate-key`. The new key is persisted (0600), published,
 * adopted by the peer, the connections survive with every message echoed, the rotation is in the
 * audit trail, and no private key (old or new) appears in any log.
 */
import { execFileSync } from 'node:child_process';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const NODE = process.execPath;
const ECHO_PORT = 7777;
const IPERF_PORT = 5201;
const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'iperf3', 'ss', 'wg'], wireguard: true, prefix: 'wob' });
const log = (msg: string): void => {
  process.stderr.write(`[rotation] ${msg}\n`);
};

let lab: Lab;
let n1: string;
let n2: string;
const oldKeys: string[] = [];

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wob[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '5s' });
  await lab.up({ nodes: 2, podsPerNode: 1 });
  [n1, n2] = lab.meta.nodes.map((n) => n.name) as [string, string];
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

const pod = (node: string) => lab.meta.pods.find((p) => p.node === node)!;
const status = async (node: string): Promise<AgentStatus> => lab.client(node).get<AgentStatus>('/v1/status');
const keyFile = (node: string) => join(lab.handle(node).stateDir, 'wg.key');

async function rotate(node: string, peer: string): Promise<string> {
  const r = await lab.exec(node, [NODE, MAIN, 'rotate-key', '--json'], { check: false, timeoutMs: 30_000 });
  expect(r.code, r.stderr).toBe(0);
  const { publicKey } = JSON.parse(r.stdout) as { publicKey: string };
  expect((await status(node)).node.publicKey).toBe(publicKey);
  // The device itself carries the new key (not only the agent's view).
  expect((await lab.exec(node, ['wg', 'show', 'weft0', 'public-key'])).stdout.trim()).toBe(publicKey);
  // The peer adopts the new key from the mesh and handshakes with it.
  await waitFor(`${peer} to adopt ${node}'s new key and handshake`, 30_000, async () => {
    const s = await status(peer);
    const p = s.peers.find((x) => x.name === node);
    return p && p.publicKey === publicKey && p.lastHandshake > 0 && s.now - p.lastHandshake < 20 ? true : undefined;
  }, 200);
  return publicKey;
}

describe.skipIf(skip)(`WireGuard key rotation under load${WHY}`, () => {
  it('established TCP connections between pods survive both nodes rotating their keys', async () => {
    const [p1, p2] = [pod(n1), pod(n2)];
    for (const n of [n1, n2]) oldKeys.push((await readFile(keyFile(n), 'utf8')).trim());
    await lab.spawnIn(p2.netns, lab.probeArgv('serve', String(ECHO_PORT)), 'echo');
    await lab.spawnIn(p2.netns, ['iperf3', '-s', '-1', '-p', String(IPERF_PORT)], 'iperf3-server');
    await waitFor('servers in the n2 pod', 15_000, async () => {
      const r = await lab.exec(p2.netns, ['ss', '-Hltn'], { check: false });
      return r.stdout.includes(`:${ECHO_PORT}`) && r.stdout.includes(`:${IPERF_PORT}`) ? true : undefined;
    }, 100);
    const before = { n1: (await status(n1)).node.publicKey, n2: (await status(n2)).node.publicKey };

    const stream = lab.exec(p1.netns, lab.probeArgv('stream', `${p2.ip}:${ECHO_PORT}`, '24'), { check: false, timeoutMs: 90_000 });
    const iperf = lab.exec(p1.netns, ['iperf3', '-c', p2.ip, '-p', String(IPERF_PORT), '-t', '24', '-i', '1', '-J', '-b', '200M'], { check: false, timeoutMs: 90_000 });
    await new Promise((r) => setTimeout(r, 4000));
    const k1 = await rotate(n1, n2);
    await new Promise((r) => setTimeout(r, 3000));
    const k2 = await rotate(n2, n1);
    expect(k1).not.toBe(before.n1);
    expect(k2).not.toBe(before.n2);

    const [s, ip] = await Promise.all([stream, iperf]);
    const out = JSON.parse(s.stdout.trim().split('\n').at(-1) || '{}') as { sent?: number; received?: number; error?: string; maxGapMs?: number };
    log(`stream: ${s.stdout.trim()}`);
    expect({ code: s.code, error: out.error }).toEqual({ code: 0, error: undefined });
    expect(out.sent).toBeGreaterThan(200);
    expect(out.received).toBe(out.sent);

    const j = JSON.parse(ip.stdout) as { error?: string; end?: { sum_received?: { bytes: number } }; intervals?: { sum: { bytes: number } }[] };
    expect({ code: ip.code, error: j.error }).toEqual({ code: 0, error: undefined });
    const intervals = j.intervals!.map((x) => x.sum.bytes);
    log(`iperf3 bytes per second: ${intervals.join(' ')}`);
    expect(intervals.length).toBeGreaterThanOrEqual(23);
    // The one connection still carries data at the end, after both rotations.
    expect(intervals.slice(-3).every((b) => b > 0)).toBe(true);
    expect(j.end!.sum_received!.bytes).toBeGreaterThan(0);

    // New keys are persisted 0600 and differ from the old ones.
    for (const [i, n] of [n1, n2].entries()) {
      const text = (await readFile(keyFile(n), 'utf8')).trim();
      expect(text).not.toBe(oldKeys[i]);
      expect((await stat(keyFile(n))).mode & 0o777).toBe(0o600);
    }
  }, 150_000);

  it('the rotation is in the audit trail, and no private key (old or new) is in any log', async () => {
    const events = execFileSync(NODE, [MAIN, 'audit', '--file', join(lab.handle(n1).logDir, 'agent.log'), '--event', 'key-rotated,peer-key-changed', '--json'], { encoding: 'utf8' })
      .trim().split('\n').map((l) => JSON.parse(l) as { event: string; trigger?: string; peer?: string });
    expect(events.some((e) => e.event === 'key-rotated' && e.trigger === 'api')).toBe(true);
    expect(events.some((e) => e.event === 'peer-key-changed' && e.peer === n2)).toBe(true);

    const secrets: string[] = [...oldKeys];
    for (const n of [n1, n2]) for (const f of ['wg.key', 'identity.key', 'mesh.key']) secrets.push((await readFile(join(lab.handle(n).stateDir, f), 'utf8')).trim());
    let logs = '';
    for (const d of [...[n1, n2].map((n) => lab.handle(n).logDir), lab.host.dir]) for (const f of await readdir(d)) if (f.endsWith('.log')) logs += await readFile(join(d, f), 'utf8');
    expect(logs.length).toBeGreaterThan(1000);
    for (const sec of secrets) {
      const raw = Buffer.from(sec, 'base64');
      for (const form of [sec, raw.toString('hex'), raw.toString('base64url'), sec.slice(0, 20)]) expect(logs.includes(form), `a secret appears in the logs (${form.slice(0, 4)}...)`).toBe(false);
    }
  });
});
