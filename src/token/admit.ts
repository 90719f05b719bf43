/**
 * The seed's admission policy over the mesh: token lookup, the status checks, the claim + confirmation
 * window that resolves redemption races (see `src/token/README.md`), and publishing the admission. Also
 * token issue/revoke and node removal for the agent API. Talks to the mesh only through the small
 * {@link TokenMesh} port, so tests drive it over an in-memory mesh.
 */
import type { MeshSnapshot } from '../../mesh/api.ts';
import type { Identity } from '../../mesh/crypto.ts';
import type { RefusalCode } from './handshake.ts';
import {
  admissionWrite,
  claimOutcome,
  collectTokens,
  isRevoked,
  listTokens,
  nodeRevocationWrite,
  revokedNodes,
  tokenClaimWrite,
  tokenEntryWrite,
  tokenRevocationWrite,
  tokenStatus,
  type Admission,
  type TokenListing,
  type TokenState,
} from './store.ts';
import { podCidrRefusal, type PodCidrRefusal } from './cidr.ts';
import { MAX_TTL_MS, MAX_USES, authorityFingerprint, deriveAuthority, formatToken, randomTokenId, randomTokenSecret, tokenVerifier, validateSeed } from './token.ts';

/** What the admission logic needs from the mesh (a subset of `MeshHandle`). */
export interface TokenMesh {
  snapshot(): MeshSnapshot;
  setLocal(key: string, payload: Uint8Array, ttlMs?: number): void;
  deleteLocal(key: string): void;
}

/** A token operation was refused (bad arguments, unknown id). */
export class TokenOpError extends Error {
  override name = 'TokenOpError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(`token: ${message}`, options);
  }
}

/** Outcome of a redemption: granted, or refused with a code and a message for the joiner. */
export type Redemption =
  | { readonly ok: true; readonly admission: Admission; readonly seeds: readonly string[] }
  | { readonly ok: false; readonly code: RefusalCode; readonly msg: string; readonly detail?: Readonly<Record<string, unknown>> };

/** Who asks to be admitted (already authenticated by the handshake). */
export interface Joiner {
  readonly name: string;
  /** Base64 ed25519 identity key. */
  readonly identityKey: string;
  /** Fixed pod CIDRs the joiner will claim (`--pod-cidr`); empty or absent = it claims through the mesh. */
  readonly podCIDRs?: readonly string[];
}

/** Options of {@link Admitter}. */
export interface AdmitterOptions {
  readonly mesh: TokenMesh;
  /** This member's name and identity (signs admissions). */
  readonly self: { readonly name: string; readonly identity: Identity };
  /**
   * The mesh key: fixed, or read live (the agent's keyring primary, which mesh-key rotation changes). Joiners
   * get the current one; tokens name the authority of the key current when they were created.
   */
  readonly meshKey: Uint8Array | (() => Uint8Array);
  /** ms since the epoch. */
  readonly clock: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  /**
   * How long a seed waits after publishing its claim before admitting, so that a competing claim at
   * another seed can reach it (a few gossip rounds). Default 3000 ms; use more on WAN meshes.
   */
  readonly confirmWindowMs?: number;
  /** Join listener addresses this member advertises in tokens it creates ("host:port"). */
  readonly joinAddresses: () => readonly string[];
  readonly random?: (n: number) => Uint8Array;
  /**
   * The mesh's cluster CIDRs: a joiner's fixed pod CIDR outside them is refused (`cidr-outside`). Absent =
   * only the overlap check runs.
   */
  readonly clusterCIDRs?: readonly string[];
}

/** Token creation request (from `weft token create`). */
export interface CreateTokenRequest {
  readonly ttlMs: number;
  readonly uses: number;
  /** Join addresses to embed; default: this member's own. */
  readonly seeds?: readonly string[];
  readonly description?: string;
}

/**
 * Seed-side token logic. One instance per agent; `redeem` may run concurrently for different joiners
 * (two redemptions for the same joiner name are serialized by refusing the second while the first waits).
 */
export class Admitter {
  readonly #o: AdmitterOptions;
  readonly #inFlight = new Set<string>();
  /** Authorities of every mesh key seen (the first, and each later primary), newest last; bounded. */
  readonly #authorities: { key: Uint8Array; authority: Identity; fp: string }[] = [];

  constructor(o: AdmitterOptions) {
    this.#o = o;
    // Remember the authority of the key at startup, so tokens issued before a later rotation still authenticate.
    void this.authority;
  }

  /** The current mesh key (primary). Secret. */
  meshKey(): Uint8Array {
    return typeof this.#o.meshKey === 'function' ? this.#o.meshKey() : this.#o.meshKey;
  }

