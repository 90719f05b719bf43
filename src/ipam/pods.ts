/**
 * Pod address allocation from the node's block(s), persisted under the state directory so that an
 * agent restart never hands an address out twice. Allocations are keyed by (containerId, ifname),
 * the CNI attachment key, and carry the pod name/namespace for DNS. Every mutation is serialized
 * and written atomically (temp file + fsync + rename + directory fsync) before it is acknowledged.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { PodRecord } from '../model.ts';
import { cidrHas, cidrLast, familyBits, formatAddr, formatCidr, parseAddr, parseCidr, type Cidr } from './cidr.ts';

/** The block has no free address left. */
export class IpamExhaustedError extends Error {
  override name = 'IpamExhaustedError';
}

/** The persisted state could not be read or written, or a request is malformed. */
export class IpamStateError extends Error {
  override name = 'IpamStateError';
}

/** Bounds on caller input (CNI values come from the container runtime). */
export const LIMITS = Object.freeze({ containerId: 256, ifname: 15, podName: 253, podNamespace: 253, allocations: 65_536 });

/** One address handed to one attachment. */
export interface PodAllocation {
  readonly containerId: string;
  readonly ifname: string;
  /** Address without prefix length. */
  readonly ip: string;
  /** The block it came from (canonical CIDR). */
  readonly block: string;
  readonly podName?: string;
  readonly podNamespace?: string;
  /** ms since the epoch. */
  readonly allocatedAt: number;
}

/** Identity of a CNI attachment. */
export interface AttachmentKey {
  readonly containerId: string;
  readonly ifname: string;
}

/** What ADD asks for. */
export interface AllocateRequest extends AttachmentKey {
  readonly podName?: string;
  readonly podNamespace?: string;
}

/** Options of {@link PodIpam.open}. */
export interface PodIpamOptions {
  /** The agent's state directory; the file is `<stateDir>/ipam/pods.json`. */
  readonly stateDir: string;
  /** The node's current pod blocks (one per family). */
  readonly blocks: readonly string[];
  readonly logger: Logger;
  /** Clock, ms since the epoch (injected for tests). */
  readonly now?: () => number;
}

interface StateFile {
  version: 1;
  /** Next-fit cursor per block: the last address handed out, so a released address is not reused at once. */
  cursors: Record<string, string>;
  allocations: PodAllocation[];
}

const keyOf = (k: AttachmentKey) => `${k.containerId}\u0000${k.ifname}`;

/** Validates an attachment key; throws {@link IpamStateError} naming the bad field. */
export function checkAttachment(k: AttachmentKey): void {
  if (typeof k.containerId !== 'string' || k.containerId.length === 0 || k.containerId.length > LIMITS.containerId) {
    throw new IpamStateError(`ipam: containerId must be 1..${LIMITS.containerId} characters`);
  }
  if (typeof k.ifname !== 'string' || !/^[^\s/:]{1,15}$/.test(k.ifname)) {
    throw new IpamStateError('ipam: ifname must be 1..15 characters without whitespace, "/" or ":"');
  }
}

/**
 * The allocator. Create with {@link PodIpam.open}; all methods are safe to call concurrently (they
 * queue on one internal lock) and every mutation is on disk before its promise resolves.
 */
