import { mkdtemp, rm, stat, writeFile, chmod, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MemberView, MeshSnapshot } from '../../mesh/api.ts';
import { FileBlockStore, BlockStoreError } from '../../src/agent/block-store.ts';
import { blockLost, buildNodeInfo, diffPodEntries, ownPodEntries, podKey, takenBlocks } from '../../src/agent/records.ts';
import { loadOrCreateSecretFile, readSecretFile, requireSecretFile, SecretFileError } from '../../src/agent/secrets.ts';
import { detectUnderlay, endpointOf, pickUnderlay, resolveSeeds, UnderlayError } from '../../src/agent/underlay.ts';
import { networkInterfaces } from 'node:os';
import type { NodeInfo, RemoteNode } from '../../src/model.ts';

const enc = new TextEncoder();
const key = 'A'.repeat(43) + '=';

function member(name: string, entries: Record<string, unknown>, state: MemberView['state'] = 'alive'): MemberView {
  return {
    name, identityKey: key, addr: '192.0.2.1', port: 7946, state, incarnation: 1,
    entries: new Map(Object.entries(entries).map(([k, v]) => [k, { key: k, version: 1, payload: enc.encode(typeof v === 'string' ? v : JSON.stringify(v)), expiresAt: 0, deleted: false }])),
  };
}

function remote(name: string, podCIDRs: string[], claimedAt: number, state: RemoteNode['state'] = 'alive'): RemoteNode {
  const info: NodeInfo = { format: 1, name, wgPublicKey: key, listenPort: 51820, endpoints: [], meshIP: '10.244.0.1', podCIDRs, claimedAt, keepalive: 0 };
  return { info, pods: [], state };
}

describe('buildNodeInfo', () => {
  it('uses the IPv4 block gateway as the mesh IP', () => {
    const n = buildNodeInfo({ name: 'a', wgPublicKey: key, listenPort: 51820, endpoints: ['192.0.2.1:51820'], claim: { podCIDRs: ['fd00::/64', '10.244.3.0/24'], claimedAt: 5 } });
    expect(n).toEqual({ format: 1, name: 'a', wgPublicKey: key, listenPort: 51820, endpoints: ['192.0.2.1:51820'], meshIP: '10.244.3.1', podCIDRs: ['fd00::/64', '10.244.3.0/24'], claimedAt: 5, keepalive: 0 });
    expect(buildNodeInfo({ name: 'a', wgPublicKey: key, listenPort: 1, endpoints: [], claim: { podCIDRs: ['fd00:1::/64'], claimedAt: 0 } }).meshIP).toBe('fd00:1::1');
    expect(() => buildNodeInfo({ name: 'a', wgPublicKey: key, listenPort: 1, endpoints: [], claim: { podCIDRs: [], claimedAt: 0 } })).toThrow(/without a pod block/);
  });
});

describe('diffPodEntries', () => {
  const web = { name: 'web', namespace: 'default', ips: ['10.244.0.2'] };
  it('writes only what changed', () => {
    const first = diffPodEntries(new Map(), [web]);
    expect(first.set).toEqual([{ key: 'pod/default/web', payload: JSON.stringify(web) }]);
    const published = new Map(first.set.map((s) => [s.key, s.payload]));
    expect(diffPodEntries(published, [web])).toEqual({ set: [], del: [], dropped: [] });
    expect(diffPodEntries(published, [{ ...web, ips: ['10.244.0.9'] }]).set).toHaveLength(1);
    expect(diffPodEntries(published, [])).toEqual({ set: [], del: ['pod/default/web'], dropped: [] });
  });
  it('drops pods whose entries would be malformed or too large', () => {
    const r = diffPodEntries(new Map(), [{ name: 'a/b', namespace: 'x', ips: [] }, { name: 'x'.repeat(2000), namespace: 'y', ips: [] }, { name: '', namespace: 'z', ips: [] }]);
    expect(r.set).toEqual([]);
    expect(r.dropped).toHaveLength(3);
  });
  it('applying the diff yields exactly the wanted set (property)', () => {
    const pod = fc.record({ name: fc.constantFrom('a', 'b', 'c', 'd'), namespace: fc.constantFrom('n1', 'n2'), ips: fc.array(fc.constantFrom('10.244.0.2', '10.244.0.3'), { maxLength: 2 }) });
    fc.assert(
      fc.property(fc.array(pod, { maxLength: 6 }), fc.array(pod, { maxLength: 6 }), (before, after) => {
        const dedupe = (ps: typeof before) => [...new Map(ps.map((p) => [podKey(p), p])).values()];
        const published = new Map(diffPodEntries(new Map(), dedupe(before)).set.map((s) => [s.key, s.payload]));
        const ops = diffPodEntries(published, dedupe(after));
        for (const s of ops.set) published.set(s.key, s.payload);
        for (const d of ops.del) published.delete(d);
        expect([...published.keys()].sort()).toEqual(dedupe(after).map(podKey).sort());
      }),
    );
  });
});

