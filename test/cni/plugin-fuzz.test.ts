/** In-process fuzzing of the plugin's input handling: any env/stdin gives exit 0 or one spec error JSON. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { runPlugin, stderrLogger } from '../../src/cni/plugin.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wcni-fuzz-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const silent = stderrLogger('error', () => {});

describe('runPlugin under hostile input', () => {
  it('always answers with exit 0 or exactly one spec error object', async () => {
    const confArb = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.json({ maxDepth: 3 }),
      fc.record({
        cniVersion: fc.oneof(fc.constantFrom('0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0', '2.0.0', ''), fc.string({ maxLength: 10 }), fc.integer()),
        name: fc.oneof(fc.constant('weft'), fc.string({ maxLength: 5 }), fc.integer()),
        type: fc.constant('weft-cni'),
        socket: fc.oneof(fc.constant(join(dir ?? '/tmp', 'none.sock')), fc.string({ maxLength: 20 }), fc.constant(undefined)),
        stateDir: fc.constant(join(dir ?? '/tmp', 'state')),
      }).map((o) => JSON.stringify(o)),
    );
    const envArb = fc.record({
      CNI_COMMAND: fc.oneof(fc.constantFrom('ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'), fc.string({ maxLength: 10 }), fc.constant(undefined)),
      CNI_CONTAINERID: fc.oneof(fc.string({ maxLength: 300 }), fc.constant(undefined)),
      CNI_NETNS: fc.oneof(fc.constant('/var/run/netns/x'), fc.string({ maxLength: 50 }), fc.constant(undefined)),
      CNI_IFNAME: fc.oneof(fc.constant('eth0'), fc.string({ maxLength: 20 }), fc.constant(undefined)),
      CNI_ARGS: fc.oneof(fc.constant('K8S_POD_NAME=a;K8S_POD_NAMESPACE=b'), fc.string({ maxLength: 100 }), fc.constant(undefined)),
    });
    await fc.assert(
      fc.asyncProperty(envArb, confArb, async (env, conf) => {
        // Sockets that are not absolute paths are rejected before any I/O; the rest do not exist.
        const out = await runPlugin({ env, stdin: Buffer.from(conf), logger: silent, timeouts: { add: 500, del: 500, check: 500, gc: 500, status: 500 } });
        if (out.exitCode === 0) {
          if (out.stdout !== '') expect(() => JSON.parse(out.stdout)).not.toThrow();
          return;
        }
        expect(out.exitCode).toBe(1);
        const lines = out.stdout.trim().split('\n');
        expect(lines).toHaveLength(1);
        const e = JSON.parse(lines[0]!);
        expect(typeof e.code).toBe('number');
        expect(typeof e.msg).toBe('string');
        expect(typeof e.cniVersion).toBe('string');
        expect(e.msg).not.toMatch(/\n\s+at /);
      }),
      { numRuns: 300 },
    );
  });
});
