/**
 * End-to-end test of the join-token Secret mirror (issue 7) with real agents in a lab whose agents talk to
 * the fake Kubernetes API server (as in e2e-k8s): `POST /v1/token/create` and `/revoke` on one agent land in
 * the Secret `weft/weft-join-tokens` (write-through), then the WHOLE mesh restarts (both agents stopped, then
 * started: the mesh has no token state left) and an agent re-publishes the live token from the Secret, which
 * every member then lists with its original id, issuer, expiry and uses; the revoked one stays gone.
 * Namespace prefix: wtk2.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor } from '../../src/lab/lab.ts';
import { LabHost, removeStaleLabs } from '../../src/lab/host.ts';
import type { TokenListing } from '../../src/token/store.ts';
import { mirrorKey, parseMirrored } from '../../src/token/mirror.ts';
import { labPrerequisites } from './prerequisites.ts';
import type { FakeApiServer } from '../k8s/fake-apiserver.ts';
import { startLabApiServer, type LabApiServer } from './fake-api-lab.ts';

const { skip, why: WHY, prefix: PREFIX } = labPrerequisites({ tools: ['ip', 'nsenter', 'unshare'], wireguard: true, prefix: 'wtk2' });

let lab: Lab;
let api: LabApiServer | undefined;
let server: FakeApiServer | undefined;
let tmp = '';
const log = (msg: string): void => {
  process.stderr.write(`[token-secret] ${msg}\n`);
};
const secretData = (): Record<string, string> => ((server?.getSecret('weft', 'weft-join-tokens') as { data?: Record<string, string> } | undefined)?.data ?? {});
const mirrored = (id: string) => {
  const v = secretData()[mirrorKey(id)];
  return v === undefined ? undefined : parseMirrored(mirrorKey(id), v);
};
const list = async (node: string) => (await lab.client(node).get<{ tokens: TokenListing[] }>('/v1/token/list')).tokens;

beforeAll(async () => {
  if (skip) return;
  await removeStaleLabs(/^wtk2[a-z0-9]{3}$/);
  tmp = await mkdtemp(join(tmpdir(), `${PREFIX}-`));
  const kubeconfig = join(tmp, 'kubeconfig');
  lab = new Lab({ prefix: PREFIX, progress: log, warn: log, resync: '5s' });
  await lab.up({
    nodes: 2,
    podsPerNode: 0,
    kubeconfig,
    beforeAgents: async (l) => {
      api = await startLabApiServer(l, PREFIX, kubeconfig);
      server = api.server;
      // deploy/token-secret.yaml: the Secret exists, empty, before the agents start.
      server.putSecret('weft', 'weft-join-tokens', undefined, { metadata: { name: 'weft-join-tokens', labels: { 'app.kubernetes.io/component': 'join-tokens' } } });
    },
  });
}, 240_000);

afterAll(async () => {
  if (skip) return;
  await new LabHost({ prefix: PREFIX, warn: log }).down();
  await api?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
}, 120_000);

describe.skipIf(skip)(`e2e: join tokens mirrored into a Kubernetes Secret${WHY}`, () => {
  let live: { id: string; token: string; expiresAt: number };
  let revoked: { id: string };

  it('token create and revoke on one agent land in the Secret; the Secret holds no secret', async () => {
    const [n1] = lab.meta.nodes.map((n) => n.name);
    const c = lab.client(n1!, 10_000);
    live = await c.post('/v1/token/create', { ttl: '2h', uses: 2, seeds: ['192.0.2.1:7947'], description: 'edge' });
    revoked = await c.post('/v1/token/create', { ttl: '2h', uses: 1, seeds: ['192.0.2.1:7947'] });
    await c.post('/v1/token/revoke', { id: revoked.id });
    await waitFor('both tokens in the Secret, one revoked', 20_000, async () => (mirrored(live.id) && mirrored(revoked.id)?.revoked ? true : undefined));
    expect(mirrored(live.id)).toMatchObject({ issuedBy: n1, uses: 2, spent: 0, description: 'edge', expiresAt: live.expiresAt });
    const secret = live.token.split('.')[2]!;
    expect(JSON.stringify(server!.getSecret('weft', 'weft-join-tokens'))).not.toContain(secret);
    expect(Object.values(secretData()).map((v) => Buffer.from(v, 'base64').toString('utf8')).join('')).not.toContain(secret);
  });

  it('after the whole mesh restarts, the live token is re-published from the Secret and listed by every member; the revoked one is not', async () => {
    const names = lab.meta.nodes.map((n) => n.name);
    for (const n of names) await lab.stopAgent(n);
    await waitFor('agents stopped', 30_000, async () => (names.every((n) => lab.agentPid(n) === undefined) ? true : undefined));
    for (const n of names) await lab.startAgent(n);
    for (const n of names) await lab.waitReady(n, 90_000);
    // Read-back runs 20 s after start; then gossip spreads the restored entry.
    for (const n of names) {
      await waitFor(`${n} to list the restored token`, 90_000, async () => ((await list(n)).some((t) => t.id === live.id) ? true : undefined), 1000);
      const t = (await list(n)).find((x) => x.id === live.id)!;
      expect(t).toMatchObject({ issuedBy: names[0], uses: 2, usesLeft: 2, status: 'valid', expiresAt: live.expiresAt, description: 'edge' });
      expect(names).toContain(t.restoredBy);
      expect((await list(n)).some((x) => x.id === revoked.id)).toBe(false);
    }
    // The Secret still holds both (the revoked one until it expires), unchanged by the restore.
    expect(mirrored(live.id)).toMatchObject({ issuedBy: names[0], uses: 2, spent: 0 });
    expect(mirrored(revoked.id)?.revoked).toBeDefined();
  }, 300_000);
});
