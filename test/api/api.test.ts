import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiClient, ApiClientError, ApiUnavailableError } from '../../src/api/client.ts';
import { ApiError, ApiListenError, ApiServer } from '../../src/api/server.ts';

const logger = pino({ level: 'silent' });
let dir: string;
let servers: ApiServer[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wag-api-'));
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  await rm(dir, { recursive: true, force: true });
});

function server(maxBodyBytes?: number): ApiServer {
  const s = new ApiServer({ logger, maxBodyBytes });
  servers.push(s);
  return s;
}

describe('ApiServer + ApiClient over a unix socket', () => {
  it('routes JSON both ways and sets mode 0660', async () => {
    const sock = join(dir, 'weft.sock');
    const s = server()
      .route('POST', '/v1/echo', (req) => ({ status: 200, json: { got: req.body, via: req.via } }))
      .route('GET', '/v1/q', (req) => ({ status: 200, json: { a: req.query.get('a') } }));
    await s.listenUnix(sock);
    expect((await stat(sock)).mode & 0o777).toBe(0o660);
    const c = new ApiClient({ socketPath: sock });
    expect(await c.post('/v1/echo', { x: [1, 2] })).toEqual({ got: { x: [1, 2] }, via: 'unix' });
    expect(await c.get('/v1/q?a=b')).toEqual({ a: 'b' });
  });

  it('answers JSON errors: 404, 405, ApiError, thrown errors, bad JSON', async () => {
    const sock = join(dir, 'weft.sock');
    const s = server()
      .route('GET', '/v1/teapot', () => {
        throw new ApiError(418, 11, 'try again later', 'agent busy');
      })
      .route('GET', '/v1/boom', () => {
        throw new Error('kaput');
      })
      .route('POST', '/v1/echo', (req) => ({ status: 200, json: req.body }));
    await s.listenUnix(sock);
    const c = new ApiClient({ socketPath: sock });
    const err = async (p: Promise<unknown>): Promise<ApiClientError> => {
      try {
        await p;
      } catch (e) {
        return e as ApiClientError;
      }
      throw new Error('expected a rejection');
    };
    expect(await err(c.get('/nope'))).toMatchObject({ name: 'ApiClientError', status: 404, code: 404 });
    expect(await err(c.get('/v1/echo'))).toMatchObject({ status: 405 });
    expect(await err(c.get('/v1/teapot'))).toMatchObject({ status: 418, code: 11, message: 'try again later', details: 'agent busy' });
    expect(await err(c.get('/v1/boom'))).toMatchObject({ status: 500, code: 999, details: 'Error: kaput' });
    const raw = await c.raw('POST', '/v1/echo');
    expect(raw.status).toBe(200);
    const bad = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ socketPath: sock, path: '/v1/echo', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => (b += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
      });
      req.on('error', reject);
      req.end('{"not json');
    });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toMatchObject({ code: 400, msg: 'request body is not valid JSON' });
  });

  it('bounds request bodies with 413', async () => {
    const sock = join(dir, 'weft.sock');
    await server(1024).route('POST', '/v1/echo', (req) => ({ status: 200, json: req.body })).listenUnix(sock);
    const c = new ApiClient({ socketPath: sock });
    await expect(c.post('/v1/echo', { s: 'x'.repeat(2000) })).rejects.toMatchObject({ status: 413 });
    expect(await c.post('/v1/echo', { s: 'small' })).toEqual({ s: 'small' });
  });

  it('refuses a live socket or a regular file, and reuses the path once freed', async () => {
    const sock = join(dir, 'weft.sock');
    await writeFile(join(dir, 'plain'), 'x');
    await expect(server().listenUnix(join(dir, 'plain'))).rejects.toBeInstanceOf(ApiListenError);

    const first = server().route('GET', '/healthz', () => ({ status: 200, json: { ok: true } }));
    await first.listenUnix(sock);
    await expect(server().listenUnix(sock)).rejects.toThrow(/in use by a running process/);
    await first.close();
    const again = server().route('GET', '/healthz', () => ({ status: 200, json: { ok: 2 } }));
    await again.listenUnix(sock);
    expect(await new ApiClient({ socketPath: sock }).get('/healthz')).toEqual({ ok: 2 });
  });

  it('takes over a socket file left by a killed process', async () => {
    const sock = join(dir, 'weft.sock');
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGKILL');
    await new Promise<void>((r) => child.once('exit', () => r()));
    expect((await stat(sock)).isSocket()).toBe(true);
    await server().route('GET', '/healthz', () => ({ status: 200, json: { ok: true } })).listenUnix(sock);
    expect(await new ApiClient({ socketPath: sock }).get('/healthz')).toEqual({ ok: true });
  });

  it('serves only tcp-enabled routes on TCP', async () => {
    const s = server()
      .route('GET', '/healthz', () => ({ status: 200, text: 'ok\n' }), { tcp: true })
      .route('POST', '/v1/cni/add', () => ({ status: 200, json: {} }));
    const port = await s.listenTcp('127.0.0.1', 0);
    const get = (path: string, method = 'GET'): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await get('/healthz')).toBe(200);
    expect(await get('/v1/cni/add', 'POST')).toBe(404);
  });

  it('reports an unreachable agent as ApiUnavailableError', async () => {
    const c = new ApiClient({ socketPath: join(dir, 'missing.sock'), timeoutMs: 500 });
    await expect(c.get('/v1/status')).rejects.toBeInstanceOf(ApiUnavailableError);
  });

  it('times out a hung agent', async () => {
    const sock = join(dir, 'hang.sock');
    const hang = createNetServer(() => {});
    await new Promise<void>((r) => hang.listen(sock, r));
    try {
      const c = new ApiClient({ socketPath: sock, timeoutMs: 200 });
      await expect(c.get('/v1/status')).rejects.toThrow(/no answer within 200 ms/);
    } finally {
      hang.close();
    }
  });
});
