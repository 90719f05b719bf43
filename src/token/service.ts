/**
 * Wires tokens into a running agent: the {@link Admitter} over the agent's mesh, the join listener on
 * `<listen addr>:--join-port`, and the local API routes the CLI uses (unix socket only):
 *
 * - `POST /v1/token/create` `{ttl: "1h" | ms, uses, seeds?: ["host:port"], description?}` -> `{token, id, expiresAt}`
 * - `GET  /v1/token/list` -> `{tokens: TokenListing[]}`
 * - `POST /v1/token/revoke` `{id}` -> `{id, revoked: true}`
 * - `POST /v1/node/remove` `{name, reason?}` -> `{name, identityKey?}`
 */
import type { Logger } from 'pino';
import type { MeshHandle } from '../../mesh/api.ts';
import { identityFromSeed } from '../../mesh/crypto.ts';
import { ApiError, type ApiServer } from '../api/server.ts';
import { parseDuration } from '../config.ts';
import { Admitter, TokenOpError } from './admit.ts';
import { JoinServer } from './join-server.ts';
import { TokenFormatError, parseTokenId } from './token.ts';

/** Options of {@link startTokenService}. */
export interface TokenServiceOptions {
  readonly name: string;
  readonly mesh: MeshHandle;
  /** This member's identity seed (signs admissions). Secret. */
  readonly identitySeed: Uint8Array;
  /** The mesh key handed to admitted joiners; the authority is derived from it. Secret. */
  readonly meshKey: Uint8Array;
  /** The live keyring (mesh-key rotation): when given, its primary is handed out and names the authority. */
  readonly keyring?: { primary(): Uint8Array };
  readonly api: ApiServer;
  readonly logger: Logger;
  /** Address the join listener binds and advertises in tokens (the mesh's listen address). */
  readonly listenAddr: string;
  /** 0 = no join listener (tokens can still be created for other seeds). */
  readonly joinPort: number;
  readonly confirmWindowMs?: number;
  readonly clock?: () => number;
  /** The mesh's cluster CIDRs: a joiner's fixed pod CIDR outside them is refused in the handshake. */
  readonly clusterCIDRs?: readonly string[];
}

/** A running token service. */
export interface TokenService {
  readonly admitter: Admitter;
  readonly joinServer: JoinServer | undefined;
  /** The bound join port, 0 when off. */
  readonly joinPort: number;
  /**
   * Calls `fn` after every token create or revoke through this agent's API, and after every join this
   * agent's listener admits (write-through to the Kubernetes Secret mirror). `fn` must not block; a throw is caught and logged. Returns an unsubscribe.
   */
  onTokensChanged(fn: (event: { kind: 'created' | 'revoked' | 'redeemed'; id: string }) => void): () => void;
  close(): Promise<void>;
}

const bad = (err: unknown): never => {
  if (err instanceof TokenOpError || err instanceof TokenFormatError) throw new ApiError(400, 400, err.message);
  throw err;
};

