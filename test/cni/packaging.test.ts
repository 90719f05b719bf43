/**
 * The packaged plugin on a host without Node.js on PATH: build with deploy/build.ts into a temp
 * dir, install it in the documented layout (CNI bin dir with weft-cni + weft-runtime/{node,
 * weft-cni.mjs}), and run the launcher as a runtime would, with a PATH that holds no `node`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPlugin } from './run-plugin.ts';

const ROOT = resolve(import.meta.dirname, '../..');
let dir: string;
let out: string;
let cniBin: string;
let emptyPath: string;
let server: Server;
let sock: string;
const seen: { path: string; body: Record<string, unknown> }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wcni-pkg-'));
  out = join(dir, 'dist');
  execFileSync(process.execPath, [join(ROOT, 'deploy/build.ts'), '--outdir', out], { cwd: ROOT, stdio: 'pipe' });
  cniBin = join(dir, 'opt-cni-bin');
  await mkdir(join(cniBin, 'weft-runtime'), { recursive: true });
  await copyFile(join(out, 'weft-cni'), join(cniBin, 'weft-cni'));
  await chmod(join(cniBin, 'weft-cni'), 0o755);
  await copyFile(join(out, 'weft-cni.mjs'), join(cniBin, 'weft-runtime', 'weft-cni.mjs'));
  await copyFile(process.execPath, join(cniBin, 'weft-runtime', 'node'));
  await chmod(join(cniBin, 'weft-runtime', 'node'), 0o755);
  // This host has a node in /usr/bin and /bin, so the runtime's PATH here is an empty directory.
  emptyPath = join(dir, 'empty-bin');
  await mkdir(emptyPath);

  sock = join(dir, 'agent.sock');
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      seen.push({ path: req.url ?? '', body: body ? JSON.parse(body) : {} });
      const result = {
        cniVersion: '1.1.0',
        interfaces: [{ name: 'wvabc', mac: '02:00:00:00:00:01', mtu: 1420 }, { name: 'eth0', mac: '02:00:00:00:00:02', mtu: 1420, sandbox: '/var/run/netns/x' }],
        ips: [{ address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 1 }],
        routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1' }],
        dns: { nameservers: ['10.244.1.1'], search: ['ns.pod.weft.local', 'pod.weft.local'] },
      };
      const text = JSON.stringify(req.url === '/v1/cni/add' ? result : {});
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
}, 60_000);

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('bundled weft CLI (what the image runs)', () => {
  it('offers every command, not only the ones of a module that checks import.meta.main', () => {
    const help = execFileSync(process.execPath, [join(out, 'weft.mjs'), '--help'], { encoding: 'utf8' });
    for (const cmd of ['agent', 'status', 'verify', 'audit', 'rotate-key', 'mesh-key', 'lab', 'token', 'node', 'join', 'bench']) {
      expect(help, `weft --help lists ${cmd}`).toMatch(new RegExp(`^  ${cmd} `, 'm'));
    }
    const agentHelp = execFileSync(process.execPath, [join(out, 'weft.mjs'), 'agent', '--help'], { encoding: 'utf8' });
    expect(agentHelp).toContain('--mesh-key-file');
  });
});

describe('packaged weft-cni (no node on PATH)', () => {
  it('the test PATH really has no node', () => {
    const r = spawnSync('/bin/sh', ['-c', 'command -v node'], { env: { PATH: emptyPath } });
    expect(r.status).not.toBe(0);
  });

  it('VERSION', async () => {
    const r = await runPlugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.1.0"}', [join(cniBin, 'weft-cni')], emptyPath);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.json).toEqual({ cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  it('ADD against a stub agent socket, with the result converted to the config version', async () => {
    const conf = JSON.stringify({ cniVersion: '0.4.0', name: 'weft', type: 'weft-cni', socket: sock });
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'pkg1', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: cniBin, CNI_ARGS: 'K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web' };
    const r = await runPlugin(env, conf, [join(cniBin, 'weft-cni')], emptyPath);
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ cniVersion: '0.4.0', ips: [{ version: '4', address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 1 }] });
    expect(seen.at(-1)).toMatchObject({ path: '/v1/cni/add', body: { command: 'ADD', containerId: 'pkg1', ifname: 'eth0', netns: '/var/run/netns/x', args: { K8S_POD_NAME: 'web', K8S_POD_NAMESPACE: 'ns' } } });
  });

  it('a broken install gives a spec error, not a shell error', async () => {
    const broken = join(dir, 'broken');
    await mkdir(broken);
    await copyFile(join(cniBin, 'weft-cni'), join(broken, 'weft-cni'));
    await chmod(join(broken, 'weft-cni'), 0o755);
    const r = await runPlugin({ CNI_COMMAND: 'VERSION' }, '', [join(broken, 'weft-cni')], emptyPath);
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ code: 999, msg: 'weft-cni runtime missing' });
  });

  it('the bundle is self-contained (no imports outside node: builtins)', async () => {
    const text = await readFile(join(cniBin, 'weft-runtime', 'weft-cni.mjs'), 'utf8');
    const specifiers = [...text.matchAll(/(?:from|import)\s*["']([^"']+)["']/g)].map((m) => m[1]);
    expect(specifiers.length).toBeGreaterThan(0);
    for (const s of specifiers) expect(s).toMatch(/^node:/);
  });
});
