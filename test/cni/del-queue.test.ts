import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { delQueueDir, drainDelQueue, enqueueDel, type QueuedDel } from '../../src/cni/del-queue.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wcni-q-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DEL queue', () => {
  it('creates the state dir on demand, one file per attachment', async () => {
    const state = join(dir, 'var', 'lib', 'weft');
    await enqueueDel(state, { containerId: 'a', ifname: 'eth0', netns: '/x', queuedAt: 1 });
    await enqueueDel(state, { containerId: 'a', ifname: 'eth0', netns: '/x', queuedAt: 2 });
    await enqueueDel(state, { containerId: 'a', ifname: 'net1', netns: '/x', queuedAt: 2 });
    expect(await readdir(delQueueDir(state))).toHaveLength(2);
  });

  it('drains entries, drops malformed ones and leftover temp files, keeps failed ones', async () => {
    await enqueueDel(dir, { containerId: 'ok', ifname: 'eth0', netns: '', queuedAt: 1 });
    await enqueueDel(dir, { containerId: 'fails', ifname: 'eth0', netns: '', queuedAt: 1 });
    const q = delQueueDir(dir);
    await writeFile(join(q, 'junk.json'), '{not json');
    await writeFile(join(q, 'empty-id.json'), JSON.stringify({ containerId: '', ifname: 'eth0' }));
    await writeFile(join(q, 'x.json.tmp-123'), 'partial');
    const released: QueuedDel[] = [];
    const errors: string[] = [];
    const r = await drainDelQueue({
      stateDir: dir,
      release: async (e) => {
        if (e.containerId === 'fails') throw new Error('busy');
        released.push(e);
      },
      onError: (file) => errors.push(file),
    });
    expect(r).toEqual({ drained: 1, failed: 1, dropped: 2 });
    expect(released.map((e) => e.containerId)).toEqual(['ok']);
    expect(errors).toHaveLength(3);
    expect(await readdir(q)).toHaveLength(1); // only the failed one stays for the next drain
  });

  it('an absent queue drains to nothing', async () => {
    expect(await drainDelQueue({ stateDir: join(dir, 'none'), release: async () => {} })).toEqual({ drained: 0, failed: 0, dropped: 0 });
  });

  it('fails (without hanging) when the state dir cannot be created', async () => {
    await mkdir(join(dir, 'file-parent'));
    await writeFile(join(dir, 'file-parent', 'f'), '');
    await expect(enqueueDel(join(dir, 'file-parent', 'f', 'state'), { containerId: 'a', ifname: 'eth0', netns: '', queuedAt: 1 })).rejects.toThrow();
    await expect(enqueueDel('/proc/wcni-not-here/state', { containerId: 'a', ifname: 'eth0', netns: '', queuedAt: 1 })).rejects.toThrow();
  });
});
