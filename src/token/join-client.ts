/**
 * The joiner's side of the handshake: dials the token's seeds in order, authenticates the seed as the
 * mesh the token names, proves the token secret without sending it, and returns the grant (mesh key,
 * signed admission, mesh seeds). A seed that fails to authenticate or cannot be reached is skipped; an
 * authentic refusal (expired, spent, revoked, forged ...) stops at once with a {@link JoinError}.
 */
import { connect, type Socket } from 'node:net';
import { FrameReader } from './frames.ts';
import {
  checkChallenge,
  checkRefuse,
  encodeFrame,
  makeRequest,
  makeHello,
  newEphemeral,
  openGrant,
  parseMessage,
  sealRequest,
  sessionKey,
  type JoinGrant,
  type RefusalCode,
} from './handshake.ts';
import type { Identity } from '../../mesh/crypto.ts';
import { parseToken, tokenExpired, tokenVerifier, type JoinToken } from './token.ts';

/** Why a join failed: a refusal code from the mesh, or a local one. */
export type JoinErrorCode = RefusalCode | 'malformed' | 'not-mesh' | 'unreachable' | 'protocol';

/** A join failed; `code` says why, the message is for the user. */
export class JoinError extends Error {
  override name = 'JoinError';
  readonly code: JoinErrorCode;
  constructor(code: JoinErrorCode, message: string, options?: { cause?: unknown }) {
    super(`join: ${message}`, options);
    this.code = code;
  }
}

/** Options of {@link joinMesh}. */
export interface JoinOptions {
  /** The token string, or an already parsed token. */
  readonly token: string | JoinToken;
  readonly name: string;
  /** The joiner's own mesh identity (it proves possession; the public key is admitted). Secret: never log. */
  readonly identity: Identity;
  /** ms since the epoch. */
  readonly clock?: () => number;
  /** Per-seed deadline. Default 40 s (the seed waits a confirmation window before answering). */
  readonly timeoutMs?: number;
  /**
   * The joiner's fixed pod CIDRs (`--pod-cidr`), sent inside the sealed request so the seed refuses an
   * overlapping or out-of-range block before the token is spent (`cidr-overlap`, `cidr-outside`).
   */
  readonly podCIDRs?: readonly string[];
  /** Opens a socket (tests); default TCP connect. */
  readonly dial?: (host: string, port: number) => Socket;
}

function splitHostPort(s: string): { host: string; port: number } {
  const m = /^\[(.+)\]:(\d+)$/.exec(s) ?? /^(.+):(\d+)$/.exec(s);
  return { host: m![1]!, port: Number(m![2]) };
}

/** Joins through the token's seeds. Resolves with the grant or rejects with a {@link JoinError}. */
export async function joinMesh(o: JoinOptions): Promise<JoinGrant & { seed: string }> {
  let token: JoinToken;
  try {
    token = typeof o.token === 'string' ? parseToken(o.token) : o.token;
  } catch (err) {
    throw new JoinError('malformed', (err as Error).message, { cause: err });
  }
  const now = (o.clock ?? Date.now)();
  if (tokenExpired(token, now)) throw new JoinError('expired', `token ${token.id} expired at ${new Date(token.expiresAt).toISOString()}`);
  const failures: string[] = [];
  for (const seed of token.seeds) {
    try {
      const grant = await joinVia(seed, token, o);
      return { ...grant, seed };
    } catch (err) {
      if (err instanceof JoinError && err.code !== 'unreachable' && err.code !== 'not-mesh' && err.code !== 'protocol' && err.code !== 'unavailable') throw err;
      failures.push(`${seed}: ${(err as Error).message}`);
    }
  }
  const allNotMesh = failures.length > 0 && failures.every((f) => f.includes('is not the mesh') || f.includes('failed to prove'));
  throw new JoinError(allNotMesh ? 'not-mesh' : 'unreachable', `no seed admitted this node: ${failures.join('; ')}`);
}

async function joinVia(seed: string, token: JoinToken, o: JoinOptions): Promise<JoinGrant> {
  const { host, port } = splitHostPort(seed);
  const sock = o.dial ? o.dial(host, port) : connect({ host, port });
  const timeoutMs = o.timeoutMs ?? 40_000;
  const reader = new FrameReader(sock);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      sock.destroy();
      reject(new JoinError('unreachable', `no answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([deadline, exchange(sock, reader, token, o)]);
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}

async function exchange(sock: Socket, reader: FrameReader, token: JoinToken, o: JoinOptions): Promise<JoinGrant> {
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', (err) => reject(new JoinError('unreachable', `cannot connect: ${err.message}`, { cause: err })));
  });
  const eph = newEphemeral();
  const hello = makeHello(token.id, eph, token.fingerprint);
  sock.write(encodeFrame(hello));
  const read = async () => {
    try {
      return parseMessage(await reader.next());
    } catch (err) {
      throw new JoinError('protocol', (err as Error).message, { cause: err });
    }
  };
  const refusal = (m: Awaited<ReturnType<typeof read>>): never => {
    if (m.t === 'refuse') {
      if (!checkRefuse(m, hello.nonce, token.fingerprint)) throw new JoinError('not-mesh', 'the seed is not the mesh this token names (unauthenticated refusal)');
      throw new JoinError(m.code, `the mesh refused the token: ${m.msg}`);
    }
    throw new JoinError('protocol', `unexpected message ${m.t}`);
  };
  const m2 = await read();
  if (m2.t !== 'challenge') return refusal(m2);
  let th: Uint8Array;
  try {
    th = checkChallenge(token.id, hello, m2, token.fingerprint);
  } catch (err) {
    throw new JoinError('not-mesh', (err as Error).message, { cause: err });
  }
  const key = sessionKey(tokenVerifier(token.id, token.secret), new Uint8Array(Buffer.from(m2.eph, 'base64')), eph, th);
  const req = makeRequest(th, o.name, o.identity, o.podCIDRs ?? []);
  sock.write(encodeFrame(sealRequest(key, req)));
  const m4 = await read();
  if (m4.t !== 'admit') return refusal(m4);
  try {
    return openGrant(key, m4, req);
  } catch (err) {
    throw new JoinError('protocol', (err as Error).message, { cause: err });
  }
}
