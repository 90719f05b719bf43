/**
 * Entry point of the WireGuard backends: {@link createWireGuardBackend} picks and opens one, and
 * the contract, keys, errors and the in-memory fake are re-exported for the rest of weft.
 */
import { access, constants as fsc } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Logger } from 'pino';
import type { WireGuardBackend } from './backend.ts';
import { BackendUnavailableError } from './errors.ts';
import { KernelWireGuardBackend, type KernelOptions } from './kernel.ts';
import { uapiRequest } from './uapi.ts';
import { UserspaceWireGuardBackend, type UserspaceOptions } from './userspace.ts';

export type { WgBackendKind, WgDevice, WgDeviceUpdate, WgPeer, WgPeerUpdate, WireGuardBackend } from './backend.ts';
export { BackendUnavailableError, GenlError, UapiError, WgInputError, WireGuardError } from './errors.ts';
export { FakeWireGuardBackend } from './fake.ts';
export { KernelWireGuardBackend } from './kernel.ts';
export { UserspaceWireGuardBackend } from './userspace.ts';
export { canonicalCIDR, canonicalEndpoint } from './addr.ts';
export {
  KeyError,
  KeyFileError,
  base64ToHex,
  generateKeyPair,
  generatePrivateKey,
  hexToBase64,
  isValidKey,
  loadOrCreatePrivateKey,
  publicKeyFromPrivate,
} from './keys.ts';

/** Options of {@link createWireGuardBackend}. */
export interface CreateBackendOptions {
  /** 'auto' = kernel when the generic netlink family resolves, else userspace when wireguard-go is on PATH. */
  readonly kind: 'auto' | 'kernel' | 'userspace';
  /** Parent logger; the backend logs through a child `{ component: 'wireguard' }`. */
  readonly logger: Logger;
  /** Passed to the userspace backend. */
  readonly userspace?: Omit<UserspaceOptions, 'logger'>;
  /** Passed to the kernel backend. */
  readonly kernel?: Omit<KernelOptions, 'logger'>;
  /** PATH used to find wireguard-go; default `process.env.PATH`. */
  readonly pathEnv?: string;
  /**
   * The interface the agent will manage. With 'auto', if a wireguard-go already serves it (a
   * previous run chose userspace), userspace is chosen so the running datapath is adopted rather
   * than refused by the kernel backend.
   */
  readonly ifname?: string;
}

/**
 * Opens the requested backend, or for 'auto' the kernel one if the `wireguard` generic netlink
 * family resolves and the userspace one otherwise, logging which and why. Rejects with
 * {@link BackendUnavailableError} when the requested one (or, for 'auto', neither) is available.
 */
export async function createWireGuardBackend(opts: CreateBackendOptions): Promise<WireGuardBackend> {
  const log = opts.logger.child({ component: 'wireguard' });
  const userspace = async (reason: string): Promise<WireGuardBackend> => {
    const exe = opts.userspace?.wireguardGo ?? 'wireguard-go';
    const found = await findExecutable(exe, opts.pathEnv ?? process.env.PATH ?? '');
    if (!found) throw new BackendUnavailableError(`wireguard: userspace: ${exe} not found on PATH`);
    log.info({ backend: 'userspace', wireguardGo: found, reason }, `WireGuard backend: userspace (${reason})`);
    return new UserspaceWireGuardBackend({ ...opts.userspace, wireguardGo: found, logger: log });
  };
  const kernel = () => KernelWireGuardBackend.open({ ...opts.kernel, logger: log });

  switch (opts.kind) {
    case 'kernel': {
      const b = await kernel();
      log.info({ backend: 'kernel', reason: 'requested' }, 'WireGuard backend: kernel (requested)');
      return b;
    }
    case 'userspace':
      return userspace('requested');
    case 'auto': {
      if (opts.ifname !== undefined && (await wireguardGoServes(opts.ifname, opts.userspace?.socketDir ?? '/var/run/wireguard'))) {
        return userspace(`wireguard-go already serves ${opts.ifname}; adopting it`);
      }
      let kernelWhy: string;
      try {
        const b = await kernel();
        log.info({ backend: 'kernel', reason: 'generic netlink family "wireguard" found' }, 'WireGuard backend: kernel (module present)');
        return b;
      } catch (err) {
        if (!(err instanceof BackendUnavailableError)) throw err;
        kernelWhy = err.message;
      }
      try {
        return await userspace(`kernel unavailable: ${kernelWhy}`);
      } catch (err) {
        if (!(err instanceof BackendUnavailableError)) throw err;
        throw new BackendUnavailableError(
          `wireguard: no backend available: ${kernelWhy}; ${err.message}. Load the wireguard kernel module or install wireguard-go`,
          { cause: err },
        );
      }
    }
    default:
      throw new BackendUnavailableError(`wireguard: unknown backend kind ${JSON.stringify(String((opts as { kind: unknown }).kind))}`);
  }
}

/** True when a wireguard-go answers `get` on the UAPI socket of `ifname`. */
async function wireguardGoServes(ifname: string, socketDir: string): Promise<boolean> {
  if (!/^[A-Za-z0-9_.\-]{1,15}$/.test(ifname)) return false;
  try {
    await uapiRequest(join(socketDir, `${ifname}.sock`), `probe ${ifname}`, 'get=1\n', { timeoutMs: 2000, maxReplyBytes: 64 * 1024 * 1024 });
    return true;
  } catch {
    return false;
  }
}

/** Resolves `name` to an executable path: as given when it contains '/', else searched on `pathEnv`. */
export async function findExecutable(name: string, pathEnv: string): Promise<string | null> {
  const candidates = name.includes('/') ? [name] : pathEnv.split(delimiter).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    if (await new Promise<boolean>((r) => access(c, fsc.X_OK, (e) => r(!e)))) return c;
  }
  return null;
}
