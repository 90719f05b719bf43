/**
 * Mesh key rotation (issue 9) on one node: the live {@link Keyring} the mesh seals and opens with,
 * plus its persisted copy `<state-dir>/mesh-keyring.json` (0600, written atomically), so a restarted
 * agent keeps the keys an operator installed. The cluster-wide procedure (`weft mesh-key rotate`):
 * 1. install the new key on every node (each still seals with the old key, opens both);
 * 2. switch the primary to the new key on every node (nodes not switched yet still open it);
 * 3. retire the old key on every node.
 * At every step each pair of nodes can open each other's packets, so the mesh never partitions.
 * Keys are only ever shown as ids (the first 8 bytes of their SHA-256, hex); never logged.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Keyring } from '../../mesh/index.ts';
import { ApiError, type ApiServer } from '../api/server.ts';
import { writePrivateFile } from '../wireguard/keys.ts';

/** A bad mesh key operation (unknown key, removing the primary, bad key text, unreadable state). */
export class MeshKeyOpError extends Error {
  override name = 'MeshKeyOpError';
}

/** The public id of a mesh key: first 8 bytes of SHA-256, hex. Safe to print and log. */
export function meshKeyId(key: Uint8Array): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

/** Parses a base64 32-byte key. */
export function parseMeshKey(b64: unknown): Uint8Array {
  if (typeof b64 !== 'string' || b64.length > 64) throw new MeshKeyOpError('mesh-key: a key must be a base64 string of 32 bytes');
  const k = Buffer.from(b64.trim(), 'base64');
  if (k.length !== 32 || k.toString('base64') !== b64.trim()) throw new MeshKeyOpError('mesh-key: a key must be a base64 string of 32 bytes');
  return new Uint8Array(k);
}

/** What `GET /v1/mesh-key` returns: ids only. */
export interface MeshKeyList {
  readonly primary: string;
  readonly keys: readonly string[];
}

interface Persisted {
  readonly version: 1;
  /** base64 keys, primary first. */
  readonly keys: readonly string[];
  /** Ids of retired keys: a configured key among them is not re-installed at startup. */
  readonly retired?: readonly string[];
}

