/**
 * The agent RSS measurement of `weft bench` on its own, for comparing Node flags or entries:
 * a one-node lab, a real agent (by default as the image ships it: the bundle with AGENT_NODE_FLAGS
 * and AGENT_ENV), N real mesh members from bench/suite/peer-feeder.ts. Needs root, like the lab.
 * Prints one JSON object (see measureAgentRss in bench/suite/agent-rss.ts).
 *
 * Usage: node bench/agent-rss.ts [--peers 1000] [--backend userspace|kernel]
 *        [--node-flags="--max-semi-space-size=1 ..."] [--script path/to/weft.mjs|src/main.ts] [--prefix wbn]
 *        [--smaps-dir DIR [--heap-snapshot]]   (saves the agent's /proc smaps and status, idle and
 *        measured, there; with --heap-snapshot also a V8 heap snapshot of the measured agent)
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AGENT_NODE_FLAGS } from '../src/agent/node-flags.ts';
import { measureAgentRss } from './suite/agent-rss.ts';

const { values } = parseArgs({
  options: { peers: { type: 'string', default: '1000' }, backend: { type: 'string', default: 'userspace' }, 'node-flags': { type: 'string' }, script: { type: 'string' }, prefix: { type: 'string' }, 'smaps-dir': { type: 'string' }, 'heap-snapshot': { type: 'boolean' } },
});
const peers = Number(values.peers);
if (!Number.isInteger(peers) || peers < 1 || peers > 2048 || (values.backend !== 'userspace' && values.backend !== 'kernel')) {
  process.stderr.write('usage: agent-rss.ts [--peers 1..2048] [--backend userspace|kernel] [--node-flags="..."] [--script PATH]\n');
  process.exit(2);
}
const smapsDir = values['smaps-dir'] !== undefined ? resolve(values['smaps-dir']) : undefined;
if (values['heap-snapshot'] && smapsDir === undefined) {
  process.stderr.write('agent-rss: --heap-snapshot needs --smaps-dir (the snapshot is written there)\n');
  process.exit(2);
}
let nodeFlags = values['node-flags'] !== undefined ? values['node-flags'].split(/\s+/).filter(Boolean) : undefined;
if (values['heap-snapshot']) nodeFlags = [...(nodeFlags ?? AGENT_NODE_FLAGS), '--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${smapsDir}`];
const t0 = performance.now();
const r = await measureAgentRss({
  peers,
  backend: values.backend,
  nodeFlags,
  // The lab starts the agent in another working directory: a relative path would not resolve there.
  script: values.script !== undefined ? resolve(values.script) : undefined,
  prefix: values.prefix,
  inspect: smapsDir === undefined ? undefined : async (phase, pid) => {
    await mkdir(smapsDir, { recursive: true });
    for (const f of ['smaps', 'status']) await writeFile(join(smapsDir, `${phase}.${f}`), await readFile(`/proc/${pid}/${f}`, 'utf8'));
    if (values['heap-snapshot'] && phase === 'measured') {
      // The agent writes Heap.*.heapsnapshot into --diagnostic-dir on SIGUSR2; wait until the file stops growing.
      const before = new Set(await readdir(smapsDir));
      process.kill(pid, 'SIGUSR2');
      let last = -1;
      for (let i = 0; i < 120; i++) {
        await new Promise((r) => setTimeout(r, 1000));
        const f = (await readdir(smapsDir)).find((n) => n.endsWith('.heapsnapshot') && !before.has(n));
        const size = f ? (await stat(join(smapsDir, f))).size : -1;
        if (size > 0 && size === last) break;
        last = size;
      }
    }
  },
  progress: (m) => process.stderr.write(`${Math.round((performance.now() - t0) / 1000)}s ${m}\n`),
});
process.stdout.write(`${JSON.stringify(r)}\n`);
