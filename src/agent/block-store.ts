/**
 * Persists this node's pod block claim (`<state-dir>/block.json`) so a restarted agent keeps its
 * block and its claim time (which decides conflicts). Written atomically (temp file, fsync, rename).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { BlockClaim, BlockStore } from './ports.ts';

/** The block file exists but cannot be used. */
export class BlockStoreError extends Error {
  override name = 'BlockStoreError';
}

/** File-backed {@link BlockStore}. */
export class FileBlockStore implements BlockStore {
  readonly #path: string;

  constructor(stateDir: string) {
    this.#path = join(stateDir, 'block.json');
  }

  /** The stored claim; undefined when there is none. Rejects on a corrupt file. */
  async load(): Promise<BlockClaim | undefined> {
    let text: string;
    try {
      text = await readFile(this.#path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BlockStoreError(`ipam: read ${this.#path}: ${(err as Error).message}`, { cause: err });
    }
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (err) {
      throw new BlockStoreError(`ipam: ${this.#path} is not JSON`, { cause: err });
    }
    const o = v as { podCIDRs?: unknown; claimedAt?: unknown };
    if (!Array.isArray(o.podCIDRs) || o.podCIDRs.length > 2 || !o.podCIDRs.every((c) => typeof c === 'string' && c.length < 64) || typeof o.claimedAt !== 'number' || !Number.isSafeInteger(o.claimedAt) || o.claimedAt < 0) {
      throw new BlockStoreError(`ipam: ${this.#path} does not hold a valid claim`);
    }
    return { podCIDRs: o.podCIDRs as string[], claimedAt: o.claimedAt };
  }

  /** Writes the claim atomically. */
  async save(claim: BlockClaim): Promise<void> {
    await mkdir(dirname(this.#path), { recursive: true, mode: 0o700 });
    const tmp = `${this.#path}.${randomBytes(4).toString('hex')}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(`${JSON.stringify({ podCIDRs: claim.podCIDRs, claimedAt: claim.claimedAt })}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.#path);
  }

  /** Removes the stored claim (uninstall). */
  async clear(): Promise<void> {
    await unlink(this.#path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/** In-memory {@link BlockStore}: for agents whose claim need not survive the process (tests, benchmarks). */
export class MemoryBlockStore implements BlockStore {
  claim: BlockClaim | undefined;
  async load(): Promise<BlockClaim | undefined> {
    return this.claim;
  }
  async save(c: BlockClaim): Promise<void> {
    this.claim = c;
  }
  async clear(): Promise<void> {
    this.claim = undefined;
  }
}