export class PodIpam {
  readonly #path: string;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #now: () => number;
  #blocks: Cidr[];
  #state: StateFile;
  #byKey = new Map<string, PodAllocation[]>();
  #used = new Set<string>();
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, blocks: Cidr[], state: StateFile, log: Logger, now: () => number) {
    this.#dir = dir;
    this.#path = join(dir, 'pods.json');
    this.#blocks = blocks;
    this.#state = state;
    this.#log = log;
    this.#now = now;
    this.#reindex();
  }

  /**
   * Loads (or creates) the state under `<stateDir>/ipam/`. Entries that fail validation are dropped
   * with a warning; an unreadable or unparsable file is an {@link IpamStateError}, because
   * guessing could hand out an address twice.
   */
  static async open(opts: PodIpamOptions): Promise<PodIpam> {
    const dir = join(opts.stateDir, 'ipam');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const blocks = opts.blocks.map((b) => checkBlock(b));
    let state: StateFile = { version: 1, cursors: {}, allocations: [] };
    const path = join(dir, 'pods.json');
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new IpamStateError(`ipam: read ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (text !== undefined) {
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch (err) {
        throw new IpamStateError(`ipam: ${path} is not valid JSON; move it aside only if no pod on this node holds an address`, { cause: err });
      }
      state = sanitize(raw, opts.logger);
    }
    return new PodIpam(dir, blocks, state, opts.logger, opts.now ?? Date.now);
  }

  /** Current blocks (canonical). */
  get blocks(): string[] {
    return this.#blocks.map(formatCidr);
  }

  /**
   * Replaces the node's blocks (after a re-claim). Returns the allocations now outside every block:
   * the agent tells those pods to restart; their entries stay until DEL or GC releases them.
   */
  setBlocks(blocks: readonly string[]): PodAllocation[] {
    this.#blocks = blocks.map((b) => checkBlock(b));
    return this.list().filter((a) => !this.#inBlocks(a.ip));
  }

  /**
   * Allocates one address per block for an attachment, or returns the existing ones when the same
   * attachment asks again (runtimes retry ADD). Throws {@link IpamExhaustedError} when a block is
   * full; nothing is allocated then.
   */
  async allocate(req: AllocateRequest): Promise<PodAllocation[]> {
    checkAttachment(req);
    const podName = boundedOpt(req.podName, LIMITS.podName, 'podName');
    const podNamespace = boundedOpt(req.podNamespace, LIMITS.podNamespace, 'podNamespace');
    return this.#locked(async () => {
      const existing = this.#byKey.get(keyOf(req));
      if (existing && existing.every((a) => this.#inBlocks(a.ip)) && existing.length === this.#blocks.length) return existing;
      if (this.#blocks.length === 0) throw new IpamStateError('ipam: this node has no pod block yet');
      if (this.#state.allocations.length >= LIMITS.allocations) throw new IpamExhaustedError('ipam: too many allocations on this node');
      const fresh: PodAllocation[] = [];
      const cursors = { ...this.#state.cursors };
      for (const block of this.#blocks) {
        const key = formatCidr(block);
        const ip = this.#pick(block, cursors[key]);
        cursors[key] = ip;
        fresh.push({ containerId: req.containerId, ifname: req.ifname, ip, block: key, ...(podName ? { podName } : {}), ...(podNamespace ? { podNamespace } : {}), allocatedAt: this.#now() });
      }
      const rest = this.#state.allocations.filter((a) => keyOf(a) !== keyOf(req));
      await this.#commit({ version: 1, cursors, allocations: [...rest, ...fresh] });
      return fresh;
    });
  }

  /** Releases an attachment's addresses; idempotent (returns [] when it held none). */
  async release(key: AttachmentKey): Promise<PodAllocation[]> {
    checkAttachment(key);
    return this.#locked(async () => {
      const held = this.#byKey.get(keyOf(key)) ?? [];
      if (held.length === 0) return [];
      await this.#commit({ ...this.#state, allocations: this.#state.allocations.filter((a) => keyOf(a) !== keyOf(key)) });
      return held;
    });
  }

  /** Releases every allocation whose attachment is not in `valid` (CNI GC); returns what it released. */
  async gc(valid: Iterable<AttachmentKey>): Promise<PodAllocation[]> {
    const keep = new Set<string>();
    for (const v of valid) keep.add(keyOf(v));
    return this.#locked(async () => {
      const gone = this.#state.allocations.filter((a) => !keep.has(keyOf(a)));
      if (gone.length > 0) await this.#commit({ ...this.#state, allocations: this.#state.allocations.filter((a) => keep.has(keyOf(a))) });
      return gone;
    });
  }

  /** The addresses an attachment holds (empty when none). */
  get(key: AttachmentKey): PodAllocation[] {
    return this.#byKey.get(keyOf(key)) ?? [];
  }

  /** Every allocation, in allocation order. */
  list(): PodAllocation[] {
    return [...this.#state.allocations];
  }

  /**
   * Pods with a name and namespace, as published in the mesh for DNS. When one pod has several
   * sandboxes (a restarted pod whose old sandbox was not deleted yet), only the newest sandbox's
   * addresses are published, so a name never resolves to a dead address.
   */
  pods(): PodRecord[] {
    const byPod = new Map<string, { name: string; namespace: string; containerId: string; at: number; ips: string[] }>();
    for (const a of this.#state.allocations) {
      if (!a.podName || !a.podNamespace) continue;
      const k = `${a.podNamespace}/${a.podName}`;
      const p = byPod.get(k);
      if (!p || (p.containerId !== a.containerId && a.allocatedAt >= p.at)) {
        byPod.set(k, { name: a.podName, namespace: a.podNamespace, containerId: a.containerId, at: a.allocatedAt, ips: [a.ip] });
      } else if (p.containerId === a.containerId && !p.ips.includes(a.ip)) {
        p.ips.push(a.ip);
        p.at = Math.max(p.at, a.allocatedAt);
      }
    }
    return [...byPod.values()].map(({ name, namespace, ips }) => ({ name, namespace, ips }));
  }

  #inBlocks(ip: string): boolean {
    const { family, value } = parseAddr(ip);
    return this.#blocks.some((b) => cidrHas(b, family, value));
  }

  /** Next-fit after the cursor, skipping the network, gateway (first host) and IPv4 broadcast addresses. */
  #pick(block: Cidr, cursor: string | undefined): string {
    const first = block.base + 2n;
    const last = block.family === 4 ? cidrLast(block) - 1n : cidrLast(block);
    if (last < first) throw new IpamExhaustedError(`ipam: block ${formatCidr(block)} has no room for pods`);
    const span = last - first + 1n;
    let start = first;
    if (cursor) {
      const c = parseAddr(cursor);
      if (c.family === block.family && c.value >= first && c.value <= last) start = c.value + 1n > last ? first : c.value + 1n;
    }
    // At most used+1 probes find a free address when one exists.
    const limit = BigInt(this.#used.size) + 1n < span ? BigInt(this.#used.size) + 1n : span;
    for (let k = 0n; k < limit; k++) {
      const v = first + ((start - first + k) % span);
      const ip = formatAddr(block.family, v);
      if (!this.#used.has(ip)) return ip;
    }
    throw new IpamExhaustedError(`ipam: no free address left in ${formatCidr(block)} (${span} usable, all allocated)`);
  }

  async #commit(next: StateFile): Promise<void> {
    const tmp = `${this.#path}.tmp-${process.pid}`;
    const body = `${JSON.stringify(next)}\n`;
    try {
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.#path);
      const dh = await open(this.#dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw new IpamStateError(`ipam: write ${this.#path}: ${(err as Error).message}`, { cause: err });
    }
    this.#state = next;
    this.#reindex();
  }

  #reindex(): void {
    this.#byKey = new Map();
    this.#used = new Set();
    for (const a of this.#state.allocations) {
      const k = keyOf(a);
      this.#byKey.set(k, [...(this.#byKey.get(k) ?? []), a]);
      this.#used.add(a.ip);
    }
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => {});
    return run;
  }
}

