/**
 * End-to-end tests of issue 5 (pod-name DNS) in one lab (3 nodes x 2 pods, real agents, real CNI
 * plugin, wireguard-go), with `dig` (dnsutils) as the client:
 * 1. from a pod on node 1, using the resolver configuration its CNI result gives (nameserver = the
 *    node's gateway, search `<ns>.pod.weft.local pod.weft.local`), a pod on node 3 resolves by its
 *    full name and by its short name, its IP resolves back (PTR), and every node resolves by
 *    `<node>.node.weft.local`;
 * 2. a pod deleted through CNI DEL is NXDOMAIN (name and PTR) on every node's DNS within the mesh's
 *    dissemination time, while its neighbour still resolves;
 * 3. a killed node's (SIGKILL, namespaces gone) pod and node names are NXDOMAIN on the other nodes
 *    after the mesh's failure detection time.
 * The cases run in order and share the lab, because CI has 2 cores for everything.
 * Namespace prefix: wld + 3 random characters.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type LabPod } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import { labPrerequisites } from './prerequisites.ts';
import { LAN_TIMING, retransmitLimit, suspicionBounds } from '../../mesh/options.ts';

const ZONE = 'weft.local';
const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare', 'mount', 'wg', 'dig'], wireguard: true, prefix: 'wld' });

/** Slack on top of each mesh bound: one gossip/reconcile round on a loaded 2-core host (as e2e-mesh). */
const SLACK_MS = 3000;

let lab: Lab;
const log = (msg: string): void => {
  process.stderr.write(`[e2e-dns] ${msg}\n`);
};

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wld[a-z0-9]{3}$/);
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '10s' });
  await lab.up({ nodes: 3, podsPerNode: 2 });
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
}, 120_000);

/** One dig answer: status from the header, answer records as [name, type, data] without trailing dots. */
interface Dig {
  readonly status: string;
  readonly answers: ReadonlyArray<{ name: string; type: string; data: string }>;
  readonly raw: string;
}

function parseDig(out: string): Dig {
  // With +search dig prints one reply per name tried (+showsearch); the last one is the result.
  const replies = out.split(/(?=;; ->>HEADER<<-)/).filter((s) => s.includes('->>HEADER<<-'));
  const last = replies.at(-1) ?? '';
  const status = /status: ([A-Z]+)/.exec(last)?.[1] ?? 'NO_REPLY';
  const section = /;; ANSWER SECTION:\n([\s\S]*?)(?:\n\n|$)/.exec(last)?.[1] ?? '';
  const answers = section
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith(';'))
    .map((l) => {
      const [name = '', , , type = '', ...data] = l.trim().split(/\s+/);
      return { name: name.replace(/\.$/, ''), type, data: data.join(' ').replace(/\.$/, '') };
    });
  return { status, answers, raw: out };
}

const DIG_OPTS = ['+tries=1', '+time=2', '+noall', '+comments', '+answer'];

/** dig inside node `node`'s namespaces against that node's DNS (its gateway = mesh IP, port 53). */
async function digAt(node: string, ...args: string[]): Promise<Dig> {
  const r = await lab.exec(node, ['dig', `@${lab.node(node).meshIP}`, ...DIG_OPTS, ...args], { check: false, timeoutMs: 15_000 });
  return parseDig(r.stdout);
}

/**
 * dig inside pod `pod`'s network namespace with `resolvConf` as its /etc/resolv.conf (bind-mounted
 * in a private mount namespace that dies with the command, as a container runtime gives a pod its own).
 */
