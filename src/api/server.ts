/**
 * The agent's local API: HTTP/1.1 with JSON bodies, served on a unix socket (mode 0660) for the
 * CLI and the CNI plugin, and optionally on a TCP address for probes and metrics. Routes are
 * registered by the components that own them; this file only does transport, bounds and errors.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { createRequire } from 'node:module';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';

// node:http through require, not an ESM import: importing it evaluates its lazy exports (WebSocket
// and friends) and so loads Node's bundled undici, ~9 MB of resident memory in every agent.
const { createServer } = createRequire(import.meta.url)('node:http') as typeof import('node:http');

/** A parsed request as a route handler sees it. */
export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  /** Parsed JSON body; undefined when the body was empty. */
  readonly body: unknown;
  /** Which listener received it: the unix socket (local, trusted by file mode) or TCP. */
  readonly via: 'unix' | 'tcp';
}

/** What a route handler returns: a JSON body by default, or raw text (e.g. Prometheus exposition). */
export interface ApiResponse {
  readonly status: number;
  readonly json?: unknown;
  readonly text?: string;
  readonly contentType?: string;
}

/** A route handler. It may throw: an {@link ApiError} keeps its status and code, anything else is a 500. */
export type ApiHandler = (req: ApiRequest) => Promise<ApiResponse> | ApiResponse;

