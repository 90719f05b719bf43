/**
 * Child process for test/lab/k8s-source-netns.test.ts: runs the agent's Kubernetes source exactly
 * as the agent would (startKubeSource with --kubeconfig), from inside a lab network namespace, and
 * prints one JSON line per phase on stdout. Usage: node netns-probe.ts <kubeconfig> <node-name>
 */
import { pino } from 'pino';
import { startKubeSource } from '../../src/k8s/start.ts';

const [kubeconfig, name] = process.argv.slice(2);
if (kubeconfig === undefined || name === undefined) {
  process.stderr.write('usage: netns-probe.ts <kubeconfig> <node-name>\n');
  process.exit(2);
}
// WEFT_TEST_WATCH_INACTIVITY_MS shortens the watch inactivity timeout, so a silent partition is
// noticed in seconds rather than the default 90 s.
const inactivity = Number(process.env.WEFT_TEST_WATCH_INACTIVITY_MS ?? '');
const source = startKubeSource({ name, meshPort: 7946, kubeconfig }, pino({ level: 'warn' }, pino.destination(2)), {
  env: {},
  ...(inactivity > 0 ? { watchInactivityMs: inactivity } : {}),
});
if (source === undefined) throw new Error('no kube source');
const snap = await source.waitForSync(20_000);
process.stdout.write(`${JSON.stringify({ phase: 'synced', synced: snap.synced, podCIDRs: snap.podCIDRs, seeds: snap.seeds, endpointIPs: snap.endpointIPs })}\n`);
source.setNodeAnnotations({ publicKey: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=', meshIP: snap.podCIDRs[0]?.replace(/0\/\d+$/, '1') ?? '10.244.0.1' });
// Report every later snapshot's seeds, so the test can add a node and see it arrive.
source.subscribe((s) => process.stdout.write(`${JSON.stringify({ phase: 'update', connected: s.connected, seeds: s.seeds, meshIP: s.self?.meshIP ?? null })}\n`));
process.stdin.resume();
process.stdin.on('end', () => {
  void source.stop().then(() => process.exit(0));
});
