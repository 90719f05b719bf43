/**
 * The source side of "agents get their subnets and seeds from the fake API server": the fake API
 * server listens on the host end of a veth (198.18.0.1), and the agent's Kubernetes source runs,
 * exactly as the agent starts it (startKubeSource with a --kubeconfig file), in a process inside a
 * lab network namespace (198.18.0.2) that reaches the server only through that link. It gets its
 * podCIDR, its endpoints and its seeds, annotates its Node, and survives a silent partition (the
 * link going down and up), picking up a node added meanwhile. Needs root and ip. Namespace prefix: wk8s-.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { FakeApiServer, type KubeObject } from '../k8s/fake-apiserver.ts';
import { labPrerequisites } from './prerequisites.ts';

const { skip, why } = labPrerequisites({ tools: ['ip'] });

const tag = process.pid % 100000;
const ns = `wk8s-${tag}-n1`;
const vethHost = `wk8s${tag}h`;
const vethNs = `wk8s${tag}n`;
const sh = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const quiet = (...argv: string[]) => {
  try {
    sh(...argv);
  } catch {
    /* already gone */
  }
};

const node = (name: string, ip: string, podCIDRs: string[]): KubeObject => ({
  metadata: { name },
  spec: { podCIDR: podCIDRs[0], podCIDRs },
  status: { addresses: [{ type: 'InternalIP', address: ip }] },
});

describe.skipIf(skip)(`Kubernetes source inside a lab network namespace${why}`, () => {
  let server: FakeApiServer | undefined;
  let child: ChildProcess | undefined;
  let tmp = '';
  const lines: any[] = [];

  beforeAll(async () => {
    sh('ip', 'netns', 'add', ns);
    sh('ip', 'link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs);
    sh('ip', 'link', 'set', vethNs, 'netns', ns);
    sh('ip', 'addr', 'add', '198.18.0.1/30', 'dev', vethHost);
    sh('ip', 'link', 'set', vethHost, 'up');
    sh('ip', '-n', ns, 'addr', 'add', '198.18.0.2/30', 'dev', vethNs);
    sh('ip', '-n', ns, 'link', 'set', vethNs, 'up');
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    server = await FakeApiServer.start({ host: '198.18.0.1', token: 'lab-token' });
    server.upsertNode(node('lab-1', '198.18.0.2', ['10.244.1.0/24']));
    server.upsertNode(node('lab-2', '192.0.2.12', ['10.244.2.0/24']));
    tmp = mkdtempSync(join(tmpdir(), 'wk8s-'));
    writeFileSync(join(tmp, 'kubeconfig'), server.kubeconfigText(), { mode: 0o600 });
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, join(import.meta.dirname, '..', 'k8s', 'netns-probe.ts'), join(tmp, 'kubeconfig'), 'lab-1'], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, WEFT_TEST_WATCH_INACTIVITY_MS: '3000' },
    });
    createInterface(child.stdout!).on('line', (l) => {
      try {
        lines.push(JSON.parse(l));
      } catch {
        lines.push({ raw: l });
      }
    });
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.stdin?.end();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          child?.kill('SIGKILL');
          resolve();
        }, 5000);
        child!.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await server?.close();
    quiet('ip', 'link', 'del', vethHost);
    quiet('ip', 'netns', 'del', ns);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('gets its podCIDR, endpoints and seeds from the API server across the namespace boundary', async () => {
    await vi.waitFor(() => expect(lines.find((l) => l.phase === 'synced')).toBeDefined(), { timeout: 30_000 });
    expect(lines.find((l) => l.phase === 'synced')).toEqual({
      phase: 'synced',
      synced: true,
      podCIDRs: ['10.244.1.0/24'],
      seeds: ['192.0.2.12:7946'],
      endpointIPs: ['198.18.0.2'],
    });
  });

  it('annotates its Node through the link', async () => {
    await vi.waitFor(() => expect(server!.getNode('lab-1')?.metadata.annotations).toMatchObject({ 'weft.dev/mesh-ip': '10.244.1.1' }), { timeout: 30_000 });
    expect(server!.requests.some((r) => r.method === 'PATCH' && r.path === '/api/v1/nodes/lab-1')).toBe(true);
  });

  it('notices a silent partition, keeps its state meanwhile, then follows a node added during it', async () => {
    // Link down: no FIN or RST reaches the agent; only the watch inactivity timeout (3 s here,
    // bookmarks keep a healthy watch alive) can tell.
    sh('ip', 'link', 'set', vethHost, 'down');
    await vi.waitFor(() => expect(lines.at(-1)).toMatchObject({ phase: 'update', connected: false }), { timeout: 30_000 });
    expect(lines.at(-1).seeds).toEqual(['192.0.2.12:7946']);
    server!.upsertNode(node('lab-3', '192.0.2.13', ['10.244.3.0/24']));
    sh('ip', 'link', 'set', vethHost, 'up');
    // Reconnect backoff is up to 30 s on the real clock.
    await vi.waitFor(() => expect(lines.at(-1)).toMatchObject({ phase: 'update', connected: true, seeds: ['192.0.2.12:7946', '192.0.2.13:7946'] }), {
      timeout: 90_000,
      interval: 100,
    });
  });
});
