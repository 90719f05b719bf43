/**
 * WireGuard key rotation (issue 9): a new private key is generated, persisted atomically (0600,
 * fsync, rename over `<state-dir>/wg.key`), put on the device and published in the node record;
 * every peer sees the new public key through the mesh and replaces the peer. Rotations run one at
 * a time, on demand (`weft rotate-key` -> `POST /v1/keys/rotate`) and on a schedule (`--key-rotation`,
 * off by default). Established TCP connections survive: the outage is the gossip delay of the
 * new record plus one handshake, which TCP retransmission covers.
 */
import type { Logger } from 'pino';
import { generatePrivateKey, publicKeyFromPrivate, writePrivateFile } from '../wireguard/keys.ts';

/** Rotation failed (file, device or publication); the old key stays in force when the file was not replaced. */
export class KeyRotationError extends Error {
  override name = 'KeyRotationError';
}

/** A freshly written key. */
export interface RotatedKey {
  readonly privateKey: string;
  readonly publicKey: string;
  /** ms since the epoch. */
  readonly createdAt: number;
}

/**
 * Writes a new private key to `path` atomically ({@link writePrivateFile}: a 0600 temporary file in
 * the same directory, fsynced, renamed over the old one, then the directory fsynced). A crash
 * leaves either the old or the new key, never a partial file.
 */
export async function writeNewPrivateKey(path: string, clock: () => number = Date.now, random?: (n: number) => Uint8Array): Promise<RotatedKey> {
  const privateKey = generatePrivateKey(random);
  try {
    await writePrivateFile(path, `${privateKey}\n`, 'replace');
  } catch (err) {
    throw new KeyRotationError(`rotation: cannot write the new key to ${path}: ${(err as Error).message}`, { cause: err });
  }
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey), createdAt: clock() };
}

/** What the rotator drives: the agent (device + record). */
export interface KeyRotationTarget {
  /** Puts the new key on the device and publishes the new public key. */
  rotateKey(next: RotatedKey, trigger: string): Promise<void>;
}

/** Options of {@link KeyRotator}. */
export interface KeyRotatorOptions {
  /** `<state-dir>/wg.key`. */
  readonly keyPath: string;
  readonly target: KeyRotationTarget;
  readonly logger: Logger;
  /** Scheduled rotation period in ms; 0 = off. */
  readonly everyMs: number;
  readonly clock?: () => number;
  readonly random?: (n: number) => Uint8Array;
}

/** One rotation at a time; concurrent requests share the running one. */
export class KeyRotator {
  readonly #o: KeyRotatorOptions;
  #running: Promise<{ publicKey: string; createdAt: number }> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: KeyRotatorOptions) {
    this.#o = opts;
  }

  /** Starts the schedule (no-op when `everyMs` is 0). A failed scheduled rotation is logged and retried at the next period. */
  start(): void {
    if (this.#o.everyMs <= 0 || this.#timer) return;
    this.#timer = setInterval(() => {
      this.rotate('schedule').catch((err: unknown) => this.#o.logger.error({ err }, 'scheduled key rotation failed; retrying at the next period'));
    }, this.#o.everyMs);
    this.#timer.unref();
  }

  /**
   * Stops the schedule and waits for a rotation already running, so no key is applied to an agent
   * that is shutting down after this resolves. Never rejects (the rotation's own caller sees its error).
   */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running?.catch(() => {});
  }

  /** Rotates now; resolves with the new public key. Rejects with {@link KeyRotationError}. */
  rotate(trigger: string): Promise<{ publicKey: string; createdAt: number }> {
    if (this.#running) return this.#running;
    this.#running = (async () => {
      const next = await writeNewPrivateKey(this.#o.keyPath, this.#o.clock, this.#o.random);
      try {
        await this.#o.target.rotateKey(next, trigger);
      } catch (err) {
        // The file already holds the new key: a restart would use it, so say so.
        throw new KeyRotationError(`rotation: new key written but not applied (a restart applies it): ${(err as Error).message}`, { cause: err });
      }
      return { publicKey: next.publicKey, createdAt: next.createdAt };
    })().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }
}
