/**
 * The kernel backend: the in-kernel WireGuard module, configured over generic netlink (family
 * `wireguard`) on the `netlink` package's socket, with messages built by `genl.ts`; the link is
 * created and deleted over rtnetlink (link kind `wireguard`). Works in the network namespace of
 * the calling process.
 *
 * Atomicity: one SET message is applied by the kernel under the device lock, but it is not rolled
 * back on error (peers before the failing one stay changed), and a large update is several
 * messages. So, as with userspace, a failed setDevice leaves the device partly updated: re-read
 * and diff again.
 */
import { createGenericNetlink, createRtNetlink, type GenericNetlinkSocket, type NetlinkMessage, type RtNetlinkSocket } from 'netlink';
import { constants as osc } from 'node:os';
import type { Logger } from 'pino';
import type { WgBackendKind, WgDevice, WgDeviceUpdate, WireGuardBackend } from './backend.ts';
import { checkIfname, normalizeUpdate } from './addr.ts';
import { BackendUnavailableError, GenlError, WireGuardError } from './errors.ts';
import {
  DEFAULT_DUMP_LIMITS,
  DEFAULT_MESSAGE_BUDGET,
  WG_CMD_GET_DEVICE,
  WG_CMD_SET_DEVICE,
  WG_GENL_NAME,
  WG_GENL_VERSION,
  attr,
  encodeGetDevice,
  encodeSetDevice,
  parseDump,
} from './genl.ts';
import { ParseCache } from './uapi.ts';

const NLMSG_ERROR = 2;
const NLM_F_DUMP = 0x300;
const NLM_F_DUMP_INTR = 0x10;
const NLM_F_CREATE = 0x400;
const NLM_F_EXCL = 0x200;
const CTRL_CMD_GETFAMILY = 3;
const IFLA_INFO_KIND = 1;

/** Options of {@link KernelWireGuardBackend.open}. */
export interface KernelOptions {
  readonly logger: Logger;
  /** Deadline of one netlink request in ms. Default 5,000. */
  readonly timeoutMs?: number;
  /** Bytes of peer attributes per SET message. Default 16 KiB. */
  readonly messageBudget?: number;
}

/** Resolves the `wireguard` generic netlink family id, or null when the kernel does not have it. */
export async function resolveWireGuardFamily(sock: GenericNetlinkSocket, timeoutMs = 5000): Promise<number | null> {
  try {
    const r = await sock.ctrlRequest(CTRL_CMD_GETFAMILY, { familyName: WG_GENL_NAME }, { timeout: timeoutMs });
    const id = r[0]?.familyId;
    return typeof id === 'number' ? id : null;
  } catch (err) {
    if (/ENOENT|EOPNOTSUPP/.test((err as Error).message)) return null;
    throw new GenlError(`genl: resolve family ${WG_GENL_NAME}: ${(err as Error).message}`, { cause: err });
  }
}

/** Kernel WireGuard over generic netlink; `kind` is 'kernel'. Create with {@link KernelWireGuardBackend.open}. */
export class KernelWireGuardBackend implements WireGuardBackend {
  readonly kind: WgBackendKind = 'kernel';
  private readonly log: Logger;
  private readonly genl: GenericNetlinkSocket;
  private readonly rt: RtNetlinkSocket;
  private readonly family: number;
  private readonly timeoutMs: number;
  private readonly budget: number;
  private readonly cache = new ParseCache();
  private closed = false;

  private constructor(log: Logger, genl: GenericNetlinkSocket, rt: RtNetlinkSocket, family: number, opts: KernelOptions) {
    this.log = log;
    this.genl = genl;
    this.rt = rt;
    this.family = family;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.budget = opts.messageBudget ?? DEFAULT_MESSAGE_BUDGET;
  }

  /**
   * Opens the netlink sockets and resolves the family. Rejects with {@link BackendUnavailableError}
   * when the kernel has no WireGuard (module missing and not auto-loadable).
   */
  static async open(opts: KernelOptions): Promise<KernelWireGuardBackend> {
    let genl: GenericNetlinkSocket;
    try {
      genl = createGenericNetlink();
    } catch (err) {
      throw new BackendUnavailableError(`wireguard: kernel: cannot open a generic netlink socket: ${(err as Error).message}`, { cause: err });
    }
    let family: number | null;
    try {
      family = await resolveWireGuardFamily(genl, opts.timeoutMs);
    } catch (err) {
      genl.socket.close();
      throw err;
    }
    if (family === null) {
      genl.socket.close();
      throw new BackendUnavailableError(`wireguard: kernel: generic netlink family "${WG_GENL_NAME}" not found (no wireguard module)`);
    }
    const rt = createRtNetlink();
    return new KernelWireGuardBackend(opts.logger, genl, rt, family, opts);
  }

