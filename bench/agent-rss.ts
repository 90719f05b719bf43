/**
 * The agent RSS measurement of `weft bench` on its own, for comparing Node flags or entries:
 * a one-node lab, a real agent (by default as the image ships it: the bundle with AGENT_NODE_FLAGS
 * and AGENT_ENV), N real mesh members from bench/suite/peer-feeder.ts. Needs root, like the lab.
 * Prints one JSON object (see measureAgentRss in bench/suite/agent-rss.ts).
 *
 * Usage: node bench/agent-rss.ts [--peers 1000] [--backend userspace|kernel]
 *        [--node-flags="--max-semi-space-size=1 ..."] [--script path/to/weft.mjs|src/main.ts]
 */
import { parseArgs } from 'node:util';
import { measureAgentRss } from './suite/agent-rss.ts';

const { values } = parseArgs({
  options: { peers: { type: 'string', default: '1000' }, backend: { type: 'string', default: 'userspace' }, 'node-flags': { type: 'string' }, script: { type: 'string' } },
});
const peers = Number(values.peers);
if (!Number.isInteger(peers) || peers < 1 || peers > 2048 || (values.backend !== 'userspace' && values.backend !== 'kernel')) {
  process.stderr.write('usage: agent-rss.ts [--peers 1..2048] [--backend userspace|kernel] [--node-flags="..."] [--script PATH]\n');
  process.exit(2);
}
const t0 = performance.now();
const r = await measureAgentRss({
  peers,
  backend: values.backend,
  nodeFlags: values['node-flags'] !== undefined ? values['node-flags'].split(/\s+/).filter(Boolean) : undefined,
  script: values.script,
  progress: (m) => process.stderr.write(`${Math.round((performance.now() - t0) / 1000)}s ${m}\n`),
});
process.stdout.write(`${JSON.stringify(r)}\n`);