describe('snapshot readers', () => {
  const snap: MeshSnapshot = {
    self: 'a',
    members: [
      member('a', { node: { podCIDRs: ['10.244.1.0/24'] }, 'pod/default/web': { name: 'web' } }),
      member('b', { node: { podCIDRs: ['10.244.2.0/24', 'garbage', 7] } }),
      member('c', { node: '{not json' }),
      member('d', { node: { podCIDRs: ['10.244.4.0/24'] } }, 'dead'),
    ],
  };
  it('takenBlocks reads other members leniently, dead ones included', () => {
    expect(takenBlocks(snap)).toEqual(['10.244.2.0/24', '10.244.4.0/24']);
  });
  it('ownPodEntries returns this member pod entries', () => {
    expect([...ownPodEntries(snap).keys()]).toEqual(['pod/default/web']);
  });
});

describe('blockLost', () => {
  it('older claim wins; ties go to the lower name; liveness does not matter', () => {
    const claim = { podCIDRs: ['10.244.1.0/24'], claimedAt: 100 };
    expect(blockLost('m', claim, [remote('z', ['10.244.1.0/24'], 50)])).toBe('z');
    expect(blockLost('m', claim, [remote('z', ['10.244.1.0/24'], 150)])).toBeUndefined();
    expect(blockLost('m', claim, [remote('a', ['10.244.1.0/24'], 100)])).toBe('a');
    expect(blockLost('m', claim, [remote('z', ['10.244.1.0/24'], 100)])).toBeUndefined();
    expect(blockLost('m', claim, [remote('z', ['10.244.0.0/23'], 10, 'dead')])).toBe('z');
    expect(blockLost('m', claim, [remote('z', ['10.244.2.0/24'], 10)])).toBeUndefined();
  });
});

describe('underlay', () => {
  const ifaces = {
    lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '', internal: true, cidr: '127.0.0.1/8' }],
    weftgw0: [{ address: '10.244.0.1', netmask: '255.255.255.0', family: 'IPv4', mac: '', internal: false, cidr: '10.244.0.1/24' }],
    eth0: [
      { address: 'fe80::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '', internal: false, cidr: 'fe80::1/64', scopeid: 2 },
      { address: '192.0.2.7', netmask: '255.255.255.0', family: 'IPv4', mac: '', internal: false, cidr: '192.0.2.7/24' },
    ],
  } as unknown as NodeJS.Dict<import('node:os').NetworkInterfaceInfo[]>;
  it('picks the listen address interface, else the first usable IPv4 not created by weft', () => {
    expect(pickUnderlay('192.0.2.7', ifaces)).toEqual({ addr: '192.0.2.7', family: 4, ifname: 'eth0' });
    expect(pickUnderlay(undefined, ifaces)).toEqual({ addr: '192.0.2.7', family: 4, ifname: 'eth0' });
    expect(() => pickUnderlay('198.18.0.1', ifaces)).toThrow(UnderlayError);
    expect(() => pickUnderlay(undefined, { lo: ifaces.lo })).toThrow(/give --listen-addr/);
  });
  it('resolves seed names, keeps literals, skips names that do not resolve', async () => {
    const lookup = async (h: string) => {
      if (h === 'seeds.example') return ['192.0.2.5', '192.0.2.6', '192.0.2.5'];
      throw new Error('ENOTFOUND');
    };
    const r = await resolveSeeds([{ host: '192.0.2.1', port: 7946 }, { host: 'seeds.example', port: 7000 }, { host: 'gone.example', port: 1 }], lookup);
    expect(r.seeds).toEqual([{ host: '192.0.2.1', port: 7946 }, { host: '192.0.2.5', port: 7000 }, { host: '192.0.2.6', port: 7000 }]);
    expect(r.failed).toEqual([{ host: 'gone.example', error: 'ENOTFOUND' }]);
  });
  it('formats endpoints', () => {
    expect(endpointOf('192.0.2.1', 51820)).toBe('192.0.2.1:51820');
    expect(endpointOf('2001:db8::1', 51820)).toBe('[2001:db8::1]:51820');
  });
});

