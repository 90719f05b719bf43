/**
 * An in-process fake Kubernetes API server for Nodes and Pods, speaking the real wire protocol
 * (JSON over HTTP/1.1, chunked watch streams) on 127.0.0.1 with a random port, so the real
 * `@kubernetes/client-node` can be pointed at it through a generated kubeconfig.
 *
 * What it implements, and how faithfully:
 * - list (`GET /api/v1/nodes`, `/api/v1/pods`, `/api/v1/namespaces/<ns>/pods`) with a
 *   `metadata.resourceVersion` taken from one global, monotonically increasing counter (like etcd);
 * - get of one node or pod;
 * - watch (`?watch=true`) from a `resourceVersion`: replays the history after it, then streams live
 *   events; without one (or "0") it starts with synthetic ADDED events for the current state;
 *   `allowWatchBookmarks` enables BOOKMARK events (sent by {@link FakeApiServer.bookmark});
 *   `timeoutSeconds` ends the stream; an RV older than the compacted history gets a 410, either as
 *   an `ERROR` event carrying a `Status` with code 410 (what a real apiserver does) or, with
 *   `goneAs: 'http'`, as an HTTP 410 response;
 * - field selectors on `metadata.name`, `metadata.namespace` and `spec.nodeName` (`=`, `==`, `!=`),
 *   with the real semantics for watches: an object that stops matching is sent as DELETED, one that
 *   starts matching as ADDED; an unsupported field is a 400;
 * - PATCH of a node with `application/merge-patch+json` or `application/strategic-merge-patch+json`
 *   (RFC 7386 merge; the two are equivalent for the map fields weft patches: annotations, labels);
 * - bearer-token authentication when a token is configured (401 otherwise);
 * - Secrets in a namespace (`/api/v1/namespaces/<ns>/secrets[/<name>]`): get, create (409 AlreadyExists),
 *   replace (PUT) with optimistic concurrency (a `metadata.resourceVersion` other than the stored one is a
 *   409 Conflict, as etcd's compare-and-swap makes it; none = unconditional), the 1 MiB size limit (422),
 *   and the same global resourceVersion counter. No watch on secrets (weft does not watch them).
 *
 * Test controls: add/modify/delete objects, compact the history, expire all watches (410), drop
 * every open connection, hang (accept requests and never answer), go down (refuse connections) and
 * come back up on the same port, and a log of every request for assertions.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

/** A Kubernetes object as the fake stores it: plain JSON. */
export type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; [k: string]: unknown };
  [k: string]: unknown;
};

type Resource = 'nodes' | 'pods';
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEvent {
  readonly rv: number;
  readonly resource: Resource;
  readonly type: EventType;
  readonly object: KubeObject;
  /** The object before this event (MODIFIED only), to compute selector transitions. */
  readonly previous?: KubeObject;
}

interface Requirement {
  readonly field: string;
  readonly op: '=' | '!=';
  readonly value: string;
}

interface Watcher {
  readonly resource: Resource;
  readonly namespace: string | undefined;
  readonly selector: readonly Requirement[];
  readonly bookmarks: boolean;
  readonly res: ServerResponse;
  timer?: NodeJS.Timeout;
}

/** One request the fake served, for assertions in tests. */
export interface LoggedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly contentType: string | undefined;
  readonly body: unknown;
  readonly status: number;
}

/** Options of {@link FakeApiServer.start}. */
export interface FakeApiServerOptions {
  /** Bearer token required on every request; undefined = no authentication. */
  readonly token?: string;
  /** How a too-old watch RV is refused: an ERROR event with a 410 Status (default) or an HTTP 410. */
  readonly goneAs?: 'event' | 'http';
  /**
   * Address to listen on (default 127.0.0.1). A lab test binds it to an address its network
   * namespaces can reach (e.g. the host end of the lab's underlay), never to a public one.
   */
  readonly host?: string;
}

const SUPPORTED_FIELDS: Record<Resource, readonly string[]> = {
  nodes: ['metadata.name'],
  pods: ['metadata.name', 'metadata.namespace', 'spec.nodeName'],
};

