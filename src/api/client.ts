/**
 * A small client for the agent's local API over its unix socket, used by the CLI. Bounded
 * response size and a timeout on every request.
 */
import { createRequire } from 'node:module';

// node:http through require, not an ESM import: importing it evaluates its lazy exports (WebSocket
// and friends) and so loads Node's bundled undici, ~9 MB of resident memory (see src/api/server.ts).
const { request } = createRequire(import.meta.url)('node:http') as typeof import('node:http');

/** The agent answered with a non-2xx status; carries its JSON error `{code,msg,details}`. */
export class ApiClientError extends Error {
  override name = 'ApiClientError';
  readonly status: number;
  readonly code: number;
  readonly details: string;
  constructor(status: number, code: number, msg: string, details: string) {
    super(msg);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The agent could not be reached (no socket, connection refused, timeout, garbage answer). */
export class ApiUnavailableError extends Error {
  override name = 'ApiUnavailableError';
}

/** Options of {@link ApiClient}. */
export interface ApiClientOptions {
  readonly socketPath: string;
  readonly timeoutMs?: number;
  readonly maxResponseBytes?: number;
}

/** JSON over HTTP over a unix socket. Every method rejects with a named error; none retries. */
export class ApiClient {
  readonly #socketPath: string;
  readonly #timeoutMs: number;
  readonly #max: number;

  constructor(opts: ApiClientOptions) {
    this.#socketPath = opts.socketPath;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#max = opts.maxResponseBytes ?? 16 << 20;
  }

  /** GET `path` and return the parsed JSON body. */
  get<T = unknown>(path: string): Promise<T> {
    return this.#call('GET', path, undefined) as Promise<T>;
  }

  /** POST `body` as JSON to `path` and return the parsed JSON body. */
  post<T = unknown>(path: string, body: unknown): Promise<T> {
    return this.#call('POST', path, body) as Promise<T>;
  }

  /** Low level: the status and raw body text, without throwing on non-2xx. */
  raw(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.#socketPath,
          path,
          method,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: this.#timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > this.#max) {
              req.destroy(new ApiUnavailableError(`api: ${method} ${path}: response larger than ${this.#max} bytes`));
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', (err) => reject(new ApiUnavailableError(`api: ${method} ${path}: ${err.message}`, { cause: err })));
        },
      );
      req.on('timeout', () => req.destroy(new ApiUnavailableError(`api: ${method} ${path}: no answer within ${this.#timeoutMs} ms`)));
      req.on('error', (err) => {
        if (err instanceof ApiUnavailableError) reject(err);
        else reject(new ApiUnavailableError(`api: cannot reach the agent at ${this.#socketPath}: ${err.message}`, { cause: err }));
      });
      req.end(payload);
    });
  }

  async #call(method: string, path: string, body: unknown): Promise<unknown> {
    const { status, body: text } = await this.raw(method, path, body);
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch (err) {
      throw new ApiUnavailableError(`api: ${method} ${path}: answer is not JSON (status ${status})`, { cause: err });
    }
    if (status < 200 || status > 299) {
      const e = (json ?? {}) as { code?: unknown; msg?: unknown; details?: unknown };
      throw new ApiClientError(
        status,
        typeof e.code === 'number' ? e.code : status,
        typeof e.msg === 'string' ? e.msg : `HTTP ${status}`,
        typeof e.details === 'string' ? e.details : '',
      );
    }
    return json;
  }
}
