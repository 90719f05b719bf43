import { mkdtemp, readFile, rm, writeFile, stat, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import pino from 'pino';
import { IpamExhaustedError, IpamStateError, PodIpam } from '../../src/ipam/pods.ts';

const log = pino({ level: 'silent' });
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wcni-ipam-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});
const open = (blocks = ['10.244.3.0/24'], now = () => 1000) => PodIpam.open({ stateDir: dir, blocks, logger: log, now });

describe('PodIpam', () => {
  it('skips network and gateway, stores pod identity, persists with mode 0600', async () => {
    const ipam = await open();
    const [a] = await ipam.allocate({ containerId: 'c1', ifname: 'eth0', podName: 'web', podNamespace: 'prod' });
    expect(a).toEqual({ containerId: 'c1', ifname: 'eth0', ip: '10.244.3.2', block: '10.244.3.0/24', podName: 'web', podNamespace: 'prod', allocatedAt: 1000 });
    expect(ipam.pods()).toEqual([{ name: 'web', namespace: 'prod', ips: ['10.244.3.2'] }]);
    const st = await stat(join(dir, 'ipam', 'pods.json'));
    expect(st.mode & 0o777).toBe(0o600);
    expect(await readdir(join(dir, 'ipam'))).toEqual(['pods.json']); // no temp files left
  });

  it('repeated ADD for the same attachment returns the same address; another ifname gets another', async () => {
    const ipam = await open();
    const a = await ipam.allocate({ containerId: 'c1', ifname: 'eth0' });
    expect(await ipam.allocate({ containerId: 'c1', ifname: 'eth0' })).toEqual(a);
    const b = await ipam.allocate({ containerId: 'c1', ifname: 'net1' });
    expect(b[0]!.ip).not.toBe(a[0]!.ip);
  });

  it('survives a restart: reloaded state never hands out an address twice', async () => {
    const first = await open();
    const got = new Set<string>();
    for (let i = 0; i < 10; i++) got.add((await first.allocate({ containerId: `c${i}`, ifname: 'eth0' }))[0]!.ip);
    await first.release({ containerId: 'c3', ifname: 'eth0' });
    const second = await open();
    expect(second.list()).toHaveLength(9);
    for (let i = 10; i < 20; i++) {
      const ip = (await second.allocate({ containerId: `c${i}`, ifname: 'eth0' }))[0]!.ip;
      expect(got.has(ip)).toBe(false); // next-fit: even the released address is not reused at once
      got.add(ip);
    }
  });

  it('release is idempotent', async () => {
    const ipam = await open();
    await ipam.allocate({ containerId: 'c1', ifname: 'eth0' });
    expect(await ipam.release({ containerId: 'c1', ifname: 'eth0' })).toHaveLength(1);
    expect(await ipam.release({ containerId: 'c1', ifname: 'eth0' })).toEqual([]);
    expect(await ipam.release({ containerId: 'never', ifname: 'eth0' })).toEqual([]);
  });

  it('exhausts a /29 after 5 pods (network, gateway, broadcast skipped) with a clear error, then reuses after release', async () => {
    const ipam = await open(['10.244.3.0/29']);
    const ips = [];
    for (let i = 0; i < 5; i++) ips.push((await ipam.allocate({ containerId: `c${i}`, ifname: 'eth0' }))[0]!.ip);
    expect(ips).toEqual(['10.244.3.2', '10.244.3.3', '10.244.3.4', '10.244.3.5', '10.244.3.6']);
    await expect(ipam.allocate({ containerId: 'c9', ifname: 'eth0' })).rejects.toThrow(IpamExhaustedError);
    await expect(ipam.allocate({ containerId: 'c9', ifname: 'eth0' })).rejects.toThrow(/no free address left in 10.244.3.0\/29/);
    await ipam.release({ containerId: 'c2', ifname: 'eth0' });
    expect((await ipam.allocate({ containerId: 'c9', ifname: 'eth0' }))[0]!.ip).toBe('10.244.3.4');
  });

  it('two ADDs at once never get the same address', async () => {
    const ipam = await open();
    const all = await Promise.all(Array.from({ length: 100 }, (_, i) => ipam.allocate({ containerId: `c${i}`, ifname: 'eth0' })));
    expect(new Set(all.map((a) => a[0]!.ip)).size).toBe(100);
    const reloaded = await open();
    expect(reloaded.list()).toHaveLength(100);
  });

  it('dual stack: one address per block', async () => {
    const ipam = await open(['10.244.3.0/24', 'fd00:10:244::300/120']);
    const got = await ipam.allocate({ containerId: 'c1', ifname: 'eth0', podName: 'p', podNamespace: 'n' });
    expect(got.map((a) => a.ip)).toEqual(['10.244.3.2', 'fd00:10:244::302']);
    expect(ipam.pods()).toEqual([{ name: 'p', namespace: 'n', ips: ['10.244.3.2', 'fd00:10:244::302'] }]);
  });

  it('publishes only the newest sandbox of a pod', async () => {
    let t = 1000;
    const ipam = await open(['10.244.3.0/24'], () => t);
    await ipam.allocate({ containerId: 'old', ifname: 'eth0', podName: 'web', podNamespace: 'prod' });
    t = 2000;
    await ipam.allocate({ containerId: 'new', ifname: 'eth0', podName: 'web', podNamespace: 'prod' });
    await ipam.allocate({ containerId: 'other', ifname: 'eth0', podName: 'db', podNamespace: 'prod' });
    expect(ipam.pods()).toEqual([
      { name: 'web', namespace: 'prod', ips: ['10.244.3.3'] },
      { name: 'db', namespace: 'prod', ips: ['10.244.3.4'] },
    ]);
    await ipam.release({ containerId: 'new', ifname: 'eth0' });
    expect(ipam.pods()[0]).toEqual({ name: 'web', namespace: 'prod', ips: ['10.244.3.2'] });
  });

  it('gc releases attachments not in the valid list', async () => {
    const ipam = await open();
    for (const c of ['a', 'b', 'c']) await ipam.allocate({ containerId: c, ifname: 'eth0' });
    const gone = await ipam.gc([{ containerId: 'b', ifname: 'eth0' }]);
    expect(gone.map((g) => g.containerId).sort()).toEqual(['a', 'c']);
    expect(ipam.list().map((a) => a.containerId)).toEqual(['b']);
  });

  it('setBlocks reports allocations left outside the new block', async () => {
    const ipam = await open();
    await ipam.allocate({ containerId: 'a', ifname: 'eth0' });
    const stale = ipam.setBlocks(['10.244.9.0/24']);
    expect(stale.map((s) => s.ip)).toEqual(['10.244.3.2']);
    expect((await ipam.allocate({ containerId: 'b', ifname: 'eth0' }))[0]!.ip).toBe('10.244.9.2');
  });

  it('rejects hostile input with IpamStateError', async () => {
    const ipam = await open();
    await expect(ipam.allocate({ containerId: '', ifname: 'eth0' })).rejects.toThrow(IpamStateError);
    await expect(ipam.allocate({ containerId: 'x'.repeat(300), ifname: 'eth0' })).rejects.toThrow(/containerId/);
    await expect(ipam.allocate({ containerId: 'c', ifname: 'a/b' })).rejects.toThrow(/ifname/);
    await expect(ipam.allocate({ containerId: 'c', ifname: 'eth0', podName: 'x'.repeat(254) })).rejects.toThrow(/podName/);
    await expect(ipam.allocate({ containerId: 'c', ifname: 'eth0', podName: 5 as unknown as string })).rejects.toThrow(/podName/);
    expect(() => ipam.setBlocks(['10.244.3.1/24'])).toThrow(/host bits/);
  });

  it('refuses an unparsable state file and drops malformed entries from a parsable one', async () => {
    await (await open()).allocate({ containerId: 'ok', ifname: 'eth0' });
    const path = join(dir, 'ipam', 'pods.json');
    const good = JSON.parse(await readFile(path, 'utf8'));
    good.allocations.push({ containerId: 'bad', ifname: 'eth0', ip: 'nope', block: '10.244.3.0/24', allocatedAt: 1 }, { containerId: 'dup', ifname: 'eth0', ip: '10.244.3.2', block: '10.244.3.0/24', allocatedAt: 1 });
    await writeFile(path, JSON.stringify(good));
    expect((await open()).list().map((a) => a.containerId)).toEqual(['ok']);
    await writeFile(path, '{"version":1,"allocations":[');
    await expect(open()).rejects.toThrow(/not valid JSON/);
    await writeFile(path, '{"version":7}');
    await expect(open()).rejects.toThrow(/unknown format/);
  });

  it('property: any interleaving of adds and dels keeps addresses unique, in the block, and consistent after reload', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 12 })), { maxLength: 40 }), async (ops) => {
        await rm(join(dir, 'ipam'), { recursive: true, force: true });
        const ipam = await open(['10.244.3.0/28']);
        await Promise.all(
          ops.map(([add, n]) =>
            add ? ipam.allocate({ containerId: `c${n}`, ifname: 'eth0' }).catch((e) => expect(e).toBeInstanceOf(IpamExhaustedError)) : ipam.release({ containerId: `c${n}`, ifname: 'eth0' }),
          ),
        );
        const ips = ipam.list().map((a) => a.ip);
        expect(new Set(ips).size).toBe(ips.length);
        for (const ip of ips) expect(['10.244.3.0', '10.244.3.1', '10.244.3.15'].includes(ip)).toBe(false);
        expect((await open(['10.244.3.0/28'])).list()).toEqual(ipam.list());
      }),
      { numRuns: 30 },
    );
  });
});
