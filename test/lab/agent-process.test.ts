/**
 * Real `weft agent` processes in lab nodes (network namespace + private mount namespace, built with
 * src/lab/host.ts), userspace WireGuard: they join, build the datapath, answer status/health/metrics,
 * keep no secret in their logs, survive SIGKILL + restart without rewriting the datapath, leave on
 * SIGTERM with the datapath in place, and `--uninstall` removes what weft created.
 */
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabHost, type NodeHandle } from '../../src/lab/host.ts';
import { hostVethName } from '../../src/cni/spec.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';
import { labPrerequisites } from './prerequisites.ts';

const REPO = resolve(import.meta.dirname, '..', '..');
const MAIN = join(REPO, 'src', 'main.ts');
const NODE = process.execPath;
const { skip } = labPrerequisites({ tools: ['wireguard-go'] });
const PREFIX = 'wag1';
const SUBNET = '198.19.77';

const host = new LabHost({ prefix: PREFIX, termGraceMs: 2000 });
const nodes: NodeHandle[] = [];
const ips = ['', `${SUBNET}.1`, `${SUBNET}.2`];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function agentArgv(i: number): string[] {
  return [
    // n2 asks for auto: without the kernel module here it must fall back to wireguard-go.
    NODE, MAIN, 'agent', '--name', `${PREFIX}-n${i}`, '--listen-addr', ips[i]!, '--backend', i === 1 ? 'userspace' : 'auto',
    '--mesh-key-file', '/var/lib/weft/mesh.key', '--resync', '5s', '--log-level', 'debug',
    '--metrics-addr', `${ips[i]}:9465`, '--dns-listen', `${ips[i]}:5353`,
    // Every node names the others as seeds, as a DaemonSet does: a restarted node re-joins at once.
    '--seeds', [1, 2].filter((j) => j !== i).map((j) => `${ips[j]}:7946`).join(','),
  ];
}

async function startAgent(i: number, extra: string[] = []): Promise<number> {
  const n = nodes[i - 1]!;
  return host.spawn(n, [...agentArgv(i), ...extra], { label: `agent-n${i}`, logFile: join(n.logDir, 'agent.log') });
}

