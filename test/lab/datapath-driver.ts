/**
 * Runs a real datapath (userspace WireGuard backend + LinuxRtNetlink + DatapathReconciler) inside
 * the network and mount namespace it was started in, driven by JSON lines on stdin (one reply line
 * per request on stdout). Started by `datapath-node.ts`; not a test file itself.
 *
 * Requests: {init:{privateKey,stateDir}} | {apply:DesiredState} | {resync:true} | {stats:true}
 * | {rt:[method,...args]} | {wg:[method,...args]} | {uninstall:ifname} | {exit:true}.
 */
import { createInterface } from 'node:readline';
import pino from 'pino';
import { DatapathReconciler } from '../../src/datapath/reconciler.ts';
import { LinuxRtNetlink } from '../../src/datapath/rtnetlink-linux.ts';
import type { RtNetlink } from '../../src/datapath/rtnetlink.ts';
import type { WireGuardBackend } from '../../src/wireguard/backend.ts';
import { UserspaceWireGuardBackend } from '../../src/wireguard/userspace.ts';

const logger = pino({ level: process.env.WDP_LOG ?? 'fatal' }, pino.destination(2));
const rt: RtNetlink = new LinuxRtNetlink();
let wg: WireGuardBackend | undefined;
let rec: DatapathReconciler | undefined;

const reply = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);

async function handle(req: Record<string, unknown>): Promise<unknown> {
  if (req.init) {
    const { privateKey, stateDir } = req.init as { privateKey: string; stateDir: string };
    wg = new UserspaceWireGuardBackend({ logger, stateDir, exitGraceMs: 2000 });
    rec = new DatapathReconciler({ wg, rt, logger, privateKey, resyncMs: 0 });
    return { publicKey: rec.publicKey };
  }
  if (!rec || !wg) throw new Error('driver: not initialised');
  if (req.apply) {
    const r = await rec.apply(req.apply as never);
    return { ...r, errors: r.errors.map((e) => e.message) };
  }
  if (req.resync) {
    const r = await rec.resync();
    return r ? { ...r, errors: r.errors.map((e) => e.message) } : null;
  }
  if (req.stats) return rec.stats();
  if (req.rt) {
    const [m, ...args] = req.rt as [keyof RtNetlink, ...unknown[]];
    return await (rt[m] as (...a: unknown[]) => Promise<unknown>).apply(rt, args);
  }
  if (req.wg) {
    const [m, ...args] = req.wg as [keyof WireGuardBackend, ...unknown[]];
    return await (wg[m] as (...a: unknown[]) => Promise<unknown>).apply(wg, args);
  }
  if (req.uninstall) {
    await rec.uninstall(req.uninstall as string);
    return true;
  }
  throw new Error(`driver: unknown request ${Object.keys(req).join(',')}`);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let req: Record<string, unknown>;
  try {
    req = JSON.parse(line) as Record<string, unknown>;
  } catch {
    reply({ error: 'bad JSON' });
    continue;
  }
  if (req.exit) break;
  try {
    reply({ ok: await handle(req) });
  } catch (err) {
    reply({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err), code: (err as { code?: string }).code });
  }
}
await wg?.close();
await rt.close();
process.exit(0);
