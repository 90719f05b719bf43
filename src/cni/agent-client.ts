/**
 * The plugin's client for the agent socket: one HTTP/1.1 request per connection over `node:net`.
 * Deliberately not `node:http`: loading the HTTP stack costs tens of milliseconds of process start,
 * and plugin start-up is most of CNI ADD latency. Requests and answers are JSON, bounded in size
 * and time. Errors mirror `src/api/client.ts`: unreachable vs answered-with-an-error.
 */
import { connect } from 'node:net';

/** The agent could not be reached or gave no usable answer (no socket, refused, timeout, garbage). */
export class AgentUnavailableError extends Error {
  override name = 'AgentUnavailableError';
}

/** The agent answered with a non-2xx status and its JSON error `{code,msg,details}`. */
export class AgentError extends Error {
  override name = 'AgentError';
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

/** Options of one request. */
export interface AgentRequest {
  readonly socketPath: string;
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: unknown;
  readonly timeoutMs: number;
  /** Largest accepted answer (headers + body). Default 1 MiB. */
  readonly maxBytes?: number;
}

/** Parses a raw HTTP/1.1 response (Content-Length, chunked or read-to-close bodies). Exported for tests. */
export function parseResponse(raw: Buffer): { status: number; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new AgentUnavailableError('agent: incomplete HTTP answer');
  const head = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
  if (!m) throw new AgentUnavailableError(`agent: not an HTTP answer: ${JSON.stringify((head[0] ?? '').slice(0, 40))}`);
  const headers = new Map<string, string>();
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  let body = raw.subarray(end + 4);
  if (/chunked/i.test(headers.get('transfer-encoding') ?? '')) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const nl = body.indexOf('\r\n', at);
      if (nl < 0) throw new AgentUnavailableError('agent: truncated chunked answer');
      const size = parseInt(body.subarray(at, nl).toString('latin1'), 16);
      if (!Number.isFinite(size) || size < 0) throw new AgentUnavailableError('agent: bad chunk size');
      if (size === 0) break;
      if (nl + 2 + size > body.length) throw new AgentUnavailableError('agent: truncated chunk');
      parts.push(body.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has('content-length')) {
    const n = Number(headers.get('content-length'));
    if (!Number.isSafeInteger(n) || n < 0 || n > body.length) throw new AgentUnavailableError('agent: truncated answer');
    body = body.subarray(0, n);
  }
  return { status: Number(m[1]), body: body.toString('utf8') };
}

/**
 * Sends one request and resolves with the parsed JSON answer (undefined for an empty body).
 * Rejects with {@link AgentUnavailableError} or {@link AgentError}; never retries.
 */
export function callAgent(req: AgentRequest): Promise<unknown> {
  const max = req.maxBytes ?? 1 << 20;
  const payload = req.body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(req.body));
  const head =
    `${req.method} ${req.path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\nAccept: application/json\r\n` +
    (req.body === undefined ? '' : `Content-Type: application/json\r\nContent-Length: ${payload.length}\r\n`) +
    '\r\n';
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      sock.destroy();
      reject(err);
    };
    const sock = connect({ path: req.socketPath });
    sock.setTimeout(req.timeoutMs, () => fail(new AgentUnavailableError(`agent: ${req.method} ${req.path}: no answer within ${req.timeoutMs} ms`)));
    sock.on('connect', () => {
      sock.write(head);
      if (payload.length > 0) sock.write(payload);
    });
    sock.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) return fail(new AgentUnavailableError(`agent: answer larger than ${max} bytes`));
      chunks.push(c);
    });
    sock.on('error', (err) => fail(new AgentUnavailableError(`agent: cannot reach the agent at ${req.socketPath}: ${err.message}`, { cause: err })));
    sock.on('end', () => {
      if (done) return;
      let parsed: { status: number; body: string };
      try {
        parsed = parseResponse(Buffer.concat(chunks));
      } catch (err) {
        return fail(err as Error);
      }
      let json: unknown;
      try {
        json = parsed.body === '' ? undefined : JSON.parse(parsed.body);
      } catch (err) {
        return fail(new AgentUnavailableError(`agent: ${req.method} ${req.path}: answer is not JSON (status ${parsed.status})`, { cause: err }));
      }
      done = true;
      sock.destroy();
      if (parsed.status >= 200 && parsed.status < 300) return resolve(json);
      const e = (json ?? {}) as { code?: unknown; msg?: unknown; details?: unknown };
      reject(new AgentError(parsed.status, typeof e.code === 'number' ? e.code : parsed.status, typeof e.msg === 'string' ? e.msg : `HTTP ${parsed.status}`, typeof e.details === 'string' ? e.details : ''));
    });
  });
}
