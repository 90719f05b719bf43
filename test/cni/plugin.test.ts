/**
 * The plugin as a process (stdin + CNI_* env, exactly as a runtime calls it) against the agent's
 * real API server and CNI handler on a temp unix socket, with the fake NetnsOps.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { ApiServer } from '../../src/api/server.ts';
import { createCniHandler } from '../../src/cni/handler.ts';
import { SUPPORTED_VERSIONS } from '../../src/cni/spec.ts';
import { PodIpam } from '../../src/ipam/pods.ts';
import { FakeNetns } from './fake-netns.ts';
import { runPlugin } from './run-plugin.ts';

const log = pino({ level: 'silent' });

let dir: string;
let sock: string;
let api: ApiServer;
let net: FakeNetns;
let ipam: PodIpam;

const conf = (version = '1.1.0', extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: version, name: 'weft', type: 'weft-cni', socket: sock, stateDir: dir, ...extra });
const env = (command: string, id = 'c1', extra: Record<string, string> = {}) => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: id,
  CNI_NETNS: `/var/run/netns/${id}`,
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-${id}`,
  ...extra,
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wcni-plugin-'));
  sock = join(dir, 'weft.sock');
  ipam = await PodIpam.open({ stateDir: dir, blocks: ['10.244.9.0/24'], logger: log });
  net = new FakeNetns();
  for (let i = 0; i < 20; i++) net.namespaces.add(`/var/run/netns/c${i}`);
  const handler = createCniHandler({ ipam, netns: net, logger: log, stateDir: dir });
  api = new ApiServer({ logger: log });
  for (const r of handler.routes()) api.route(r.method, r.path, r.handler);
  await api.listenUnix(sock);
});
afterAll(async () => {
  await api?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('weft-cni VERSION', () => {
  it('lists every supported version, whatever the input', async () => {
    for (const stdin of ['{"cniVersion":"1.1.0"}', '', 'garbage']) {
      const r = await runPlugin({ CNI_COMMAND: 'VERSION' }, stdin);
      expect(r.code).toBe(0);
      expect(r.json).toEqual({ cniVersion: '1.1.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    }
  });
});

describe('weft-cni ADD/CHECK/DEL for every version', () => {
  it.each(SUPPORTED_VERSIONS.map((v, i) => [v, i] as const))('cniVersion %s', async (v, i) => {
    const id = `c${i}`;
    const add = await runPlugin(env('ADD', id), conf(v));
    expect(add.stderr).not.toMatch(/\n\s+at /); // never a stack trace
    expect(add.code).toBe(0);
    const result = add.json!;
    expect(result.cniVersion).toBe(v);
    const ip = (result.ips as Record<string, unknown>[])[0]!;
    expect(ip).toMatchObject({ address: expect.stringMatching(/^10\.244\.9\.\d+\/32$/), gateway: '10.244.9.1', interface: 1 });
    if (v.startsWith('0.')) expect(ip.version).toBe('4');
    else expect(ip).not.toHaveProperty('version');
    expect((result.interfaces as Record<string, unknown>[])[1]).toMatchObject({ name: 'eth0', sandbox: `/var/run/netns/${id}` });
    expect(result.dns).toEqual({ nameservers: ['10.244.9.1'], search: ['prod.pod.weft.local', 'pod.weft.local'] });
    expect(ipam.pods()).toContainEqual({ name: `web-${id}`, namespace: 'prod', ips: [ip.address!.toString().split('/')[0]] });

    const check = await runPlugin(env('CHECK', id), conf(v, { prevResult: result }));
    if (v.startsWith('0.3')) {
      expect(check.code).toBe(1);
      expect(check.json).toMatchObject({ cniVersion: v, code: 1, msg: expect.stringMatching(/CHECK is not defined/) });
    } else {
      expect(check.code).toBe(0);
      expect(check.stdout).toBe('');
    }
    const del = await runPlugin(env('DEL', id), conf(v));
    expect(del.code).toBe(0);
    expect(del.stdout).toBe('');
    expect(ipam.get({ containerId: id, ifname: 'eth0' })).toEqual([]);
    expect((await runPlugin(env('DEL', id), conf(v))).code).toBe(0); // idempotent
  });
});

describe('weft-cni STATUS and GC', () => {
  it('STATUS succeeds when the agent has a block; GC releases stale attachments', async () => {
    expect((await runPlugin({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, conf())).code).toBe(0);
    expect((await runPlugin(env('ADD', 'c10'), conf())).code).toBe(0);
    expect((await runPlugin(env('ADD', 'c11'), conf())).code).toBe(0);
    const gc = await runPlugin({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0', { 'cni.dev/valid-attachments': [{ containerID: 'c11', ifname: 'eth0' }] }));
    expect(gc.code).toBe(0);
    expect(ipam.list().map((a) => a.containerId)).toEqual(['c11']);
    await runPlugin(env('DEL', 'c11'), conf());
  });
  it('STATUS and GC need cniVersion 1.1.0', async () => {
    const r = await runPlugin({ CNI_COMMAND: 'STATUS' }, conf('1.0.0'));
    expect(r.json).toMatchObject({ cniVersion: '1.0.0', code: 1 });
  });
});

describe('weft-cni errors', () => {
  it.each([
    ['missing CNI_COMMAND', {}, conf(), 4, /CNI_COMMAND is required/],
    ['unknown command', { CNI_COMMAND: 'FROB' }, conf(), 4, /unknown CNI_COMMAND/],
    ['missing CNI_CONTAINERID', { ...env('ADD'), CNI_CONTAINERID: '' }, conf(), 4, /CNI_CONTAINERID is required/],
    ['missing CNI_NETNS on ADD', { ...env('ADD'), CNI_NETNS: '' }, conf(), 4, /CNI_NETNS is required/],
    ['missing CNI_IFNAME', { ...env('ADD'), CNI_IFNAME: '' }, conf(), 4, /CNI_IFNAME is required/],
    ['bad CNI_IFNAME', { ...env('ADD'), CNI_IFNAME: 'eth 0' }, conf(), 4, /CNI_IFNAME must be/],
    ['too long CNI_CONTAINERID', { ...env('ADD'), CNI_CONTAINERID: 'x'.repeat(300) }, conf(), 4, /CNI_CONTAINERID is invalid/],
    ['malformed CNI_ARGS', { ...env('ADD'), CNI_ARGS: 'K8S_POD_NAME' }, conf(), 4, /CNI_ARGS: malformed pair/],
    ['bad JSON', env('ADD'), '{"cniVersion":', 6, /not valid JSON/],
    ['empty stdin', env('ADD'), '', 6, /no network configuration/],
    ['JSON array', env('ADD'), '[1]', 6, /must be a JSON object/],
    ['unsupported version', env('ADD'), conf('0.2.0'), 1, /incompatible CNI version "0.2.0"/],
    ['no cniVersion', env('ADD'), JSON.stringify({ name: 'weft', type: 'weft-cni' }), 7, /no cniVersion/],
    ['no name', env('ADD'), JSON.stringify({ cniVersion: '1.1.0', type: 'weft-cni' }), 7, /no name/],
    ['relative socket', env('ADD'), conf('1.1.0', { socket: 'weft.sock' }), 7, /socket must be an absolute path/],
  ])('%s', async (_name, e, stdin, code, re) => {
    const r = await runPlugin(e as Record<string, string>, stdin);
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ code, msg: expect.stringMatching(re) });
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('oversized stdin is rejected with code 6', async () => {
    const r = await runPlugin(env('ADD'), conf('1.1.0', { pad: 'x'.repeat(1 << 20) }));
    expect(r.json).toMatchObject({ code: 6, msg: expect.stringMatching(/larger than/) });
  });

  it('an agent-side error keeps its code and details (unknown container on CHECK -> 3)', async () => {
    const r = await runPlugin(env('CHECK', 'c19'), conf());
    expect(r.json).toMatchObject({ cniVersion: '1.1.0', code: 3, msg: expect.stringMatching(/no attachment eth0/) });
  });
});

describe('weft-cni with the agent down', () => {
  let down: string;
  beforeAll(async () => {
    down = await mkdtemp(join(tmpdir(), 'wcni-down-'));
  });
  afterAll(async () => {
    await rm(down, { recursive: true, force: true });
  });
  const downConf = (extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.1.0', name: 'weft', type: 'weft-cni', socket: join(down, 'none.sock'), stateDir: down, ...extra });

  it('ADD and CHECK fail with 11, STATUS with 50, DEL succeeds and queues the release', async () => {
    expect((await runPlugin(env('ADD', 'q1'), downConf())).json).toMatchObject({ code: 11, msg: expect.stringMatching(/not reachable/) });
    expect((await runPlugin(env('CHECK', 'q1'), downConf())).json).toMatchObject({ code: 11 });
    expect((await runPlugin({ CNI_COMMAND: 'STATUS' }, downConf())).json).toMatchObject({ code: 50 });
    const del = await runPlugin(env('DEL', 'q1'), downConf());
    expect(del.code).toBe(0);
    expect(del.stdout).toBe('');
    expect(await readdir(join(down, 'cni-del-queue'))).toHaveLength(1);
    expect((await runPlugin(env('DEL', 'q1'), downConf())).code).toBe(0);
    expect(await readdir(join(down, 'cni-del-queue'))).toHaveLength(1); // one entry per attachment
  });

  it('DEL still succeeds when the queue cannot be written', async () => {
    const r = await runPlugin(env('DEL', 'q2'), downConf({ stateDir: '/proc/wcni-not-writable' }));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/GC will reclaim/);
  });

  it('an agent that accepts but never answers gives 11 after the timeout, not a hang', async () => {
    const silent: Server = createServer(() => {});
    const s = join(down, 'silent.sock');
    await new Promise<void>((r) => silent.listen(s, r));
    try {
      // The plugin's ADD timeout is 20 s; STATUS uses 5 s, which keeps this test short.
      const r = await runPlugin({ CNI_COMMAND: 'STATUS' }, downConf({ socket: s }));
      expect(r.json).toMatchObject({ code: 50, details: expect.stringMatching(/no answer within/) });
    } finally {
      silent.closeAllConnections();
      await new Promise((r) => silent.close(r));
    }
  }, 20_000);
});
