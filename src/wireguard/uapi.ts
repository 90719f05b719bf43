/**
 * The WireGuard cross-platform userspace API (UAPI): the `key=value` text protocol wireguard-go
 * serves on `/var/run/wireguard/<if>.sock`. This file holds the pure encoder and parser and a small
 * bounded, timed client; process management is in `userspace.ts`.
 *
 * Protocol summary (https://www.wireguard.com/xplatform/): a request is `get=1\n\n` or `set=1\n`
 * followed by `key=value` lines and an empty line; the reply ends with `errno=<n>\n\n`. Keys on the
 * wire are hex. A set is applied line by line as it is read: when wireguard-go rejects a line,
 * everything before it has already taken effect (see {@link encodeSet}).
 */
import { createConnection } from 'node:net';
import type { MutableWgPeer, WgDevice, WgDeviceUpdate, WgPeer } from './backend.ts';
import { canonicalCIDR, canonicalEndpoint } from './addr.ts';
import { UapiError } from './errors.ts';
import { base64ToHex, hexToBase64, publicKeyFromPrivate } from './keys.ts';

const ZERO_HEX = '0'.repeat(64);

/**
 * Encodes a (validated, normalized) update as the body of one `set=1` request, without the
 * trailing empty line. Fields absent from the update are not sent, so they stay as they are.
 * Every line sets an absolute value, so re-sending the same update after a partial failure is
 * safe and converges.
 */