async function status(i: number): Promise<AgentStatus | undefined> {
  const r = await host.exec(nodes[i - 1]!, [NODE, MAIN, 'status', '--json', '--socket', '/run/weft/weft.sock'], { check: false, timeoutMs: 10_000 });
  try {
    return JSON.parse(r.stdout) as AgentStatus;
  } catch {
    return undefined;
  }
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

async function sh(i: number, cmd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return host.exec(nodes[i - 1]!, ['sh', '-c', cmd], { check: false, timeoutMs: 20_000 });
}

/** weft's unicast routes (protocol 147) as "dst dev"; blackhole fallbacks, if any, are left out. */
async function weftRoutes(i: number): Promise<string[]> {
  const r = await sh(i, 'ip -j route show proto 147');
  return (JSON.parse(r.stdout || '[]') as { dst: string; dev?: string; type?: string }[]).filter((x) => x.type !== 'blackhole').map((x) => `${x.dst} ${x.dev}`);
}

async function pidAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(skip)('weft agent processes in lab nodes (root, wireguard-go)', () => {
  beforeAll(async () => {
    if (host.exists()) {
      await host.load();
      await host.down();
    }
    await host.init();
    const ul = `${PREFIX}-ul`;
    await host.addNetns(ul);
    await host.addBridge('br0', ul);
    const meshKey = `${randomBytes(32).toString('base64')}\n`;
    for (const i of [1, 2]) {
      const n = await host.addNode(`${PREFIX}-n${i}`);
      nodes.push(n);
      await host.addVeth({ name: `n${i}`, netns: ul }, { name: 'eth0', netns: n.netns });
      await host.runner.run(['ip', '-n', ul, 'link', 'set', `n${i}`, 'master', 'br0']);
      await host.addAddress(n.netns, 'eth0', `${ips[i]}/24`);
      await writeFile(join(n.stateDir, 'mesh.key'), meshKey, { mode: 0o600 });
    }
    await startAgent(1);
    await waitFor('agent n1 API', async () => (await status(1)) !== undefined);
    await startAgent(2);
  });

  afterAll(async () => {
    await host.down();
  });

  it('both agents join, plan each other as peers and carry traffic over WireGuard', async () => {
    const s1 = await waitFor('n1 ready with a peer', async () => {
      const s = await status(1);
      return s?.ready && s.peers.length === 1 ? s : undefined;
    });
    const s2 = await waitFor('n2 ready with a peer', async () => {
      const s = await status(2);
      return s?.ready && s.peers.length === 1 ? s : undefined;
    });
    expect(s1.node.backend).toBe('userspace');
    expect(s2.node.backend).toBe('userspace');
    expect(s1.peers[0]).toMatchObject({ name: `${PREFIX}-n2`, endpoint: `${ips[2]}:51820`, state: 'alive' });
    expect(s1.peers[0]!.allowedIPs).toEqual([...s2.node.podCIDRs, `${s2.node.meshIP}/32`].sort());
    expect(s1.node.podCIDRs[0]).not.toBe(s2.node.podCIDRs[0]);

    const ping = await sh(1, `ping -c 3 -i 0.2 -W 2 ${s2.node.meshIP}`);
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    expect(await weftRoutes(1)).toEqual(['10.244.0.0/16 weft0']);

    const ipam = await host.exec(nodes[0]!, [NODE, MAIN, 'status', 'ipam', '--json'], { check: false });
    expect(JSON.parse(ipam.stdout)).toMatchObject({ podCIDRs: s1.node.podCIDRs, gateway: s1.node.meshIP, allocations: [] });
    const dns = await host.exec(nodes[0]!, [NODE, MAIN, 'status', 'dns'], { check: false });
    expect(dns.stdout).toContain(`listen: ${s1.node.meshIP}:53, ${ips[1]}:5353`);
    // After the ping, a handshake exists, so `weft status` (human) exits 0.
    const human = await host.exec(nodes[0]!, [NODE, MAIN, 'status'], { check: false });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(`${PREFIX}-n2`);
  });

  it('serves health, readiness, metrics and DNS on the node addresses', async () => {
    const probe = (path: string) =>
      sh(1, `${NODE} -e "fetch('http://${ips[1]}:9465${path}').then(async r => { console.log(r.status); console.log(await r.text()) })"`);
    const h = await probe('/healthz');
    expect(h.stdout.split('\n')[0]).toBe('200');
    const r = await probe('/readyz');
    expect(r.stdout.split('\n')[0]).toBe('200');
    const m = await probe('/metrics');
    expect(m.stdout).toContain('weft_mesh_members{state="alive"} 2');
    expect(m.stdout).toContain('weft_reconciles_total');
    expect(m.stdout).toContain('weft_dns_responses_total');
    const cni = await probe('/v1/cni/status');
    expect(cni.stdout.split('\n')[0]).toBe('404');
    const dig = await sh(1, `dig +short +time=2 +tries=1 @${ips[2]} -p 5353 ${PREFIX}-n1.node.weft.local`);
    const s1 = (await status(1))!;
    expect(dig.stdout.trim()).toBe(s1.node.meshIP);
  });

  it('keeps every key out of the logs', async () => {
    const secrets: string[] = [];
    for (const n of nodes) {
      for (const f of ['wg.key', 'identity.key', 'mesh.key']) {
        const b64 = (await readFile(join(n.stateDir, f), 'utf8')).trim();
        const raw = Buffer.from(b64, 'base64');
        secrets.push(b64, raw.toString('hex'), raw.toString('base64url'), b64.slice(0, 20));
      }
    }
    let logs = '';
    for (const n of nodes) for (const f of await readdir(n.logDir)) logs += await readFile(join(n.logDir, f), 'utf8');
    expect(logs.length).toBeGreaterThan(1000);
    for (const s of secrets) expect(logs.includes(s), `a secret appears in the logs (${s.slice(0, 4)}...)`).toBe(false);
  });

  it('SIGKILL leaves the datapath; the restarted agent adopts it with zero writes', async () => {
    const before = (await status(2))!;
    const [agent] = host.processes('agent-n1');
    process.kill(agent!.pid, 'SIGKILL');
    await waitFor('agent n1 to die', async () => !(await pidAlive(agent!.pid)));
    const ping = await sh(1, `ping -c 2 -i 0.2 -W 2 ${before.node.meshIP}`);
    expect(ping.code, 'traffic flows while the agent is down').toBe(0);

    await startAgent(1);
    const s = await waitFor('restarted n1 ready', async () => {
      const st = await status(1);
      return st?.ready && st.datapath.reconciles >= 2 && st.peers.length === 1 ? st : undefined;
    });
    const log = await readFile(join(nodes[0]!.logDir, 'agent.log'), 'utf8');
    const restartLog = log.slice(log.lastIndexOf('"created a new') === -1 ? log.lastIndexOf('"underlay"') : log.lastIndexOf('"underlay"'));
    expect(s.datapath.writes, restartLog.split('\n').filter((l) => /patched|reconciled|route|address/.test(l)).join('\n')).toBe(0);
    expect(s.datapath.errors).toBe(0);
    // If SWIM declared n1 dead while it was down, n2 dropped and re-added its peer without a
    // session; n2's link prober (src/relay/prober.ts, every 10 s) probes a peer without a handshake,
    // which starts one, so traffic from n1 (whose WireGuard still holds the old session) recovers
    // at n2's next probe tick. Two public nodes need no persistent keepalive (issue 7).
    await waitFor('traffic after the restart', async () => (await sh(1, `ping -c 1 -W 1 ${before.node.meshIP}`)).code === 0, 20_000);
    const ka = await sh(2, 'wg show weft0 persistent-keepalive');
    expect(ka.stdout.trim().split('\t')[1]).toBe('off');
  });

  it('SIGTERM exits cleanly and keeps the datapath; with --leave-on-exit the peers drop it at once', async () => {
    // Default: no leave (a restart must not make every peer drop the node).
    const [first] = host.processes('agent-n2');
    process.kill(first!.pid, 'SIGTERM');
    await waitFor('agent n2 to exit', async () => !(await pidAlive(first!.pid)), 15_000);
    expect((await sh(2, 'ip -j link show weft0')).code).toBe(0);
    expect(await weftRoutes(2)).toEqual(['10.244.0.0/16 weft0']);
    // n1 keeps the peer (alive or, a moment later, suspect) until failure detection would drop it.
    expect((await status(1))?.peers).toHaveLength(1);

    await startAgent(2, ['--leave-on-exit', 'true']);
    await waitFor('n2 ready again', async () => (await status(2))?.ready === true);
    const [second] = host.processes('agent-n2');
    process.kill(second!.pid, 'SIGTERM');
    await waitFor('agent n2 to exit', async () => !(await pidAlive(second!.pid)), 15_000);
    await waitFor('n1 to drop its peer', async () => (await status(1))?.peers.length === 0, 5_000);
    expect((await sh(2, 'ip -j link show weft0')).code).toBe(0);
    expect(await weftRoutes(2)).toEqual(['10.244.0.0/16 weft0']);
  });

  it('--uninstall refuses while an agent runs on the node', async () => {
    const r = await host.exec(nodes[0]!, [NODE, MAIN, 'agent', '--uninstall', '--name', `${PREFIX}-n1`], { check: false, timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/an agent is running on \/run\/weft\/weft\.sock; stop it before --uninstall/);
    expect((await sh(1, 'ip link show weft0')).code).toBe(0);
  });

  it('--uninstall removes the interface, routes, pod veths, gateway device (and a legacy bridge), block and addresses, and keeps the keys', async () => {
    expect((await sh(2, 'ip link show weftgw0')).code).toBe(0);
    // A pod veth the store lists (with its host route), and the pod bridge of an earlier weft
    // version with a port still on it (a node upgraded in place).
    const veth = hostVethName('wrt-uninstall', 'eth0');
    await writeFile(join(nodes[1]!.stateDir, 'ipam', 'pods.json'), JSON.stringify({ version: 1, cursors: {}, allocations: [{ containerId: 'wrt-uninstall', ifname: 'eth0', ip: '10.244.2.9', block: '10.244.2.0/24', allocatedAt: 1 }] }));
    for (const cmd of [`ip link add ${veth} type veth peer name wrtpeer0`, `ip link set ${veth} up`, `ip route add 10.244.2.9/32 dev ${veth}`,
      'ip link add weftbr0 type bridge', 'ip link add wrtold0 master weftbr0 type veth peer name wrtold1']) {
      expect((await sh(2, cmd)).code, cmd).toBe(0);
    }
    const r = await host.exec(nodes[1]!, [NODE, MAIN, 'agent', '--uninstall', '--name', `${PREFIX}-n2`, '--backend', 'userspace'], { check: false, timeoutMs: 30_000 });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await sh(2, 'ip link show weft0')).code).not.toBe(0);
    expect((await sh(2, 'ip link show weftgw0')).code).not.toBe(0);
    expect((await sh(2, 'ip link show weftbr0')).code).not.toBe(0);
    expect((await sh(2, `ip link show ${veth}`)).code).not.toBe(0);
    expect((await sh(2, 'ip -o route show 10.244.2.9/32')).stdout).toBe('');
    await sh(2, 'ip link del wrtold0');
    expect(JSON.parse((await sh(2, 'ip -j route show proto 147')).stdout || '[]')).toEqual([]);
    const state = await readdir(nodes[1]!.stateDir);
    expect(state).toContain('wg.key');
    expect(state).toContain('identity.key');
    expect(state).not.toContain('block.json');
    expect(state).not.toContain('ipam');
    expect(state).not.toContain('cni-del-queue');
    expect(await readdir(nodes[1]!.runDir)).toEqual([]);
  });
});