  /** Adopts an existing WireGuard link untouched, or creates one with rtnetlink. */
  async ensureDevice(name: string): Promise<void> {
    checkIfname(name);
    this.assertOpen();
    if ((await this.getDevice(name)) !== null) {
      this.log.debug({ ifname: name }, 'kernel WireGuard device present; adopting it');
      return;
    }
    const linkinfo = attr(IFLA_INFO_KIND, Buffer.from(`${WG_GENL_NAME}\0`));
    try {
      await this.rt.newLink({}, { ifname: name, linkinfo }, { flags: NLM_F_CREATE | NLM_F_EXCL, timeout: this.timeoutMs });
      this.log.info({ ifname: name }, 'created kernel WireGuard link');
    } catch (err) {
      // Lost a race with another creator: fine if what exists now is WireGuard.
      if (errnoName(err) === 'EEXIST' && (await this.getDevice(name)) !== null) return;
      throw new GenlError(`genl: create link ${name} (kind wireguard): ${(err as Error).message}`, { cause: err });
    }
  }

  /** Dumps the device (all messages merged); null when no such link. Rejects when the link is not WireGuard. */
  async getDevice(name: string): Promise<WgDevice | null> {
    checkIfname(name);
    this.assertOpen();
    for (let attempt = 0; ; attempt++) {
      const msgs = await this.request(`get ${name}`, WG_CMD_GET_DEVICE, encodeGetDevice(name), NLM_F_DUMP);
      const err = errorOf(msgs);
      if (err === osc.errno.ENODEV) return null;
      if (err === osc.errno.EOPNOTSUPP) throw new GenlError(`genl: get ${name}: link ${name} exists but is not a WireGuard device`, { errno: err });
      if (err !== 0) throw new GenlError(`genl: get ${name}: ${errName(err)}`, { errno: err });
      // The device changed during a multi-part dump: the parts may not agree; dump again.
      if (msgs.some((m) => (m.flags & NLM_F_DUMP_INTR) !== 0) && attempt < 3) continue;
      return parseDump(name, msgs.map(genlPayload), DEFAULT_DUMP_LIMITS, (k) => this.cache.publicOf(k));
    }
  }

  /**
   * Applies a patch, split into messages of at most `messageBudget` bytes of peers. Not atomic
   * across messages, nor rolled back within one: on failure, re-read the device and diff again.
   */
  async setDevice(name: string, update: WgDeviceUpdate): Promise<void> {
    this.assertOpen();
    const u = normalizeUpdate(name, update);
    const msgs = encodeSetDevice(name, u, this.budget);
    for (let i = 0; i < msgs.length; i++) {
      const what = msgs.length > 1 ? `set ${name} (message ${i + 1}/${msgs.length})` : `set ${name}`;
      const reply = await this.request(what, WG_CMD_SET_DEVICE, msgs[i]!, 0);
      const err = errorOf(reply);
      if (err === 0) continue;
      if (err === osc.errno.ENODEV) throw new GenlError(`genl: ${what}: no such device`, { errno: err });
      const partial = i > 0 || (u.peers?.length ?? 0) > 1 ? '; the update may be partly applied: re-read the device and diff again' : '';
      throw new GenlError(`genl: ${what}: ${errName(err)}${partial}`, { errno: err });
    }
  }

  /** Deletes the WireGuard link; succeeds when it does not exist; refuses a link that is not WireGuard. */
  async deleteDevice(name: string): Promise<void> {
    checkIfname(name);
    this.assertOpen();
    if ((await this.getDevice(name)) === null) return;
    try {
      await this.rt.delLink({}, { ifname: name }, { timeout: this.timeoutMs });
      this.log.info({ ifname: name }, 'deleted kernel WireGuard link');
    } catch (err) {
      if (errnoName(err) === 'ENODEV') return;
      throw new GenlError(`genl: delete link ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Closes the netlink sockets; links stay. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.genl.socket.close();
    this.rt.socket.close();
  }

  private async request(what: string, cmd: number, payload: Buffer, flags: number): Promise<NetlinkMessage[]> {
    const header = Buffer.from([cmd, WG_GENL_VERSION, 0, 0]);
    try {
      const [msgs] = await this.genl.socket.request(this.family, [header, payload], { flags, timeout: this.timeoutMs, checkError: false });
      return msgs;
    } catch (err) {
      throw new GenlError(`genl: ${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new WireGuardError('wireguard: kernel backend is closed');
  }
}

/** 0 when the reply is data or an ACK; the positive errno of an ERROR message otherwise. */
function errorOf(msgs: readonly NetlinkMessage[]): number {
  const e = msgs.find((m) => m.type === NLMSG_ERROR);
  if (!e) return 0;
  if (e.data.length < 4) return osc.errno.EPROTO;
  return -e.data.readInt32LE(0);
}

function genlPayload(m: NetlinkMessage): Buffer {
  if (m.data.length < 4) throw new GenlError('genl: reply shorter than the generic netlink header');
  return m.data.subarray(4);
}

function errName(errno: number): string {
  const name = Object.entries(osc.errno).find(([, v]) => v === errno)?.[0];
  return name ? `${name} (errno ${errno})` : `errno ${errno}`;
}

function errnoName(err: unknown): string | undefined {
  return /Request rejected: (\w+)/.exec((err as Error)?.message ?? '')?.[1];
}