export function encodeSet(update: WgDeviceUpdate): string {
  const lines: string[] = ['set=1'];
  if (update.privateKey !== undefined) lines.push(`private_key=${base64ToHex(update.privateKey, 'private key')}`);
  if (update.listenPort !== undefined) lines.push(`listen_port=${update.listenPort}`);
  if (update.fwmark !== undefined) lines.push(`fwmark=${update.fwmark}`);
  if (update.replacePeers) lines.push('replace_peers=true');
  for (const p of update.peers ?? []) {
    lines.push(`public_key=${base64ToHex(p.publicKey, 'public key')}`);
    if (p.remove) {
      lines.push('remove=true');
      continue;
    }
    if (p.updateOnly) lines.push('update_only=true');
    if (p.endpoint !== undefined) lines.push(`endpoint=${p.endpoint}`);
    if (p.persistentKeepalive !== undefined) lines.push(`persistent_keepalive_interval=${p.persistentKeepalive}`);
    if (p.replaceAllowedIPs) lines.push('replace_allowed_ips=true');
    for (const cidr of p.allowedIPs ?? []) lines.push(`allowed_ip=${cidr}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Limits applied while parsing a `get` reply. */
export interface ParseLimits {
  /** Most peers accepted in one reply. */
  readonly maxPeers: number;
  /** Most allowed IPs accepted per peer. */
  readonly maxAllowedIPsPerPeer: number;
}

/** Defaults: far above any real mesh, low enough that a hostile reply cannot exhaust memory. */
export const DEFAULT_PARSE_LIMITS: ParseLimits = { maxPeers: 100_000, maxAllowedIPsPerPeer: 65_536 };

/**
 * Memo of the conversions a `get` reply needs (hex public key -> base64, CIDR and endpoint
 * canonicalization, private -> public key). A resync reads the same 1,000 peers again and again;
 * with the cache, parsing them costs map lookups instead of base64, address parsing and an X25519
 * multiplication. Owned by one backend instance; bounded (cleared when it grows past `maxEntries`).
 * Peer public keys are cached, preshared keys never are.
 */
export class ParseCache {
  readonly maxEntries: number;
  private readonly map = new Map<string, string>();
  private lastPrivate: string | undefined;
  private lastPublic = '';
  constructor(maxEntries = 200_000) {
    this.maxEntries = maxEntries;
  }
  /** `fn(v)` memoized under `kind:v`; throws what fn throws (failures are not cached). */
  get(kind: string, v: string, fn: (v: string) => string): string {
    const k = `${kind}:${v}`;
    const hit = this.map.get(k);
    if (hit !== undefined) return hit;
    const out = fn(v);
    if (this.map.size >= this.maxEntries) this.map.clear();
    this.map.set(k, out);
    return out;
  }
  /** The public key of `privateKey`, remembering only the last one. */
  publicOf(privateKey: string): string {
    if (privateKey !== this.lastPrivate) {
      this.lastPublic = publicKeyFromPrivate(privateKey);
      this.lastPrivate = privateKey;
    }
    return this.lastPublic;
  }
}

/**
 * Parses the lines of a `get=1` reply (everything before `errno=`) into a device. Unknown keys are
 * ignored (newer wireguard-go versions may add some); malformed values throw {@link UapiError}.
 * Pass a {@link ParseCache} kept across calls to make repeated reads of the same device cheap.
 */
export function parseGet(
  name: string,
  lines: readonly string[],
  limits: ParseLimits = DEFAULT_PARSE_LIMITS,
  cache: ParseCache = new ParseCache(),
): WgDevice {
  let privateKey: string | undefined;
  let listenPort = 0;
  let fwmark = 0;
  const peers: MutableWgPeer[] = [];
  let cur: MutableWgPeer | undefined;
  const bad = (line: string, why: string): never => {
    throw new UapiError(`uapi: get ${name}: ${why} in line ${JSON.stringify(line.slice(0, 40))}`);
  };
  const num = (line: string, v: string, max: number): number => {
    if (!/^\d{1,20}$/.test(v)) bad(line, 'not a number');
    const n = Number(v);
    if (n > max) bad(line, 'number out of range');
    return n;
  };
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq <= 0) bad(line, 'no key=value');
    const k = line.slice(0, eq);
    const v = line.slice(eq + 1);
    // Never quote key material in errors.
    const safe = k.endsWith('_key') ? `${k}=…` : line;
    if (k === 'public_key') {
      if (peers.length >= limits.maxPeers) bad(safe, `more than ${limits.maxPeers} peers`);
      cur = { publicKey: cachedKey(cache, safe, v, bad), allowedIPs: [], persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0 };
      peers.push(cur);
      continue;
    }
    if (!cur) {
      switch (k) {
        case 'private_key':
          if (v !== ZERO_HEX) privateKey = hexKey(safe, v, bad);
          break;
        case 'listen_port':
          listenPort = num(line, v, 65535);
          break;
        case 'fwmark':
          fwmark = num(line, v, 0xffffffff);
          break;
        default:
          break;
      }
      continue;
    }
    switch (k) {
      case 'preshared_key':
        if (v !== ZERO_HEX) cur.presharedKey = hexKey(safe, v, bad);
        break;
      case 'endpoint':
        try {
          cur.endpoint = cache.get('e', v, canonicalEndpoint);
        } catch {
          bad(line, 'bad endpoint');
        }
        break;
      case 'persistent_keepalive_interval':
        cur.persistentKeepalive = num(line, v, 65535);
        break;
      case 'last_handshake_time_sec':
        cur.lastHandshake = num(line, v, Number.MAX_SAFE_INTEGER);
        break;
      case 'rx_bytes':
        cur.rxBytes = num(line, v, Number.MAX_SAFE_INTEGER);
        break;
      case 'tx_bytes':
        cur.txBytes = num(line, v, Number.MAX_SAFE_INTEGER);
        break;
      case 'allowed_ip':
        if (cur.allowedIPs.length >= limits.maxAllowedIPsPerPeer) bad(line, `more than ${limits.maxAllowedIPsPerPeer} allowed IPs`);
        try {
          cur.allowedIPs.push(cache.get('c', v, canonicalCIDR));
        } catch {
          bad(line, 'bad allowed IP');
        }
        break;
      default:
        break;
    }
  }
  const outPeers: WgPeer[] = peers.map((p) => ({ ...p }));
  return {
    name,
    ...(privateKey !== undefined ? { privateKey, publicKey: cache.publicOf(privateKey) } : {}),
    listenPort,
    fwmark,
    peers: outPeers,
  };
}

function cachedKey(cache: ParseCache, line: string, v: string, bad: (l: string, w: string) => never): string {
  try {
    return cache.get('k', v, hexToBase64);
  } catch {
    return bad(line, 'bad key');
  }
}

function hexKey(line: string, v: string, bad: (l: string, w: string) => never): string {
  try {
    return hexToBase64(v);
  } catch {
    return bad(line, 'bad key');
  }
}

/** Options of a UAPI request. */
export interface UapiRequestOptions {
  /** Whole-request deadline in ms (connect, write, read). */
  readonly timeoutMs: number;
  /** Largest reply accepted, in bytes; the connection is dropped beyond it. */
  readonly maxReplyBytes: number;
}

/**
 * Sends one request (`body` must end with a newline; the terminating empty line is added) on the
 * UAPI socket at `path` and returns the reply lines before `errno=`. Rejects with
 * {@link UapiError}: `code` 'ENOENT'/'ECONNREFUSED' in `cause` when no daemon listens, errno != 0
 * from the daemon, timeout, oversize or malformed reply.
 */
export function uapiRequest(path: string, what: string, body: string, opts: UapiRequestOptions): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const sock = createConnection({ path });
    const finish = (err: Error | null, lines?: string[]) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(lines!);
    };
    const timer = setTimeout(() => finish(new UapiError(`uapi: ${what}: no complete reply within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    sock.on('error', (err) => finish(new UapiError(`uapi: ${what}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
    sock.on('connect', () => {
      sock.end(`${body}\n`);
    });
    sock.on('data', (buf: Buffer) => {
      size += buf.length;
      if (size > opts.maxReplyBytes) {
        finish(new UapiError(`uapi: ${what}: reply larger than ${opts.maxReplyBytes} bytes`));
        return;
      }
      chunks.push(buf);
      // The reply ends with "errno=<n>\n\n"; check the tail only, so large replies stay linear.
      const tail = buf.length >= 2 ? buf : Buffer.concat(chunks).subarray(-2);
      if (tail[tail.length - 1] === 0x0a && tail[tail.length - 2] === 0x0a) tryParse();
    });
    sock.on('end', () => {
      tryParse();
      finish(new UapiError(`uapi: ${what}: connection closed before the reply ended`));
    });
    const tryParse = () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (!text.endsWith('\n\n')) return;
      const lines = text.slice(0, -2).split('\n');
      const last = lines.pop() ?? '';
      const m = /^errno=(-?\d{1,10})$/.exec(last);
      if (!m) {
        finish(new UapiError(`uapi: ${what}: reply does not end with errno=`));
        return;
      }
      const errno = Number(m[1]);
      if (errno !== 0) {
        finish(new UapiError(`uapi: ${what}: wireguard-go returned errno=${errno}`, { errno }));
        return;
      }
      finish(null, lines);
    };
  });
}

/** True when `err` says nothing is listening on the socket (no daemon for this interface). */
export function isNoDaemon(err: unknown): boolean {
  const code = ((err as { cause?: NodeJS.ErrnoException })?.cause)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}