describe('files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wag-files-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a 0600 secret once and reads it back', async () => {
    const p = join(dir, 'sub', 'identity.key');
    const a = await loadOrCreateSecretFile(p);
    expect(a.created).toBe(true);
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    const b = await loadOrCreateSecretFile(p);
    expect(b.created).toBe(false);
    expect(Buffer.from(b.value).equals(Buffer.from(a.value))).toBe(true);
  });

  it('concurrent creators agree on one secret', async () => {
    const p = join(dir, 'identity.key');
    const all = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateSecretFile(p)));
    expect(new Set(all.map((r) => Buffer.from(r.value).toString('hex'))).size).toBe(1);
  });

  it('refuses unsafe or malformed secret files without echoing their content', async () => {
    const p = join(dir, 'mesh.key');
    const secret = Buffer.alloc(32, 7).toString('base64');
    await writeFile(p, secret, { mode: 0o644 });
    await chmod(p, 0o644);
    await expect(readSecretFile(p)).rejects.toThrow(/mode 0644/);
    await chmod(p, 0o600);
    expect(Buffer.from((await readSecretFile(p))!).toString('base64')).toBe(secret);
    await symlink(p, join(dir, 'link'));
    await expect(readSecretFile(join(dir, 'link'))).rejects.toThrow(/symbolic link/);
    await writeFile(join(dir, 'bad'), 'not-a-key-but-secretish', { mode: 0o600 });
    const err = await readSecretFile(join(dir, 'bad')).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(SecretFileError);
    expect((err as Error).message).not.toContain('secretish');
    await expect(requireSecretFile(join(dir, 'missing'))).rejects.toThrow(/does not exist/);
  });

  it('block store round-trips and rejects corrupt files', async () => {
    const s = new FileBlockStore(join(dir, 'state'));
    expect(await s.load()).toBeUndefined();
    await s.save({ podCIDRs: ['10.244.5.0/24'], claimedAt: 42 });
    expect(await s.load()).toEqual({ podCIDRs: ['10.244.5.0/24'], claimedAt: 42 });
    await writeFile(join(dir, 'state', 'block.json'), '{"podCIDRs":"x"}');
    await expect(s.load()).rejects.toBeInstanceOf(BlockStoreError);
    await s.clear();
    await s.clear();
    expect(await s.load()).toBeUndefined();
  });
});

describe('detectUnderlay', () => {
  const hasUnderlay = Object.values(networkInterfaces()).some((l) => (l ?? []).some((a) => !a.internal));
  it.skipIf(!hasUnderlay)('takes the MTU from the injected reader (rtnetlink in the agent), for the chosen interface', async () => {
    const asked: string[] = [];
    const u = await detectUnderlay(undefined, [], async (ifname) => {
      asked.push(ifname);
      return 1234;
    });
    expect(u.mtu).toBe(1234);
    expect(asked).toEqual([u.ifname]);
  });
  it.skipIf(!hasUnderlay)('falls back to 1500 when the reader fails, cannot tell, or answers nonsense', async () => {
    expect((await detectUnderlay(undefined, [], async () => { throw new Error('netlink down'); })).mtu).toBe(1500);
    expect((await detectUnderlay(undefined, [], async () => undefined)).mtu).toBe(1500);
    expect((await detectUnderlay(undefined, [], async () => 12)).mtu).toBe(1500);
  });
});
