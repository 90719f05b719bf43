/**
 * Gossip benchmark: simulates N mesh members on the in-memory network with virtual time and prints
 * one JSON object. Usage: `npm run bench:gossip -- --nodes N [--loss P] [--seed S] [--json]
 * [--detect] [--disable-tcp-pings]`. Loss applies to datagrams; the simulated TCP is reliable.
 *
 * Phases (all virtual time): members start from one shared view of each other (no join storm);
 * warm-up; steady-state traffic measured over a window; one member publishes an entry and we time
 * until every live member holds it (converge_*); one member crashes and we time until every live
 * member marks it dead (detect_ms_max), counting members wrongly declared dead (false_positives).
 */
import { parseArgs } from 'node:util';
import { SimCluster, simAddr, simName } from '../mesh/testing/sim-cluster.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '100' },
    loss: { type: 'string', default: '0' },
    seed: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
    'payload-bytes': { type: 'string', default: '256' },
    'detect-max-s': { type: 'string', default: '60' },
    /** Failure detection phase: on by default up to 2000 nodes (its target is set at 100 nodes). */
    detect: { type: 'boolean' },
    /** Turn off memberlist's TCP fallback probe, to see Lifeguard alone against UDP loss. */
    'disable-tcp-pings': { type: 'boolean', default: false },
  },
});

const n = Number(values.nodes);
const loss = Number(values.loss);
const seed = Number(values.seed);
const payloadBytes = Number(values['payload-bytes']);
if (!(Number.isInteger(n) && n >= 3 && n <= 50_000)) throw new Error('--nodes must be an integer in 3..50000');
if (!(loss >= 0 && loss < 1)) throw new Error('--loss must be in [0, 1)');

const wall0 = performance.now();
const cpu0 = process.cpuUsage();
const publisher = 0;
const crashed = n - 1;
const publisherName = simName(publisher);
const crashedName = simName(crashed);
const gotEntry = new Float64Array(n).fill(-1);
const sawDead = new Float64Array(n).fill(-1);
let falsePositives = 0;
let suspicions = 0;
let tPublish = Infinity;
let tCrash = Infinity;
let entryCount = 0;
let deadCount = 0;

const cluster = new SimCluster({
  seed,
  loss,
  latencyMs: 1,
  jitterMs: 2,
  profile: values['disable-tcp-pings'] ? { disableTcpPings: true } : 'lan',
  observer: (i) => ({
    entry(owner, key) {
      if (owner === publisherName && key === 'bench' && gotEntry[i]! < 0 && cluster.net.clock.now() >= tPublish) {
        gotEntry[i] = cluster.net.clock.now() - tPublish;
        entryCount++;
      }
    },
    memberState(name, state) {
      if (state === 'suspect') suspicions++;
      if (state !== 'dead') return;
      if (name === crashedName && cluster.net.clock.now() >= tCrash) {
        if (sawDead[i]! < 0) {
          sawDead[i] = cluster.net.clock.now() - tCrash;
          deadCount++;
        }
      } else {
        falsePositives++;
      }
    },
  }),
});

await cluster.startBootstrapped(n);
const net = cluster.net;
await net.runFor(n > 2000 ? 2000 : 3000);

// Steady state: probes plus push/pull, no pending broadcasts beyond the start-up ones.
const windowMs = n > 2000 ? 5000 : 10_000;
const bytes0 = net.totalBytes;
await net.runFor(windowMs);
const bytesPerNodePerS = (net.totalBytes - bytes0) / n / (windowMs / 1000);

// Convergence of one entry update.
tPublish = net.clock.now();
const payload = new Uint8Array(payloadBytes).fill(0x61);
cluster.nodes[publisher]!.setLocal('bench', payload);
await net.runUntilCondition(() => entryCount >= n, 60_000, 10);
const conv = [...gotEntry].filter((v) => v >= 0).sort((a, b) => a - b);
const convergedAll = conv.length === n;

// Failure detection of one crashed member.
const runDetect = values.detect ?? n <= 2000;
tCrash = net.clock.now();
net.crash(simAddr(crashed));
await cluster.nodes[crashed]!.stop();
const detectLimit = Number(values['detect-max-s']) * 1000;
if (runDetect) await net.runUntilCondition(() => deadCount >= n - 1, detectLimit, 50);
const detectedAll = deadCount >= n - 1;
const det = [...sawDead].filter((v) => v >= 0);

await cluster.stopAll();

const result = {
  nodes: n,
  loss,
  converge_ms_p50: conv.length > 0 ? conv[Math.floor(conv.length / 2)]! : null,
  converge_ms_max: convergedAll ? conv[conv.length - 1]! : null,
  detect_ms_max: runDetect && detectedAll ? det.reduce((a, b) => Math.max(a, b), 0) : null,
  detect_skipped: !runDetect,
  bytes_per_node_per_s: Math.round(bytesPerNodePerS),
  wall_ms: Math.round(performance.now() - wall0),
  cpu_ms: Math.round((process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system) / 1000),
  converged_nodes: conv.length,
  detected_nodes: deadCount,
  false_positives: falsePositives,
  suspicions,
  signature_verifications: cluster.verifyCache.verifications,
  tcp_pings: !values['disable-tcp-pings'],
  seed,
};
if (values.json) console.log(JSON.stringify(result));
else console.log(JSON.stringify(result, null, 2));
