/**
 * Synthetic peers for the agent RSS measurement: N real mesh members (real sockets, real keys,
 * signed `node` entries) in one process, bound to one address in the agent's network namespace.
 * Every member joins through the agent (push/pull carrying its signed entry), then gossips as any
 * member does, so the agent holds them exactly as it would hold real nodes. Their WireGuard endpoints are in 192.0.2.0/24
 * (documentation range, unrouted in the lab), so no WireGuard packet leaves the namespace.
 *
 * Usage: node peer-feeder.ts --count N --bind IP --seed IP:PORT --key-file PATH
 * Prints `started <n>` lines on stdout; exits on SIGTERM after stopping every member.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import nacl from 'tweetnacl';
import { Keyring, VerifyCache, createMesh, generateIdentity, type Mesh } from '../../mesh/index.ts';
import type { NodeInfo } from '../../src/model.ts';

/**
 * The cluster CIDR the agent under measurement runs with: it holds the lab node's own block
 * (10.244.0.0/24) and every synthetic peer's /24 (see {@link syntheticBlock}).
 */
export const SYNTHETIC_CLUSTER_CIDR = '10.0.0.0/8';

/**
 * The pod block and mesh IP of synthetic peer `i`: a /24 (the default `--block-size`, as real
 * nodes hold) in 10.100.0.0/13, clear of the lab's node blocks in 10.244.0.0/16. Smaller blocks
 * would cost the agent more than real nodes do: its DNS table answers one reverse zone per /24 of
 * a block, 16 per /28 (bench/README.md, "Agent memory"). Pure.
 */
export function syntheticBlock(i: number): { podCIDR: string; meshIP: string } {
  if (!Number.isInteger(i) || i < 0 || i >= 2048) throw new RangeError(`peer-feeder: peer index ${i} is outside 0..2047`);
  const net = `10.${100 + (i >> 8)}.${i & 255}`;
  return { podCIDR: `${net}.0/24`, meshIP: `${net}.1` };
}

/** The `node` entry synthetic peer `i` publishes. Pure apart from the given key. */
export function syntheticNodeInfo(i: number, wgPublicKey: string, now: number): NodeInfo {
  const { podCIDR, meshIP } = syntheticBlock(i);
  return { format: 1, name: `rss-${i}`, wgPublicKey, listenPort: 51820, endpoints: [`192.0.2.${1 + (i % 250)}:51820`], meshIP, podCIDRs: [podCIDR], claimedAt: now, keepalive: 0 };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { count: { type: 'string' }, bind: { type: 'string' }, seed: { type: 'string' }, 'key-file': { type: 'string' } } });
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1 || count > 2048 || !values.bind || !values.seed || !values['key-file']) {
    process.stderr.write('usage: peer-feeder.ts --count 1..2048 --bind IP --seed IP:PORT --key-file PATH\n');
    process.exit(2);
  }
  const key = new Uint8Array(Buffer.from(readFileSync(values['key-file'], 'utf8').trim(), 'base64'));
  const members: Mesh[] = [];
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await Promise.allSettled(members.map((m) => m.stop()));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  // Slow timers: these members exist to be remembered by the agent, not to stress it. No gossip
  // rounds of their own (gossipNodes 0): with N members in one process, each join's alive message
  // was re-gossiped by every member (N joins x N members x retransmits: quadratic, and on a loaded
  // host the starved feeder missed probes, flapped and stalled below N). They still answer the
  // agent's probes, piggyback their broadcasts (refutations too) on probes and acks, and push/pull;
  // the agent disseminates the joins as it would in a real mesh.
  // Nor do they probe each other (one probe per 10 min): with N members in one starved process,
  // siblings missed each other's acks, suspected each other and piggybacked those suspicions on
  // their acks to the agent, which then declared them dead; a member declared dead never heard of
  // it (it does not gossip), so the count stalled below N for minutes on a loaded host. They
  // still answer the agent's probes and indirect probe requests.
  // Shared by all synthetic members, which verify the same entries: a bound above what they hold together.
  const verifyCache = new VerifyCache(1_000_000);
  const profile = { probeIntervalMs: 600_000, gossipIntervalMs: 2000, gossipNodes: 0, pushPullIntervalMs: 120_000 };
  const start = async (i: number, seeds: string[], attempt = 1): Promise<string> => {
    try {
      return await startOnce(i, seeds);
    } catch (err) {
      // A busy seed (this process hosts every member) may miss a join; try again, then give up.
      if (attempt >= 3) throw err;
      await new Promise((r) => setTimeout(r, 500 * attempt));
      return start(i, seeds, attempt + 1);
    }
  };
  const startOnce = async (i: number, seeds: string[]): Promise<string> => {
    const m = createMesh({ name: `rss-${i}`, identity: generateIdentity(), keyring: new Keyring(key), bindAddr: values.bind!, bindPort: 0, profile, verifyCache });
    // The entry is set before start, so the join's push/pull already carries it to the agent.
    const wg = Buffer.from(nacl.box.keyPair().publicKey).toString('base64');
    m.setLocal('node', new TextEncoder().encode(JSON.stringify(syntheticNodeInfo(i, wg, Date.now()))));
    try {
      await m.start(seeds);
    } catch (err) {
      await m.stop().catch(() => {});
      throw err;
    }
    members.push(m);
    const self = m.snapshot().members.find((x) => x.name === `rss-${i}`)!;
    return `${self.addr}:${self.port}`;
  };
  try {
    // Every member joins the agent itself (as a node joining through a seed does), a few at a time.
    const batch = 10;
    for (let i = 0; i < count; i += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, count - i) }, (_, k) => start(i + k, [values.seed!])));
      if ((i / batch) % 10 === 9) process.stdout.write(`started ${Math.min(count, i + batch)}\n`);
    }
    process.stdout.write(`started ${count} all\n`);
  } catch (err) {
    process.stderr.write(`peer-feeder: ${(err as Error).message}\n`);
    await stop();
  }
}