/** Starts the join listener (if enabled) and mounts the token and node routes on the API. */
export async function startTokenService(o: TokenServiceOptions): Promise<TokenService> {
  const clock = o.clock ?? Date.now;
  const identity = identityFromSeed(o.identitySeed);
  let bound = 0;
  const host = o.listenAddr.includes(':') ? `[${o.listenAddr}]` : o.listenAddr;
  const admitter = new Admitter({
    mesh: o.mesh,
    self: { name: o.name, identity },
    meshKey: o.keyring ? () => o.keyring!.primary() : o.meshKey,
    clock,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    confirmWindowMs: o.confirmWindowMs,
    joinAddresses: () => (bound > 0 ? [`${host}:${bound}`] : []),
    ...(o.clusterCIDRs !== undefined ? { clusterCIDRs: o.clusterCIDRs } : {}),
  });
  const listeners = new Set<(event: { kind: 'created' | 'revoked' | 'redeemed'; id: string }) => void>();
  const changed = (event: { kind: 'created' | 'revoked' | 'redeemed'; id: string }): void => {
    for (const fn of listeners) {
      try {
        fn(event);
      } catch (err) {
        o.logger.warn({ err }, 'token change listener failed');
      }
    }
  };
  let joinServer: JoinServer | undefined;
  if (o.joinPort > 0) {
    joinServer = new JoinServer({ admitter, identity, logger: o.logger, clock, onAdmitted: (id) => changed({ kind: 'redeemed', id }) });
    bound = await joinServer.listen(o.listenAddr, o.joinPort);
  }
  const body = (b: unknown): Record<string, unknown> => {
    if (b === undefined) return {};
    if (b === null || typeof b !== 'object' || Array.isArray(b)) throw new ApiError(400, 400, 'request body must be a JSON object');
    return b as Record<string, unknown>;
  };
  o.api.route('POST', '/v1/token/create', (req) => {
    const b = body(req.body);
    let ttlMs = 3600_000;
    if (typeof b.ttl === 'number') ttlMs = b.ttl;
    else if (typeof b.ttl === 'string') ttlMs = parseDuration(b.ttl, (why) => {
      throw new ApiError(400, 400, `ttl ${JSON.stringify(b.ttl)} ${why}`);
    });
    else if (b.ttl !== undefined) throw new ApiError(400, 400, 'ttl must be a duration like "1h" or milliseconds');
    const uses = b.uses === undefined ? 1 : b.uses;
    if (typeof uses !== 'number') throw new ApiError(400, 400, 'uses must be a number');
    if (b.seeds !== undefined && (!Array.isArray(b.seeds) || b.seeds.length > 8 || !b.seeds.every((s) => typeof s === 'string'))) throw new ApiError(400, 400, 'seeds must be a list of at most 8 "host:port" strings');
    if (b.description !== undefined && typeof b.description !== 'string') throw new ApiError(400, 400, 'description must be a string');
    try {
      const out = admitter.create({ ttlMs, uses, seeds: b.seeds as string[] | undefined, description: b.description as string | undefined });
      o.logger.info({ audit: true, event: 'token-created', tokenId: out.id, expiresAt: new Date(out.expiresAt).toISOString(), uses }, `token ${out.id} created`);
      changed({ kind: 'created', id: out.id });
      return { status: 200, json: out };
    } catch (err) {
      return bad(err);
    }
  });
  o.api.route('GET', '/v1/token/list', () => ({ status: 200, json: { tokens: admitter.list() } }));
  o.api.route('POST', '/v1/token/revoke', (req) => {
    const b = body(req.body);
    try {
      const id = parseTokenId(typeof b.id === 'string' ? b.id : '');
      admitter.revoke(id);
      o.logger.info({ audit: true, event: 'token-revoked', tokenId: id }, `token ${id} revoked`);
      changed({ kind: 'revoked', id });
      return { status: 200, json: { id, revoked: true } };
    } catch (err) {
      return bad(err);
    }
  });
  o.api.route('POST', '/v1/node/remove', (req) => {
    const b = body(req.body);
    if (typeof b.name !== 'string') throw new ApiError(400, 400, 'name is required');
    if (b.reason !== undefined && typeof b.reason !== 'string') throw new ApiError(400, 400, 'reason must be a string');
    try {
      const out = admitter.removeNode(b.name, (b.reason as string | undefined) ?? 'weft node remove');
      o.logger.info({ audit: true, event: 'node-removed', removed: b.name, identityKey: out.identityKey }, `node ${b.name} removed from the mesh`);
      return { status: 200, json: { name: b.name, ...out } };
    } catch (err) {
      return bad(err);
    }
  });
  return {
    admitter,
    joinServer,
    joinPort: bound,
    onTokensChanged(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    async close() {
      listeners.clear();
      await joinServer?.close();
    },
  };
}