const LIST_KIND: Record<Resource, string> = { nodes: 'NodeList', pods: 'PodList' };
const KIND: Record<Resource, string> = { nodes: 'Node', pods: 'Pod' };

const clone = <T>(v: T): T => structuredClone(v);

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function fieldValue(obj: KubeObject, field: string): string {
  let cur: unknown = obj;
  for (const part of field.split('.')) {
    if (cur === null || typeof cur !== 'object') return '';
    cur = (cur as Record<string, unknown>)[part];
  }
  return typeof cur === 'string' ? cur : '';
}

function parseFieldSelector(raw: string | undefined, resource: Resource): Requirement[] {
  if (raw === undefined || raw === '') return [];
  return raw.split(',').map((term) => {
    const m = /^([a-zA-Z.]+)\s*(==|=|!=)\s*(.*)$/.exec(term.trim());
    if (!m) throw new SelectorError(`invalid field selector term "${term}"`);
    const [, field, op, value] = m as unknown as [string, string, string, string];
    if (!SUPPORTED_FIELDS[resource].includes(field)) {
      throw new SelectorError(`field label not supported: ${field}`);
    }
    return { field, op: op === '!=' ? '!=' : '=', value };
  });
}

class SelectorError extends Error {
  override name = 'SelectorError';
}

function matches(obj: KubeObject, selector: readonly Requirement[]): boolean {
  return selector.every((r) => (fieldValue(obj, r.field) === r.value) === (r.op === '='));
}

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/**
 * The fake API server. Create it with {@link FakeApiServer.start}; always {@link FakeApiServer.close}
 * it (afterEach/afterAll), which ends every stream and frees the port.
 */
export class FakeApiServer {
  /** Every request served, oldest first. */
  readonly requests: LoggedRequest[] = [];
  private readonly objects: Record<Resource, Map<string, KubeObject>> = { nodes: new Map(), pods: new Map() };
  private readonly history: HistoryEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private readonly opts: FakeApiServerOptions;
  private server: Server;
  private rv = 1;
  /** Watches from an RV below this get 410 Gone. */
  private compactedRV = 0;
  private uidSeq = 0;
  private listening = false;
  /** While true, requests are accepted and never answered (a partitioned or overloaded server). */
  private hanging = false;
  private readonly hung = new Set<ServerResponse>();
  /** The port the server listens on (kept across {@link down}/{@link up}). */
  port = 0;
  private readonly secrets = new Map<string, KubeObject>();
  /**
   * Called before a Secret write (PUT or POST) is applied, with the namespace and name; a test uses it to
   * change the Secret under a writer (forcing a 409), or to fail the write by returning an HTTP status.
   */
  beforeSecretWrite: ((namespace: string, name: string, method: string) => number | void) | undefined;

  private constructor(opts: FakeApiServerOptions) {
    this.opts = opts;
    this.server = this.makeServer();
  }

  /** Starts a fake API server on 127.0.0.1 (or `opts.host`) and a random free port. */
  static async start(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(opts);
    await s.listen(0);
    return s;
  }

