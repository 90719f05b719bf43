/**
 * A mesh member as its own OS process, for the real-socket test: listens on UDP+TCP at
 * 127.0.0.1 (port 0 = any), joins the seeds, publishes one entry, and prints one JSON line of status
 * every 200 ms on stdout: `{"name","port","live","entries"}`. Exits on SIGTERM or stdin close.
 *
 * Usage: node member-process.ts <name> <meshKeyHex> [seed host:port ...]
 */
import { Keyring, createMesh, generateIdentity } from '../index.ts';

const [name, keyHex, ...seeds] = process.argv.slice(2);
if (!name || !keyHex) {
  console.error('usage: member-process.ts <name> <meshKeyHex> [seeds...]');
  process.exit(2);
}
const mesh = createMesh({
  name,
  identity: generateIdentity(),
  keyring: new Keyring(new Uint8Array(Buffer.from(keyHex, 'hex'))),
  bindAddr: '127.0.0.1',
  bindPort: 0,
  profile: { pushPullIntervalMs: 5000 },
});

let port = 0;
const status = (): void => {
  const snap = mesh.snapshot();
  const live = snap.members.filter((m) => m.state === 'alive').length;
  const entries = snap.members.filter((m) => m.entries.has('node')).length;
  process.stdout.write(`${JSON.stringify({ name, port, live, entries })}\n`);
};

const shutdown = async (): Promise<void> => {
  await mesh.stop();
  process.exit(0);
};
process.on('SIGTERM', () => void shutdown());
process.stdin.on('end', () => void shutdown());
process.stdin.resume();

const started = mesh.start(seeds);
// The port is known once the transport is bound; the snapshot carries it.
started
  .then(() => {
    port = mesh.snapshot().members.find((m) => m.name === name)!.port;
    mesh.setLocal('node', new TextEncoder().encode(JSON.stringify({ name, port })));
    status();
    setInterval(status, 200);
  })
  .catch((err: unknown) => {
    console.error(`start failed: ${String(err)}`);
    process.exit(1);
  });