/** An error a handler throws to answer with a given status and error code (JSON `{code,msg,details}`). */
export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly code: number;
  readonly details: string | undefined;
  constructor(status: number, code: number, msg: string, details?: string, options?: { cause?: unknown }) {
    super(msg, options);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The API server failed to listen (socket in use by a live agent, bad path, permissions). */
export class ApiListenError extends Error {
  override name = 'ApiListenError';
}

/** Options of {@link ApiServer}. */
export interface ApiServerOptions {
  readonly logger: Logger;
  /** Largest accepted request body; larger gets 413. Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** Time a client has to send its whole request. Default 10 s. */
  readonly requestTimeoutMs?: number;
  /** Called after every request, for metrics. Must not throw or block. */
  readonly onRequest?: (method: string, path: string, status: number, seconds: number) => void;
}

/** Only TCP-safe routes (health, metrics, read-only status) are served on TCP; the rest are unix-only. */
export interface RouteOptions {
  readonly tcp?: boolean;
}

interface Route {
  readonly handler: ApiHandler;
  readonly tcp: boolean;
}

/**
 * HTTP router and listeners. `route` may be called before or after `listen*`. `close` stops
 * every listener and removes the unix socket file it created; it is idempotent.
 */
export class ApiServer {
  readonly #log: Logger;
  readonly #maxBody: number;
  readonly #timeoutMs: number;
  readonly #onRequest: ApiServerOptions['onRequest'];
  readonly #routes = new Map<string, Map<string, Route>>();
  readonly #servers: { server: Server; socketPath?: string }[] = [];

  constructor(opts: ApiServerOptions) {
    this.#log = opts.logger;
    this.#maxBody = opts.maxBodyBytes ?? 1 << 20;
    this.#timeoutMs = opts.requestTimeoutMs ?? 10_000;
    this.#onRequest = opts.onRequest;
  }

  /** Registers (or replaces) the handler for `method path`. */
  route(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, handler: ApiHandler, opts: RouteOptions = {}): this {
    let byMethod = this.#routes.get(path);
    if (!byMethod) this.#routes.set(path, (byMethod = new Map()));
    byMethod.set(method, { handler, tcp: opts.tcp ?? false });
    return this;
  }

  /**
   * Listens on a unix socket with the given mode. A stale socket file (nothing accepting on it) is
   * replaced; a live one makes this reject, so two agents never share a socket.
   */
  async listenUnix(socketPath: string, mode = 0o660): Promise<void> {
    await removeStaleSocket(socketPath);
    const server = this.#makeServer('unix');
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new ApiListenError(`api: listen ${socketPath}: ${err.message}`, { cause: err })));
      server.listen(socketPath, () => resolve());
    });
    this.#servers.push({ server, socketPath });
    await chmod(socketPath, mode);
    this.#log.info({ socket: socketPath }, 'api listening on unix socket');
  }

  /** Listens on TCP (only routes registered with `{ tcp: true }` answer there). Returns the bound port. */
  async listenTcp(host: string, port: number): Promise<number> {
    const server = this.#makeServer('tcp');
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new ApiListenError(`api: listen ${host}:${port}: ${err.message}`, { cause: err })));
      server.listen(port, host, () => resolve());
    });
    this.#servers.push({ server });
    const addr = server.address();
    const bound = typeof addr === 'object' && addr ? addr.port : port;
    this.#log.info({ host, port: bound }, 'api listening on tcp');
    return bound;
  }

  /** Closes all listeners and open connections, and unlinks the socket file. Idempotent. */
  async close(): Promise<void> {
    const servers = this.#servers.splice(0);
    await Promise.all(
      servers.map(async ({ server, socketPath }) => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        if (socketPath) await unlink(socketPath).catch(() => {});
      }),
    );
  }

  #makeServer(via: 'unix' | 'tcp'): Server {
    const server = createServer({ requestTimeout: this.#timeoutMs, headersTimeout: this.#timeoutMs, maxHeaderSize: 16 * 1024 }, (req, res) => {
      void this.#handle(via, req, res);
    });
    server.keepAliveTimeout = 5000;
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
    return server;
  }

  async #handle(via: 'unix' | 'tcp', req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    let path = '/';
    let status = 500;
    try {
      const url = new URL(req.url ?? '/', 'http://weft.invalid');
      path = url.pathname;
      const byMethod = this.#routes.get(path);
      const route = byMethod?.get(method);
      if (!byMethod || (via === 'tcp' && ![...byMethod.values()].some((r) => r.tcp))) {
        throw new ApiError(404, 404, `no route ${path}`);
      }
      if (!route) throw new ApiError(405, 405, `method ${method} not allowed on ${path}`);
      if (via === 'tcp' && !route.tcp) throw new ApiError(404, 404, `no route ${path}`);
      const body = await readJsonBody(req, this.#maxBody);
      const out = await route.handler({ method, path, query: url.searchParams, body, via });
      status = out.status;
      if (out.text !== undefined) {
        send(res, out.status, out.contentType ?? 'text/plain; charset=utf-8', out.text);
      } else {
        send(res, out.status, 'application/json', JSON.stringify(out.json ?? {}));
      }
    } catch (err) {
      const e =
        err instanceof ApiError
          ? err
          : new ApiError(500, 999, 'internal error', err instanceof Error ? `${err.name}: ${err.message}` : String(err));
      status = e.status;
      if (e.status >= 500) this.#log.error({ err, method, path }, 'api handler failed');
      else this.#log.debug({ method, path, status: e.status, msg: e.message }, 'api request rejected');
      send(res, e.status, 'application/json', JSON.stringify({ code: e.code, msg: e.message, details: e.details ?? '' }));
    } finally {
      try {
        this.#onRequest?.(method, path, status, (performance.now() - started) / 1000);
      } catch {
        // metrics must never break a request
      }
    }
  }
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function readJsonBody(req: IncomingMessage, max: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) {
    req.resume();
    throw new ApiError(413, 413, `request body larger than ${max} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      req.destroy();
      throw new ApiError(413, 413, `request body larger than ${max} bytes`);
    }
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ApiError(400, 400, 'request body is not valid JSON', (err as Error).message);
  }
}

/** Unlinks `socketPath` if it is a socket nobody accepts on; rejects if a live server holds it or it is not a socket. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ApiListenError(`api: stat ${socketPath}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isSocket()) throw new ApiListenError(`api: ${socketPath} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const c = createConnection(socketPath);
    const done = (v: boolean): void => {
      c.destroy();
      resolve(v);
    };
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
    c.setTimeout(1000, () => done(false));
  });
  if (live) throw new ApiListenError(`api: ${socketPath} is in use by a running process (another agent?)`);
  await unlink(socketPath).catch(() => {});
}