/** The live keyring plus its persisted copy. Operations are serialized and idempotent. */
export class MeshKeyStore {
  readonly keyring: Keyring;
  readonly #path: string;
  readonly #log: Logger;
  /** Mirror of the keyring's keys, primary first (the Keyring does not list its keys). */
  #keys: Uint8Array[];
  #retired: string[];
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, keys: Uint8Array[], retired: string[], log: Logger) {
    this.#path = path;
    this.#keys = keys;
    this.#retired = retired;
    this.#log = log;
    this.keyring = new Keyring(keys[0]!, keys.slice(1));
  }

  /**
   * Opens the store: the persisted keyring when there is one (the configured `--mesh-key-file` key
   * is then installed as an extra key if it is not in it and was never retired here), else a
   * keyring of the configured key alone. After a rotation, operators update the key file too.
   */
  static async open(stateDir: string, configured: Uint8Array, log: Logger): Promise<MeshKeyStore> {
    const path = join(stateDir, 'mesh-keyring.json');
    let keys: Uint8Array[] = [new Uint8Array(configured)];
    let retired: string[] = [];
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new MeshKeyOpError(`mesh-key: cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (text !== undefined) {
      try {
        const p = JSON.parse(text) as Persisted;
        if (p.version !== 1 || !Array.isArray(p.keys) || p.keys.length === 0 || p.keys.length > 16) throw new Error('unexpected shape');
        keys = p.keys.map((k) => parseMeshKey(k));
        retired = Array.isArray(p.retired) ? p.retired.filter((x) => typeof x === 'string').slice(0, 64) : [];
      } catch (err) {
        throw new MeshKeyOpError(`mesh-key: ${path} is not a keyring written by weft: ${(err as Error).message}`, { cause: err });
      }
      const id = meshKeyId(configured);
      if (!keys.some((k) => Buffer.compare(k, configured) === 0)) {
        if (retired.includes(id)) log.warn({ keyId: id }, 'the configured mesh key was retired on this node and is not used; update --mesh-key-file');
        else keys.push(new Uint8Array(configured));
      }
    }
    const store = new MeshKeyStore(path, keys, retired, log);
    if (text !== undefined) log.info({ primary: meshKeyId(keys[0]!), keys: keys.map(meshKeyId) }, 'mesh keyring loaded from the state directory');
    return store;
  }

  /** Key ids, primary first. */
  list(): MeshKeyList {
    return { primary: meshKeyId(this.#keys[0]!), keys: this.#keys.map(meshKeyId) };
  }

  /** Step 1: accept packets sealed with `key` (still sealing with the current primary). */
  install(key: Uint8Array): Promise<MeshKeyList> {
    return this.#op('mesh-key-installed', key, (k) => {
      if (this.#find(k) < 0) this.#keys.push(new Uint8Array(k));
      this.keyring.install(k);
    });
  }

  /** Step 2: seal with `key`, which must be installed first (so a typo cannot cut this node off). */
  use(key: Uint8Array): Promise<MeshKeyList> {
    return this.#op('mesh-key-primary', key, (k) => {
      const i = this.#find(k);
      if (i < 0) throw new MeshKeyOpError(`mesh-key: key ${meshKeyId(k)} is not installed; install it on every node first`);
      this.#keys.unshift(...this.#keys.splice(i, 1));
      this.keyring.use(k);
    });
  }

  /** Step 3: stop accepting `key`. The primary cannot be retired. */
  remove(key: Uint8Array): Promise<MeshKeyList> {
    return this.#op('mesh-key-retired', key, (k) => {
      const i = this.#find(k);
      if (i === 0) throw new MeshKeyOpError(`mesh-key: key ${meshKeyId(k)} is the primary; switch the primary first`);
      if (i > 0) this.#keys.splice(i, 1);
      this.keyring.remove(k);
      if (!this.#retired.includes(meshKeyId(k))) this.#retired = [...this.#retired, meshKeyId(k)].slice(-64);
    });
  }

  #find(k: Uint8Array): number {
    return this.#keys.findIndex((x) => Buffer.compare(x, k) === 0);
  }

  #op(event: string, key: Uint8Array, change: (k: Uint8Array) => void): Promise<MeshKeyList> {
    const run = async (): Promise<MeshKeyList> => {
      const before = this.#keys.map((k) => new Uint8Array(k));
      const retiredBefore = this.#retired;
      change(key);
      try {
        await this.#persist();
      } catch (err) {
        // Keep memory and disk in step: undo the live change when it could not be persisted.
        this.#keys = before;
        this.#retired = retiredBefore;
        for (const k of before) this.keyring.install(k);
        this.keyring.use(before[0]!);
        if (!before.some((b) => Buffer.compare(b, key) === 0)) this.keyring.remove(key);
        throw new MeshKeyOpError(`mesh-key: cannot persist the keyring: ${(err as Error).message}`, { cause: err });
      }
      const list = this.list();
      this.#log.info({ audit: true, event, keyId: meshKeyId(key), primary: list.primary, keys: list.keys }, 'mesh keyring changed');
      return list;
    };
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => {});
    return next;
  }

  async #persist(): Promise<void> {
    const body: Persisted = { version: 1, keys: this.#keys.map((k) => Buffer.from(k).toString('base64')), retired: this.#retired };
    await writePrivateFile(this.#path, `${JSON.stringify(body)}\n`, 'replace');
  }
}

/**
 * Mounts `GET /v1/mesh-key` (ids) and `POST /v1/mesh-key/{install,use,remove}` with body
 * `{ "key": "<base64>" }`, on the unix socket only (never TCP). A bad key or step is a 400.
 */
export function mountMeshKeyRoutes(api: ApiServer, store: MeshKeyStore): void {
  api.route('GET', '/v1/mesh-key', () => ({ status: 200, json: store.list() }));
  for (const op of ['install', 'use', 'remove'] as const) {
    api.route('POST', `/v1/mesh-key/${op}`, async ({ body }) => {
      try {
        const key = parseMeshKey((body as { key?: unknown } | undefined)?.key);
        return { status: 200, json: await store[op](key) };
      } catch (err) {
        if (err instanceof MeshKeyOpError) throw new ApiError(400, 400, err.message);
        throw err;
      }
    });
  }
}
