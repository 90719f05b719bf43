/**
 * A small source-address allow list (CIDRs), used to keep the forwarder from being an open
 * resolver: only clients inside the cluster (and loopback) may have out-of-zone names resolved.
 * Pure; parsing validates every CIDR.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { expandIPv6 } from './names.ts';

/** Error for a CIDR the ACL cannot use, e.g. `dns acl: invalid CIDR "10.0.0.0/33"`. */
export class AclError extends Error {
  override name = 'AclError';
}

interface Net4 { readonly family: 4; readonly base: number; readonly mask: number }
interface Net6 { readonly family: 6; readonly base: bigint; readonly mask: bigint }

function v4(ip: string): number {
  const o = ip.split('.');
  return ((Number(o[0]) << 24) >>> 0) + (Number(o[1]) << 16) + (Number(o[2]) << 8) + Number(o[3]);
}

/** Matches addresses against a fixed list of CIDRs. IPv4-mapped IPv6 sources match IPv4 CIDRs. */
export class SourceAcl {
  readonly #nets: (Net4 | Net6)[];

  /** Throws {@link AclError} on an invalid CIDR. */
  constructor(cidrs: readonly string[]) {
    this.#nets = cidrs.map((c) => {
      const [addr, len, extra] = c.split('/');
      const prefix = Number(len);
      if (extra !== undefined || len === undefined || !/^\d{1,3}$/.test(len)) throw new AclError(`dns acl: invalid CIDR ${JSON.stringify(c)}`);
      if (isIPv4(addr) && prefix <= 32) {
        const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
        return { family: 4, base: (v4(addr) & mask) >>> 0, mask };
      }
      const hex = expandIPv6(addr);
      if (hex !== undefined && prefix <= 128) {
        const mask = prefix === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - prefix)) - 1n);
        return { family: 6, base: BigInt(`0x${hex}`) & mask, mask };
      }
      throw new AclError(`dns acl: invalid CIDR ${JSON.stringify(c)}`);
    });
  }

  /** True when `ip` (as from `rinfo.address` / `socket.remoteAddress`) is inside one of the CIDRs. */
  allows(ip: string | undefined): boolean {
    if (ip === undefined) return false;
    let addr = ip;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
    if (mapped) addr = mapped[1];
    if (isIPv4(addr)) {
      const n = v4(addr);
      return this.#nets.some((net) => net.family === 4 && ((n & net.mask) >>> 0) === net.base);
    }
    const hex = expandIPv6(addr.split('%')[0]);
    if (hex === undefined) return false;
    const n = BigInt(`0x${hex}`);
    return this.#nets.some((net) => net.family === 6 && (n & net.mask) === net.base);
  }
}