  /** The server URL, `http://<host>:<port>`. */
  get url(): string {
    const host = this.opts.host ?? '127.0.0.1';
    return `http://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
  }

  /** The current (latest) resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Number of open watch streams. */
  get watchCount(): number {
    return this.watchers.size;
  }

  /** A kubeconfig (YAML-compatible JSON text) pointing at this server, with the bearer token if set. */
  kubeconfigText(): string {
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      // client-node only speaks plain HTTP to a cluster marked insecure-skip-tls-verify.
      clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake', user: this.opts.token !== undefined ? { token: this.opts.token } : {} }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }],
      'current-context': 'fake',
    });
  }

  /** A loaded {@link KubeConfig} pointing at this server. */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromString(this.kubeconfigText());
    return kc;
  }

  // ---- object controls ----

  /** Creates or replaces a node (ADDED or MODIFIED event). Returns the stored copy. */
  upsertNode(node: KubeObject): KubeObject {
    return this.upsert('nodes', { apiVersion: 'v1', kind: 'Node', ...clone(node) });
  }

  /** Creates or replaces a pod (ADDED or MODIFIED event). Returns the stored copy. */
  upsertPod(pod: KubeObject): KubeObject {
    return this.upsert('pods', { apiVersion: 'v1', kind: 'Pod', ...clone(pod), metadata: { namespace: 'default', ...clone(pod.metadata) } });
  }

  /** Deletes a node (DELETED event); false when it did not exist. */
  deleteNode(name: string): boolean {
    return this.remove('nodes', name);
  }

  /** Deletes a pod (DELETED event); false when it did not exist. */
  deletePod(namespace: string, name: string): boolean {
    return this.remove('pods', `${namespace}/${name}`);
  }

  /** The stored node, or undefined. */
  getNode(name: string): KubeObject | undefined {
    const n = this.objects.nodes.get(name);
    return n && clone(n);
  }

  /** Creates or replaces a Secret directly (bumps its resourceVersion). `data` values are base64, as in the API. */
  putSecret(namespace: string, name: string, data: Record<string, string> | undefined, extra: Partial<KubeObject> = {}): KubeObject {
    const key = `${namespace}/${name}`;
    const prev = this.secrets.get(key);
    this.rv += 1;
    const obj: KubeObject = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      ...clone(extra),
      metadata: { ...(prev?.metadata ?? {}), ...clone(extra.metadata ?? {}), name, namespace, resourceVersion: String(this.rv), uid: prev?.metadata.uid ?? `uid-${++this.uidSeq}` },
      ...(data !== undefined ? { data: clone(data) } : {}),
    };
    this.secrets.set(key, obj);
    return clone(obj);
  }

  /** The stored Secret, or undefined. */
  getSecret(namespace: string, name: string): KubeObject | undefined {
    const s = this.secrets.get(`${namespace}/${name}`);
    return s && clone(s);
  }

  /** Deletes a Secret; false when it did not exist. */
  deleteSecret(namespace: string, name: string): boolean {
    return this.secrets.delete(`${namespace}/${name}`);
  }

  /** Drops the whole event history: a watch from any RV older than the current one gets 410 Gone. */
  compact(): void {
    this.compactedRV = this.rv;
    this.history.length = 0;
  }

  /**
   * Ends every open watch with an ERROR event carrying a 410 Status, as an apiserver does when a
   * watcher falls behind the compacted history; also compacts, so resuming from the old RV fails.
   */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.watchers]) {
      this.writeEvent(w, 'ERROR', status(410, 'Expired', 'too old resource version'));
      this.endWatch(w);
    }
  }

  /** Sends a BOOKMARK carrying the current RV to every watch that asked for bookmarks. */
  bookmark(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      this.writeEvent(w, 'BOOKMARK', {
        kind: KIND[w.resource],
        apiVersion: 'v1',
        metadata: { resourceVersion: String(this.rv), annotations: { 'k8s.io/initial-events-end': 'true' } },
      });
    }
  }

  /**
   * Hang mode: new requests are accepted but never answered, as behind a network partition where
   * TCP connects but nothing comes back. Turning it off drops the hung requests.
   */
  hang(on: boolean): void {
    this.hanging = on;
    if (!on) {
      for (const r of this.hung) r.destroy();
      this.hung.clear();
    }
  }

  /** Destroys every open connection (mid-stream, without a clean end), as a network failure would. */
  dropConnections(): void {
    for (const w of [...this.watchers]) this.endWatch(w, true);
    for (const r of this.hung) r.destroy();
    this.hung.clear();
    for (const s of this.sockets) s.destroy();
  }

  /** Goes down: stops listening (connections are refused) and drops every open connection. */
  async down(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.dropConnections();
    this.server.closeAllConnections();
    await closed;
  }

  /** Comes back up on the same port, with the same objects and history. */
  async up(): Promise<void> {
    if (this.listening) return;
    this.server = this.makeServer();
    await this.listen(this.port);
  }

  /** Shuts down for good. */
  async close(): Promise<void> {
    await this.down();
  }

  // ---- internals ----

  private async listen(port: number): Promise<void> {
    this.server.listen(port, this.opts.host ?? '127.0.0.1');
    await once(this.server, 'listening');
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('fake-apiserver: no address');
    this.port = addr.port;
    this.listening = true;
  }

  private makeServer(): Server {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.reply(req, res, 500, status(500, 'InternalError', String(err)), undefined);
        else res.destroy();
      });
    });
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    return server;
  }

  private key(resource: Resource, obj: KubeObject): string {
    return resource === 'pods' ? `${obj.metadata.namespace ?? 'default'}/${obj.metadata.name}` : obj.metadata.name;
  }

  private upsert(resource: Resource, obj: KubeObject): KubeObject {
    const key = this.key(resource, obj);
    const previous = this.objects[resource].get(key);
    this.rv += 1;
    const stored: KubeObject = clone(obj);
    stored.metadata.resourceVersion = String(this.rv);
    stored.metadata.uid ??= previous?.metadata.uid ?? `uid-${++this.uidSeq}`;
    stored.metadata.creationTimestamp ??= previous?.metadata.creationTimestamp ?? new Date(0).toISOString();
    this.objects[resource].set(key, stored);
    this.publish({ rv: this.rv, resource, type: previous ? 'MODIFIED' : 'ADDED', object: stored, previous });
    return clone(stored);
  }

  private remove(resource: Resource, key: string): boolean {
    const previous = this.objects[resource].get(key);
    if (!previous) return false;
    this.objects[resource].delete(key);
    this.rv += 1;
    const gone = clone(previous);
    gone.metadata.resourceVersion = String(this.rv);
    this.publish({ rv: this.rv, resource, type: 'DELETED', object: gone });
    return true;
  }

  private publish(ev: HistoryEvent): void {
    this.history.push(ev);
    for (const w of this.watchers) this.deliver(w, ev);
  }

  /** Sends one history event to one watcher, translated by the watcher's selector. */
  private deliver(w: Watcher, ev: HistoryEvent): void {
    if (ev.resource !== w.resource) return;
    const inNs = (o: KubeObject) => w.namespace === undefined || o.metadata.namespace === w.namespace;
    const now = inNs(ev.object) && matches(ev.object, w.selector);
    if (ev.type === 'MODIFIED') {
      const before = ev.previous !== undefined && inNs(ev.previous) && matches(ev.previous, w.selector);
      if (before && now) this.writeEvent(w, 'MODIFIED', ev.object);
      else if (!before && now) this.writeEvent(w, 'ADDED', ev.object);
      else if (before && !now) this.writeEvent(w, 'DELETED', ev.object);
      return;
    }
    if (now) this.writeEvent(w, ev.type, ev.object);
  }

  private writeEvent(w: Watcher, type: string, object: unknown): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private endWatch(w: Watcher, abrupt = false): void {
    this.watchers.delete(w);
    if (w.timer) clearTimeout(w.timer);
    if (abrupt) w.res.destroy();
    else w.res.end();
  }

  private reply(req: IncomingMessage, res: ServerResponse, code: number, body: unknown, reqBody: unknown): void {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({
      method: req.method ?? '',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      contentType: req.headers['content-type'],
      body: reqBody,
      status: code,
    });
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private async readBody(req: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > 1 << 20) throw new Error('request body too large');
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.hanging) {
      this.hung.add(res);
      res.on('close', () => this.hung.delete(res));
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    const q = url.searchParams;
    if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
      this.reply(req, res, 401, status(401, 'Unauthorized', 'Unauthorized'), undefined);
      return;
    }
    const sm = /^\/api\/v1\/namespaces\/([^/]+)\/secrets(?:\/([^/]+))?$/.exec(url.pathname);
    if (sm) {
      await this.handleSecret(req, res, decodeURIComponent(sm[1]!), sm[2] !== undefined ? decodeURIComponent(sm[2]) : undefined);
      return;
    }
    const m =
      /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?(nodes|pods)(?:\/([^/]+))?$/.exec(url.pathname) ?? undefined;
    if (!m) {
      this.reply(req, res, 404, status(404, 'NotFound', `the server could not find the requested resource ${url.pathname}`), undefined);
      return;
    }
    const namespace = m[1] !== undefined ? decodeURIComponent(m[1]) : undefined;
    const resource = m[2] as Resource;
    const name = m[3] !== undefined ? decodeURIComponent(m[3]) : undefined;
    if (resource === 'nodes' && namespace !== undefined) {
      this.reply(req, res, 404, status(404, 'NotFound', 'nodes are cluster-scoped'), undefined);
      return;
    }

    if (req.method === 'PATCH' && resource === 'nodes' && name !== undefined) {
      await this.patchNode(req, res, name);
      return;
    }
    if (req.method !== 'GET') {
      this.reply(req, res, 405, status(405, 'MethodNotAllowed', `${req.method} not supported by the fake`), undefined);
      return;
    }
    if (name !== undefined) {
      const key = resource === 'pods' ? `${namespace ?? 'default'}/${name}` : name;
      const obj = this.objects[resource].get(key);
      if (!obj) this.reply(req, res, 404, status(404, 'NotFound', `${resource} "${name}" not found`), undefined);
      else this.reply(req, res, 200, obj, undefined);
      return;
    }

    let selector: Requirement[];
    try {
      selector = parseFieldSelector(q.get('fieldSelector') ?? undefined, resource);
    } catch (err) {
      this.reply(req, res, 400, status(400, 'BadRequest', (err as Error).message), undefined);
      return;
    }
    const watch = q.get('watch') === 'true' || q.get('watch') === '1';
    if (!watch) {
      const items = [...this.objects[resource].values()].filter(
        (o) => (namespace === undefined || o.metadata.namespace === namespace) && matches(o, selector),
      );
      this.reply(req, res, 200, { kind: LIST_KIND[resource], apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items }, undefined);
      return;
    }
    this.startWatch(req, res, resource, namespace, selector);
  }

  private startWatch(req: IncomingMessage, res: ServerResponse, resource: Resource, namespace: string | undefined, selector: Requirement[]): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const q = url.searchParams;
    const rvParam = q.get('resourceVersion') ?? '';
    const fromRV = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (fromRV !== undefined && !Number.isSafeInteger(fromRV)) {
      this.reply(req, res, 400, status(400, 'BadRequest', `invalid resourceVersion "${rvParam}"`), undefined);
      return;
    }
    const gone = fromRV !== undefined && fromRV < this.compactedRV;
    if (gone && this.opts.goneAs === 'http') {
      this.reply(req, res, 410, status(410, 'Expired', 'too old resource version'), undefined);
      return;
    }
    this.requests.push({
      method: 'GET',
      path: url.pathname,
      query: Object.fromEntries(q),
      contentType: undefined,
      body: undefined,
      status: 200,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { resource, namespace, selector, bookmarks: q.get('allowWatchBookmarks') === 'true', res };
    if (gone) {
      this.writeEvent(w, 'ERROR', status(410, 'Expired', `too old resource version: ${fromRV} (${this.compactedRV})`));
      res.end();
      return;
    }
    this.watchers.add(w);
    res.on('close', () => {
      this.watchers.delete(w);
      if (w.timer) clearTimeout(w.timer);
    });
    if (fromRV === undefined) {
      for (const o of this.objects[resource].values()) {
        if ((namespace === undefined || o.metadata.namespace === namespace) && matches(o, selector)) this.writeEvent(w, 'ADDED', o);
      }
    } else {
      for (const ev of this.history) if (ev.rv > fromRV) this.deliver(w, ev);
    }
    const timeout = Number(q.get('timeoutSeconds') ?? '');
    if (Number.isFinite(timeout) && timeout > 0) {
      w.timer = setTimeout(() => this.endWatch(w), timeout * 1000);
    }
  }

  private async handleSecret(req: IncomingMessage, res: ServerResponse, namespace: string, name: string | undefined): Promise<void> {
    const method = req.method ?? 'GET';
    if (method === 'GET' && name !== undefined) {
      const obj = this.secrets.get(`${namespace}/${name}`);
      if (!obj) this.reply(req, res, 404, status(404, 'NotFound', `secrets "${name}" not found`), undefined);
      else this.reply(req, res, 200, obj, undefined);
      return;
    }
    if (!((method === 'PUT' && name !== undefined) || (method === 'POST' && name === undefined))) {
      this.reply(req, res, 405, status(405, 'MethodNotAllowed', `${method} on secrets not supported by the fake`), undefined);
      return;
    }
    const text = await this.readBody(req);
    let body: KubeObject;
    try {
      body = JSON.parse(text) as KubeObject;
    } catch {
      this.reply(req, res, 400, status(400, 'BadRequest', 'body is not JSON'), text);
      return;
    }
    const target = name ?? body.metadata?.name;
    if (typeof target !== 'string' || target === '' || (name !== undefined && body.metadata?.name !== undefined && body.metadata.name !== name)) {
      this.reply(req, res, 400, status(400, 'BadRequest', 'the name of the object does not match the name on the URL'), body);
      return;
    }
    const injected = this.beforeSecretWrite?.(namespace, target, method);
    if (typeof injected === 'number') {
      this.reply(req, res, injected, status(injected, 'InternalError', `injected failure ${injected}`), body);
      return;
    }
    const key = `${namespace}/${target}`;
    const current = this.secrets.get(key);
    const data = (body as { data?: Record<string, string> }).data;
    const size = Object.values(data ?? {}).reduce((n, v) => n + Buffer.from(String(v), 'base64').length, 0);
    if (size > 1024 * 1024) {
      this.reply(req, res, 422, status(422, 'Invalid', `Secret "${target}" is invalid: data: Too long: must have at most 1048576 bytes`), body);
      return;
    }
    if (method === 'POST') {
      if (current) {
        this.reply(req, res, 409, status(409, 'AlreadyExists', `secrets "${target}" already exists`), body);
        return;
      }
    } else {
      if (!current) {
        this.reply(req, res, 404, status(404, 'NotFound', `secrets "${target}" not found`), body);
        return;
      }
      const rv = body.metadata?.resourceVersion;
      if (rv !== undefined && rv !== '' && rv !== current.metadata.resourceVersion) {
        this.reply(req, res, 409, status(409, 'Conflict', `Operation cannot be fulfilled on secrets "${target}": the object has been modified; please apply your changes to the latest version and try again`), body);
        return;
      }
    }
    const { metadata, ...rest } = body;
    const stored = this.putSecret(namespace, target, data, { ...rest, metadata: { ...metadata, name: target } } as Partial<KubeObject>);
    this.reply(req, res, method === 'POST' ? 201 : 200, stored, body);
  }

  private async patchNode(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const text = await this.readBody(req);
    const ct = (req.headers['content-type'] ?? '').split(';')[0]?.trim();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      this.reply(req, res, 400, status(400, 'BadRequest', 'patch body is not JSON'), text);
      return;
    }
    if (ct !== 'application/merge-patch+json' && ct !== 'application/strategic-merge-patch+json') {
      this.reply(req, res, 415, status(415, 'UnsupportedMediaType', `the fake does not support patch type ${ct}`), body);
      return;
    }
    const current = this.objects.nodes.get(name);
    if (!current) {
      this.reply(req, res, 404, status(404, 'NotFound', `nodes "${name}" not found`), body);
      return;
    }
    const patched = mergePatch(current, body) as KubeObject;
    patched.metadata = { ...patched.metadata, name, uid: current.metadata.uid };
    const stored = this.upsert('nodes', patched);
    this.reply(req, res, 200, stored, body);
  }
}