  /** The mesh authority of the current mesh key. */
  get authority(): Identity {
    const key = this.meshKey();
    let a = this.#authorities.find((x) => Buffer.compare(Buffer.from(x.key), Buffer.from(key)) === 0);
    if (!a) {
      const authority = deriveAuthority(key);
      a = { key: new Uint8Array(key), authority, fp: Buffer.from(authorityFingerprint(authority.publicKey)).toString('base64') };
      this.#authorities.push(a);
      if (this.#authorities.length > 8) this.#authorities.shift();
    }
    return a.authority;
  }

  /**
   * The authority a joiner's token names (by base64 fingerprint) among the mesh keys this member has held,
   * else the current one (the joiner then refuses it: the token predates a mesh key rotation).
   */
  authorityFor(fp: string | undefined): Identity {
    const current = this.authority;
    return (fp !== undefined ? this.#authorities.find((x) => x.fp === fp)?.authority : undefined) ?? current;
  }

  /** The token's verifier as the mesh stores it, or undefined for an unknown id. */
  verifierOf(id: string): Uint8Array | undefined {
    const s = collectTokens(this.#o.mesh.snapshot()).get(id);
    return s ? new Uint8Array(Buffer.from(s.entry.verifier, 'base64')) : undefined;
  }

  /** Creates a token, publishes its entry and returns the token string (the only place the secret exists). */
  create(req: CreateTokenRequest): { token: string; id: string; expiresAt: number } {
    if (!Number.isInteger(req.ttlMs) || req.ttlMs < 1000 || req.ttlMs > MAX_TTL_MS) throw new TokenOpError(`ttl must be between 1s and ${MAX_TTL_MS / 3600_000}h`);
    if (!Number.isInteger(req.uses) || req.uses < 1 || req.uses > MAX_USES) throw new TokenOpError(`uses must be between 1 and ${MAX_USES}`);
    if (req.description !== undefined && (typeof req.description !== 'string' || req.description.length > 256)) throw new TokenOpError('description must be at most 256 characters');
    let seeds: string[];
    try {
      seeds = (req.seeds && req.seeds.length > 0 ? req.seeds : this.#o.joinAddresses()).map(validateSeed);
    } catch (err) {
      throw new TokenOpError((err as Error).message, { cause: err });
    }
    if (seeds.length === 0) throw new TokenOpError('no seed address to embed: pass --seeds host:port (the join port of a member reachable by the joiner)');
    const now = this.#o.clock();
    const random = this.#o.random;
    const known = collectTokens(this.#o.mesh.snapshot());
    let id = randomTokenId(random);
    while (known.has(id)) id = randomTokenId(random);
    const secret = randomTokenSecret(random);
    // Second resolution, as in the token, so the token and the entry agree.
    const expiresAt = Math.floor((now + req.ttlMs) / 1000) * 1000;
    const token = formatToken({ id, secret, fingerprint: authorityFingerprint(this.authority.publicKey), expiresAt, uses: req.uses, seeds });
    const w = tokenEntryWrite(
      { format: 1, id, verifier: Buffer.from(tokenVerifier(id, secret)).toString('base64'), createdAt: now, expiresAt, uses: req.uses, issuedBy: this.#o.self.name, ...(req.description ? { description: req.description } : {}) },
      now,
    );
    this.#o.mesh.setLocal(w.key, w.payload, w.ttlMs);
    return { token, id, expiresAt };
  }

  /** The token list as this member sees it. */
  list(): TokenListing[] {
    return listTokens(this.#o.mesh.snapshot(), this.#o.clock());
  }

  /** Revokes a token everywhere (idempotent). Throws {@link TokenOpError} for an unknown id. */
  revoke(id: string): void {
    const s = collectTokens(this.#o.mesh.snapshot()).get(id);
    if (!s) throw new TokenOpError(`no token ${id} in the mesh (never issued, or expired and purged)`);
    if (s.revoked) return;
    const w = tokenRevocationWrite({ format: 1, id, revokedAt: this.#o.clock(), by: this.#o.self.name }, s.entry.expiresAt);
    this.#o.mesh.setLocal(w.key, w.payload, w.ttlMs);
  }

  /**
   * Revokes a node's admission: every member drops its peer, routes and DNS names and rejects its records
   * (see `withoutRevoked`). The identity key it holds now is revoked, so it cannot rejoin with it.
   */
  removeNode(name: string, reason = 'weft node remove'): { identityKey?: string } {
    if (name === this.#o.self.name) throw new TokenOpError('a member cannot remove itself; run the command on another member');
    if (!/^[\x21-\x7e]{1,128}$/.test(name)) throw new TokenOpError('bad node name');
    const m = this.#o.mesh.snapshot().members.find((x) => x.name === name);
    const w = nodeRevocationWrite({ format: 1, name, revokedAt: this.#o.clock(), by: this.#o.self.name, reason: reason.slice(0, 256), ...(m ? { identityKey: m.identityKey } : {}) });
    this.#o.mesh.setLocal(w.key, w.payload, w.ttlMs);
    return m ? { identityKey: m.identityKey } : {};
  }

  /** Why the token cannot be redeemed now, or undefined when it can. */
  #refusal(s: TokenState | undefined, id: string): { code: RefusalCode; msg: string } | undefined {
    if (!s) return { code: 'unknown', msg: `token ${id} is not known to the mesh (never issued, or expired and purged)` };
    const st = tokenStatus(s, this.#o.clock());
    if (st === 'revoked') return { code: 'revoked', msg: `token ${id} was revoked by ${s.revoked!.by}` };
    if (st === 'expired') return { code: 'expired', msg: `token ${id} expired at ${new Date(s.entry.expiresAt).toISOString()}` };
    if (st === 'spent') return { code: 'spent', msg: `token ${id} is used up (${s.entry.uses} use${s.entry.uses === 1 ? '' : 's'})` };
    return undefined;
  }

  /**
   * Redeems token `id` for `joiner` (already authenticated by the handshake): checks status, name and
   * revocation, publishes a claim, waits the confirmation window, and admits only if the claim wins
   * (first `uses` claims by claimedAt, seed, joiner). A lost claim gets 'spent'.
   */
  async redeem(id: string, joiner: Joiner): Promise<Redemption> {
    const { mesh } = this.#o;
    let snap = mesh.snapshot();
    let tokens = collectTokens(snap);
    const s = tokens.get(id);
    // A retry by the same joiner (same name, proven same identity) whose grant was lost in transit gets it again.
    const mine = s?.winners.find((c) => c.joiner === joiner.name);
    if (s && !s.revoked && mine && mine.identityKey === joiner.identityKey && !isRevoked(revokedNodes(snap), joiner.name, joiner.identityKey)) return this.#admit(snap, id, joiner);
    const refused = this.#refusal(s, id);
    if (refused) return { ok: false, ...refused };
    if (isRevoked(revokedNodes(snap), joiner.name, joiner.identityKey)) return { ok: false, code: 'node-revoked', msg: `node ${joiner.name} with this identity was removed from the mesh; join with a new identity` };
    const existing = snap.members.find((m) => m.name === joiner.name);
    if (existing && existing.identityKey !== joiner.identityKey && (existing.state === 'alive' || existing.state === 'suspect' || existing.state === 'dead')) {
      return { ok: false, code: 'name-taken', msg: `node name ${joiner.name} is held by another identity in the mesh` };
    }
    if (claimOutcome(s, joiner.name) !== 'absent') return { ok: false, code: 'spent', msg: `token ${id} was already redeemed for ${joiner.name}` };
    // Checked before any claim is published: a refused pod CIDR does not spend the token.
    const cidr = this.#cidrRefusal(snap, joiner);
    if (cidr) return cidr;
    if (this.#inFlight.has(joiner.name)) return { ok: false, code: 'bad-request', msg: `a join for ${joiner.name} is already in progress` };
    this.#inFlight.add(joiner.name);
    try {
      const claimedAt = this.#o.clock();
      const cw = tokenClaimWrite({ format: 1, id, joiner: joiner.name, identityKey: joiner.identityKey, claimedAt, seed: this.#o.self.name }, s!.entry.expiresAt);
      mesh.setLocal(cw.key, cw.payload, cw.ttlMs);
      await this.#o.sleep(this.#o.confirmWindowMs ?? 3000);
      snap = mesh.snapshot();
      tokens = collectTokens(snap);
      const after = tokens.get(id);
      if (after?.revoked) return { ok: false, code: 'revoked', msg: `token ${id} was revoked by ${after.revoked.by}` };
      const outcome = claimOutcome(after, joiner.name);
      if (outcome !== 'won') return { ok: false, code: 'spent', msg: `token ${id} was redeemed first by another joiner` };
      // A block claimed elsewhere during the window: withdraw the claim (a tombstone), so the use is given back.
      const late = this.#cidrRefusal(snap, joiner);
      if (late) {
        mesh.deleteLocal(cw.key);
        return late;
      }
      return this.#admit(snap, id, joiner);
    } finally {
      this.#inFlight.delete(joiner.name);
    }
  }

  #cidrRefusal(snap: MeshSnapshot, joiner: Joiner): Redemption | undefined {
    if (!joiner.podCIDRs || joiner.podCIDRs.length === 0) return undefined;
    const r: PodCidrRefusal | undefined = podCidrRefusal(snap, joiner.name, joiner.podCIDRs, this.#o.clusterCIDRs);
    if (!r) return undefined;
    const { code, msg, ...detail } = r;
    return { ok: false, code, msg: code === 'bad-request' ? msg : `${msg}; the token was not spent: join again with another --pod-cidr, or none to get a free block`, detail: { podCIDRs: joiner.podCIDRs, ...detail } };
  }

  #admit(snap: MeshSnapshot, id: string, joiner: { name: string; identityKey: string }): Redemption {
    const admission: Admission = { format: 1, name: joiner.name, identityKey: joiner.identityKey, tokenId: id, admittedBy: this.#o.self.name, admittedAt: this.#o.clock() };
    const aw = admissionWrite(admission);
    this.#o.mesh.setLocal(aw.key, aw.payload, aw.ttlMs);
    const seeds = snap.members
      .filter((m) => m.state === 'alive' && m.port > 0)
      .map((m) => (m.addr.includes(':') ? `[${m.addr}]:${m.port}` : `${m.addr}:${m.port}`))
      .slice(0, 16);
    return { ok: true, admission, seeds };
  }
}