async function digInPod(pod: LabPod, resolvConf: string, ...args: string[]): Promise<Dig> {
  const script = 'mount --bind "$0" /etc/resolv.conf && exec dig "$@"';
  const r = await lab.exec(pod.netns, ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, resolvConf, ...DIG_OPTS, ...args], { check: false, timeoutMs: 15_000 });
  if (r.code !== 0 && !r.stdout.includes('->>HEADER<<-')) throw new Error(`dig in ${pod.netns} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return parseDig(r.stdout);
}

const fqdn = (p: LabPod): string => `${p.podName}.${p.podNamespace}.pod.${ZONE}`;
const reverse = (ip: string): string => `${ip.split('.').reverse().join('.')}.in-addr.arpa`;

function pod(name: string): LabPod {
  const p = lab.meta.pods.find((x) => x.netns === `${PREFIX}-${name}`);
  if (!p) throw new Error(`no pod ${name}`);
  return p;
}

/** What `node`'s DNS answers for `name` A, as `STATUS ip,ip` (`NOERROR 10.244.3.2` when it resolves). */
async function answerOf(node: string, name: string): Promise<string> {
  const d = await digAt(node, name, 'A');
  return `${d.status} ${d.answers.map((a) => `${a.type}=${a.data}`).join(',')}`.trim();
}

describe.skipIf(skip)(`e2e DNS: 3 nodes x 2 pods${WHY}`, () => {
  it("a pod on node 1, configured from its CNI result, resolves a pod on node 3 by full and short name, its PTR and the nodes' names", async () => {
    const client = pod('n1-p1');
    const target = pod('n3-p1');
    const n1 = lab.node(`${PREFIX}-n1`);

    // The resolver configuration the runtime gets: a repeated ADD (a runtime retry of the same
    // attachment) returns the pod's result again, dns section included, and keeps its address.
    const again = await lab.cni(client.node, 'ADD', client.netns, client.containerId);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    const result = JSON.parse(again.stdout) as { ips: Array<{ address: string }>; dns?: { nameservers?: string[]; search?: string[]; options?: string[] } };
    expect(result.ips[0]!.address.split('/')[0]).toBe(client.ip);
    expect(result.dns).toEqual({ nameservers: [n1.meshIP], search: [`default.pod.${ZONE}`, `pod.${ZONE}`] });
    const resolvConf = join(lab.host.dir, 'n1-p1.resolv.conf');
    await writeFile(resolvConf, [
      ...result.dns!.nameservers!.map((ns) => `nameserver ${ns}`),
      `search ${result.dns!.search!.join(' ')}`,
      ...(result.dns!.options?.length ? [`options ${result.dns!.options.join(' ')}`] : []),
      '',
    ].join('\n'));

    // Full name. The first query after the lab is up may still find the record on its way: poll
    // briefly (the lab waited for agents to be ready, not for every pod entry to arrive).
    const full = await waitFor(`${fqdn(target)} from ${client.netns}`, 10_000, async () => {
      const d = await digInPod(client, resolvConf, fqdn(target), 'A');
      return d.status === 'NOERROR' && d.answers.length > 0 ? d : undefined;
    }, 250);
    expect(full.answers).toEqual([{ name: fqdn(target), type: 'A', data: target.ip }]);

    // Short name, through the first search domain from the CNI result.
    const short = await digInPod(client, resolvConf, '+search', target.podName, 'A');
    expect(short.status, short.raw).toBe('NOERROR');
    expect(short.answers).toEqual([{ name: fqdn(target), type: 'A', data: target.ip }]);

    // `<pod>.<namespace>`, through the second search domain (dig's ndots raised so the search list
    // is tried before the name as absolute, as a kubelet-written resolv.conf does with ndots:5).
    const withNs = await digInPod(client, resolvConf, '+search', '+ndots=2', `${target.podName}.${target.podNamespace}`, 'A');
    expect(withNs.status, withNs.raw).toBe('NOERROR');
    expect(withNs.answers).toEqual([{ name: fqdn(target), type: 'A', data: target.ip }]);

    // PTR of the remote pod's address.
    const ptr = await digInPod(client, resolvConf, '-x', target.ip);
    expect(ptr.status, ptr.raw).toBe('NOERROR');
    expect(ptr.answers).toEqual([{ name: reverse(target.ip), type: 'PTR', data: fqdn(target) }]);

    // Every node by name, to its mesh IP (node 3 being the remote one under test).
    for (const n of lab.meta.nodes) {
      const d = await digInPod(client, resolvConf, `${n.name}.node.${ZONE}`, 'A');
      expect(d.status, d.raw).toBe('NOERROR');
      expect(d.answers).toEqual([{ name: `${n.name}.node.${ZONE}`, type: 'A', data: n.meshIP }]);
    }

    // A name that does not exist in the zone is NXDOMAIN, not forwarded or guessed.
    const unknown = await digInPod(client, resolvConf, `no-such-pod.default.pod.${ZONE}`, 'A');
    expect(unknown.status).toBe('NXDOMAIN');
    expect(unknown.answers).toEqual([]);

    // Every node's DNS answers every pod's name (the client's own included, after the repeated ADD).
    const matrix = await Promise.all(lab.meta.nodes.flatMap((n) => lab.meta.pods.map(async (p) => `${fqdn(p)} on ${n.name}: ${await answerOf(n.name, fqdn(p))}`)));
    expect(matrix).toEqual(lab.meta.nodes.flatMap((n) => lab.meta.pods.map((p) => `${fqdn(p)} on ${n.name}: NOERROR A=${p.ip}`)));
  });

  it("a deleted pod's name and PTR are NXDOMAIN on every node's DNS within the mesh's dissemination time", async () => {
    const gone = pod('n2-p2');
    const stays = pod('n2-p1');
    const nodes = lab.meta.nodes.map((n) => n.name);
    for (const n of nodes) {
      expect(await answerOf(n, fqdn(gone)), `${fqdn(gone)} on ${n} before the delete`).toBe(`NOERROR A=${gone.ip}`);
    }

    // A changed entry reaches every member within retransmitLimit gossip rounds (3 nodes: each
    // round reaches all peers); plus a reconcile round of slack. Push/pull (30 s) is not needed.
    const n = nodes.length;
    const boundMs = retransmitLimit(LAN_TIMING, n) * LAN_TIMING.gossipIntervalMs + SLACK_MS;
    const t0 = Date.now();
    await lab.removePod(gone.netns);
    await waitFor(`${fqdn(gone)} to be NXDOMAIN on ${nodes.join(', ')}`, boundMs, async () => {
      const still = await Promise.all(nodes.map(async (node) => {
        const [a, ptr] = await Promise.all([digAt(node, fqdn(gone), 'A'), digAt(node, '-x', gone.ip)]);
        const done = a.status === 'NXDOMAIN' && ptr.status === 'NXDOMAIN' && a.answers.length === 0 && ptr.answers.length === 0;
        return done ? [] : [`${node}: A ${a.status} ${JSON.stringify(a.answers)}, PTR ${ptr.status} ${JSON.stringify(ptr.answers)}`];
      }));
      // Thrown, so a timeout reports what was still answered where.
      if (still.flat().length > 0) throw new Error(`still answered: ${still.flat().join('; ')}`);
      return true;
    }, 200);
    log(`deleted pod's name gone everywhere after ${Date.now() - t0} ms (bound ${boundMs} ms)`);

    // Only that name went: its neighbour on the same node still resolves everywhere.
    for (const node of nodes) expect(await answerOf(node, fqdn(stays)), `${fqdn(stays)} on ${node}`).toBe(`NOERROR A=${stays.ip}`);
  });

  it("a killed node's pod and node names are NXDOMAIN on the other nodes after failure detection", async () => {
    const victim = `${PREFIX}-n3`;
    const victimPods = lab.meta.pods.filter((p) => p.node === victim);
    expect(victimPods).toHaveLength(2);
    const others = lab.meta.nodes.filter((x) => x.name !== victim).map((x) => x.name);
    const nodeName = `${victim}.node.${ZONE}`;
    for (const o of others) {
      for (const p of victimPods) expect(await answerOf(o, fqdn(p)), `${fqdn(p)} on ${o} before the kill`).toBe(`NOERROR A=${p.ip}`);
      expect(await answerOf(o, nodeName)).toBe(`NOERROR A=${lab.node(victim).meshIP}`);
    }

    // The machine disappears as in e2e-mesh: agent SIGKILLed (no graceful leave), namespaces deleted,
    // so the node is unreachable. Bound: the mesh's detection time (as e2e-mesh computes it) + slack.
    const n = lab.meta.nodes.length;
    const [, maxSuspicion] = suspicionBounds(LAN_TIMING, n);
    const detectionMs = n * LAN_TIMING.probeIntervalMs + LAN_TIMING.probeTimeoutMs + maxSuspicion;
    const boundMs = detectionMs + SLACK_MS;
    const t0 = Date.now();
    await lab.removeNode(victim);
    await waitFor(`${victim}'s names to be NXDOMAIN on ${others.join(', ')}`, boundMs, async () => {
      const still = await Promise.all(others.flatMap((o) => [nodeName, ...victimPods.map(fqdn)].map(async (name) => {
        const d = await digAt(o, name, 'A');
        return d.status === 'NXDOMAIN' && d.answers.length === 0 ? [] : [`${name} on ${o}: ${d.status} ${JSON.stringify(d.answers)}`];
      })));
      // Thrown, so a timeout reports what was still answered where.
      if (still.flat().length > 0) throw new Error(`still answered: ${still.flat().join('; ')}`);
      return true;
    }, 250);
    log(`killed node's names gone everywhere after ${Date.now() - t0} ms (bound ${boundMs} ms)`);

    // No node still answers a killed pod's address with its name. (The dead node's reverse zone is
    // no longer the agents' own, so these are forwarded upstream, which the lab cannot reach:
    // SERVFAIL, and the agent must survive that.)
    for (const o of others) {
      for (const p of victimPods) {
        const ptr = await digAt(o, '-x', p.ip);
        expect(ptr.answers.map((a) => a.data), `PTR ${p.ip} on ${o}`).not.toContain(fqdn(p));
      }
    }
    // The survivors' names still resolve on the survivors.
    for (const o of others) {
      for (const p of lab.meta.pods) expect(await answerOf(o, fqdn(p)), `${fqdn(p)} on ${o}`).toBe(`NOERROR A=${p.ip}`);
      expect(lab.agentPid(o), `the agent of ${o} is still running:\n${await lab.agentLogTail(o, 5)}`).toBeDefined();
    }
  });
});