function checkBlock(b: string): Cidr {
  const c = parseCidr(b, true);
  if (c.prefix > familyBits(c.family) - 2) throw new IpamStateError(`ipam: block ${b} is too small`);
  return c;
}

function boundedOpt(v: unknown, max: number, what: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || v.length > max || /[\u0000-\u001f]/.test(v)) throw new IpamStateError(`ipam: ${what} must be a string of at most ${max} printable characters`);
  return v;
}

/** Keeps only well-formed entries of a loaded state file; drops the rest with a warning. */
function sanitize(raw: unknown, log: Logger): StateFile {
  if (!raw || typeof raw !== 'object' || (raw as { version?: unknown }).version !== 1 || !Array.isArray((raw as { allocations?: unknown }).allocations)) {
    throw new IpamStateError('ipam: pods.json has an unknown format (want version 1)');
  }
  const r = raw as { cursors?: unknown; allocations: unknown[] };
  const allocations: PodAllocation[] = [];
  const seen = new Set<string>();
  let dropped = 0;
  for (const a of r.allocations) {
    try {
      const x = a as PodAllocation;
      checkAttachment(x);
      const ip = formatAddr(parseAddr(x.ip).family, parseAddr(x.ip).value);
      const block = formatCidr(parseCidr(x.block));
      if (seen.has(ip) || typeof x.allocatedAt !== 'number') throw new Error('duplicate or malformed');
      seen.add(ip);
      const podName = boundedOpt(x.podName, LIMITS.podName, 'podName');
      const podNamespace = boundedOpt(x.podNamespace, LIMITS.podNamespace, 'podNamespace');
      allocations.push({ containerId: x.containerId, ifname: x.ifname, ip, block, ...(podName ? { podName } : {}), ...(podNamespace ? { podNamespace } : {}), allocatedAt: x.allocatedAt });
    } catch {
      dropped++;
    }
  }
  if (dropped > 0) log.warn({ dropped }, 'ipam: dropped malformed entries from pods.json');
  const cursors: Record<string, string> = {};
  if (r.cursors && typeof r.cursors === 'object') {
    for (const [k, v] of Object.entries(r.cursors as Record<string, unknown>)) if (typeof v === 'string' && v.length <= 45) cursors[k] = v;
  }
  return { version: 1, cursors, allocations };
}
