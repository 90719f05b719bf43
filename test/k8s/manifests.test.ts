/**
 * deploy/: every manifest parses and validates against the Kubernetes OpenAPI schemas
 * (kubernetes-models' generated validators), has no field unknown to the API types (a strict check
 * the schema validators do not make, using @kubernetes/client-node's attribute maps), and carries
 * what issue 6 requires of it. The CNI install script is run for real in a temp directory.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { Namespace, ServiceAccount, ConfigMap, Secret } from 'kubernetes-models/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { afterAll, describe, expect, it } from 'vitest';
import { AGENT_OPTIONS, parseConfig } from '../../src/config.ts';
import { DEFAULT_TOKEN_SECRET, agentNamespace } from '../../src/k8s/token-secret.ts';

const DEPLOY = join(import.meta.dirname, '..', '..', 'deploy');

/** kubernetes-models class and client-node type name per apiVersion/kind. */
const KINDS: Record<string, { model: { new (data: any): { validate(): void } }; clientType: string }> = {
  'v1/Namespace': { model: Namespace, clientType: 'V1Namespace' },
  'v1/ServiceAccount': { model: ServiceAccount, clientType: 'V1ServiceAccount' },
  'v1/ConfigMap': { model: ConfigMap, clientType: 'V1ConfigMap' },
  'v1/Secret': { model: Secret, clientType: 'V1Secret' },
  'apps/v1/DaemonSet': { model: DaemonSet, clientType: 'V1DaemonSet' },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole, clientType: 'V1ClusterRole' },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding, clientType: 'V1ClusterRoleBinding' },
  'rbac.authorization.k8s.io/v1/Role': { model: Role, clientType: 'V1Role' },
  'rbac.authorization.k8s.io/v1/RoleBinding': { model: RoleBinding, clientType: 'V1RoleBinding' },
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': { model: ValidatingAdmissionPolicy, clientType: 'V1ValidatingAdmissionPolicy' },
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': {
    model: ValidatingAdmissionPolicyBinding,
    clientType: 'V1ValidatingAdmissionPolicyBinding',
  },
};

type Attr = { baseName: string; type: string };
const PRIMITIVES = new Set(['string', 'number', 'boolean', 'Date', 'any', 'object', 'IntOrString', 'RawExtension']);

/** Paths of fields that the Kubernetes API type (per client-node's attribute maps) does not have. */
function unknownFields(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, arr[1]!, `${path}[${i}]`)) : [`${path} (not a list)`];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return Object.entries(value as object).flatMap(([kk, v]) => unknownFields(v, map[1]!, `${path}.${kk}`));
  if (PRIMITIVES.has(type)) return [];
  const cls = (k8s as unknown as Record<string, { getAttributeTypeMap?: () => Attr[] }>)[type];
  if (cls?.getAttributeTypeMap === undefined) return [];
  const attrs = cls.getAttributeTypeMap();
  return Object.entries(value as object).flatMap(([kk, v]) => {
    const a = attrs.find((x) => x.baseName === kk);
    return a ? unknownFields(v, a.type, `${path}.${kk}`) : [`${path}.${kk}`];
  });
}

const manifestFiles = readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml');
/**
 * Plain JSON from the YAML, parsed as YAML 1.1 like kubectl's parser. (client-node's loadAllYaml
 * deserializes into typed classes, dropping unknown fields, which would hide exactly the typos the
 * strict check looks for.)
 */
function parseManifest(file: string): any[] {
  return parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'), { version: '1.1' }).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS();
  });
}
const docs: { file: string; obj: any }[] = manifestFiles.flatMap((file) =>
  parseManifest(file)
    .filter((o) => o !== null && o !== undefined)
    .map((obj) => ({ file, obj })),
);
const find = (kind: string, name?: string) => docs.find((d) => d.obj.kind === kind && (name === undefined || d.obj.metadata?.name === name))?.obj;

describe('deploy/ manifests', () => {
  it('has the expected set of objects', () => {
    expect(docs.length).toBeGreaterThanOrEqual(8);
    for (const kind of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Secret', 'ConfigMap', 'DaemonSet', 'ValidatingAdmissionPolicy']) {
      expect(find(kind), kind).toBeDefined();
    }
  });

  it.each(docs.map((d) => [`${d.file}: ${d.obj.kind}/${d.obj.metadata?.name}`, d.obj] as const))(
    '%s validates against the Kubernetes OpenAPI schema, with no unknown field',
    (_label, obj) => {
      const entry = KINDS[`${obj.apiVersion}/${obj.kind}`];
      expect(entry, `no schema registered for ${obj.apiVersion}/${obj.kind}`).toBeDefined();
      expect(() => new entry!.model(obj).validate()).not.toThrow();
      expect(unknownFields(obj, entry!.clientType, '')).toEqual([]);
    },
  );

  it('the schema checks catch broken manifests (the validators are really engaged)', () => {
    const ds = structuredClone(find('DaemonSet'));
    ds.spec.template.spec.containers[0].ports[0].containerPort = 'seven';
    expect(() => new DaemonSet(ds).validate()).toThrow(/containerPort/);
    const typo = structuredClone(find('DaemonSet'));
    typo.spec.template.spec.hostNetwrok = true;
    expect(unknownFields(typo, 'V1DaemonSet', '')).toEqual(['.spec.template.spec.hostNetwrok']);
  });

  it('the kustomization lists every manifest, and only existing files', () => {
    const kz = parseYaml(readFileSync(join(DEPLOY, 'kustomization.yaml'), 'utf8'), { version: '1.1' });
    expect(kz.apiVersion).toBe('kustomize.config.k8s.io/v1beta1');
    expect(kz.kind).toBe('Kustomization');
    for (const r of kz.resources) expect(existsSync(join(DEPLOY, r)), r).toBe(true);
    const own = ['namespace.yaml', 'rbac.yaml', 'token-secret.yaml', 'node-patch-policy.yaml', 'configmap.yaml', 'daemonset.yaml'];
    expect([...kz.resources].sort()).toEqual(expect.arrayContaining(own));
    const images = find('DaemonSet').spec.template.spec;
    const used = new Set([...images.containers, ...images.initContainers].map((c: any) => c.image.split(':')[0]));
    expect(kz.images.map((i: any) => i.name)).toEqual([...used]);
  });

  it('the ClusterRole is least privilege: read nodes and pods, patch nodes, nothing else', () => {
    const role = find('ClusterRole', 'weft');
    const grants = role.rules.flatMap((r: any) =>
      r.apiGroups.flatMap((g: string) => r.resources.flatMap((res: string) => r.verbs.map((v: string) => `${g}/${res}/${v}`))),
    );
    expect(grants.sort()).toEqual(['/nodes/get', '/nodes/list', '/nodes/patch', '/nodes/watch', '/pods/get', '/pods/list', '/pods/watch']);
    expect(JSON.stringify(role)).not.toMatch(/"\*"/);
    const binding = find('ClusterRoleBinding', 'weft');
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: 'weft' });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'weft', namespace: 'weft' }]);
    const rbacText = readFileSync(join(DEPLOY, 'rbac.yaml'), 'utf8');
    expect(rbacText).toMatch(/cannot be scoped|RBAC alone/);
    // The admission policy scopes the patch to the agent's own node.
    const vap = find('ValidatingAdmissionPolicy');
    expect(vap.spec.matchConditions[0].expression).toContain('system:serviceaccount:weft:weft');
    expect(vap.spec.validations[0].expression).toContain('authentication.kubernetes.io/node-name');
    expect(find('ValidatingAdmissionPolicyBinding').spec).toMatchObject({ policyName: vap.metadata.name, validationActions: ['Deny'] });
  });

  it('the ConfigMap holds cluster CIDR, MTU, DNS zone and backend, and no secret', () => {
    const cm = find('ConfigMap', 'weft-config');
    expect(Object.keys(cm.data)).toEqual(expect.arrayContaining(['cluster-cidr', 'mtu', 'dns-zone', 'backend']));
    expect(Object.keys(cm.data).join(' ')).not.toMatch(/key|secret|token/i);
    // The mesh key Secret is generated by the admin, never committed; the only committed Secret is the empty token mirror.
    expect(docs.filter((d) => d.obj.kind === 'Secret').map((d) => d.obj.metadata.name)).toEqual(['weft-join-tokens']);
  });

  it('the join-token Secret is committed empty (apply never overwrites what the agents write)', () => {
    const s = find('Secret', 'weft-join-tokens');
    expect(s.metadata.namespace).toBe('weft');
    expect(s.type).toBe('Opaque');
    expect(s.data).toBeUndefined();
    expect(s.stringData).toBeUndefined();
  });

  it('the agent may get and update the join-token Secret by name, and no other Secret, in its namespace only', () => {
    const roles = docs.filter((d) => d.obj.kind === 'Role').map((d) => d.obj);
    expect(roles.map((r) => r.metadata.name)).toEqual(['weft-join-tokens']);
    const role = roles[0];
    expect(role.metadata.namespace).toBe('weft');
    expect(role.rules).toEqual([{ apiGroups: [''], resources: ['secrets'], resourceNames: ['weft-join-tokens'], verbs: ['get', 'update'] }]);
    // No Secret access anywhere else: not in the ClusterRole, no create/list/watch/patch/delete.
    expect(JSON.stringify(find('ClusterRole', 'weft'))).not.toContain('secrets');
    const binding = find('RoleBinding', 'weft-join-tokens');
    expect(binding.metadata.namespace).toBe('weft');
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'weft-join-tokens' });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'weft', namespace: 'weft' }]);
    // The names the agent uses by default are the ones granted.
    expect(find('Secret').metadata.name).toBe(DEFAULT_TOKEN_SECRET);
  });

  describe('the DaemonSet', () => {
    const ds = find('DaemonSet');
    const pod = ds.spec.template.spec;
    const agent = pod.containers.find((c: any) => c.name === 'weft');
    const env = Object.fromEntries(agent.env.map((e: any) => [e.name, e]));

    it('runs on the host network with NET_ADMIN and NET_RAW, not privileged', () => {
      expect(pod.hostNetwork).toBe(true);
      for (const c of [...pod.containers, ...pod.initContainers]) expect(c.securityContext?.privileged ?? false).toBe(false);
      expect(agent.securityContext.capabilities.add).toEqual(expect.arrayContaining(['NET_ADMIN', 'NET_RAW']));
      expect(agent.securityContext.capabilities.drop).toEqual(['ALL']);
    });

    it('tolerates every taint, is system-node-critical, and updates one node at a time', () => {
      expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
      expect(pod.tolerations.find((t: any) => t.operator === 'Exists').key).toBeUndefined();
      expect(pod.priorityClassName).toBe('system-node-critical');
      expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
    });

    it('probes /healthz and /readyz on the agent metrics address', () => {
      const [host, port] = env.WEFT_METRICS_ADDR.value.split(':');
      expect(agent.livenessProbe.httpGet).toEqual({ host, port: Number(port), path: '/healthz' });
      expect(agent.readinessProbe.httpGet).toEqual({ host, port: Number(port), path: '/readyz' });
    });

    it('sets requests and limits on every container', () => {
      for (const c of [...pod.containers, ...pod.initContainers]) {
        expect(Object.keys(c.resources.requests).sort(), c.name).toEqual(['cpu', 'memory']);
        expect(Object.keys(c.resources.limits).sort(), c.name).toEqual(['cpu', 'memory']);
      }
    });

    it('mounts the state, run, CNI and modules host paths, and the mesh key from its Secret', () => {
      const hostPaths = Object.fromEntries(pod.volumes.filter((v: any) => v.hostPath).map((v: any) => [v.name, v.hostPath.path]));
      const mounted = Object.fromEntries(agent.volumeMounts.map((m: any) => [hostPaths[m.name] ?? m.name, m.mountPath]));
      for (const p of ['/var/lib/weft', '/run/weft', '/etc/cni/net.d', '/opt/cni/bin', '/lib/modules']) expect(mounted[p], p).toBe(p);
      const secretVol = pod.volumes.find((v: any) => v.secret);
      expect(secretVol.secret).toMatchObject({ secretName: 'weft-mesh-key', defaultMode: 0o400 });
      const keyMount = agent.volumeMounts.find((m: any) => m.name === secretVol.name);
      expect(env.WEFT_MESH_KEY_FILE.value).toBe(`${keyMount.mountPath}/mesh.key`);
      expect(keyMount.readOnly).toBe(true);
    });

    it('installs the CNI plugin from an init container into the mounted host dirs', () => {
      const init = pod.initContainers.find((c: any) => c.name === 'install-cni');
      expect(init.command).toEqual(['/opt/weft/install-cni.sh']);
      const ienv = Object.fromEntries(init.env.map((e: any) => [e.name, e.value]));
      const mounts = Object.fromEntries(init.volumeMounts.map((m: any) => [m.mountPath, m.name]));
      const hostPathOf = (vol: string) => pod.volumes.find((v: any) => v.name === vol).hostPath.path;
      expect(hostPathOf(mounts[ienv.CNI_BIN_DIR])).toBe('/opt/cni/bin');
      expect(hostPathOf(mounts[ienv.CNI_NET_DIR])).toBe('/etc/cni/net.d');
      expect(ienv.WEFT_SOCKET).toBe(`${env.WEFT_RUN_DIR.value}/weft.sock`);
    });

    it('only sets WEFT_* variables the agent knows, and takes the node name from the downward API', () => {
      // POD_NAMESPACE: where the join-token Secret lives (src/k8s/token-secret.ts agentNamespace).
      const known = new Set([...AGENT_OPTIONS.map((o) => o.env), 'POD_NAMESPACE']);
      expect(env.POD_NAMESPACE.valueFrom.fieldRef.fieldPath).toBe('metadata.namespace');
      expect(agentNamespace({ POD_NAMESPACE: 'weft' })).toBe(find('Secret', 'weft-join-tokens').metadata.namespace);
      for (const name of Object.keys(env)) expect(known.has(name), `${name} is not an agent option`).toBe(true);
      expect(env.WEFT_NAME.valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
      const cm = find('ConfigMap', 'weft-config');
      for (const e of agent.env) {
        if (e.valueFrom?.configMapKeyRef) {
          expect(e.valueFrom.configMapKeyRef.name).toBe('weft-config');
          expect(cm.data[e.valueFrom.configMapKeyRef.key], e.name).toBeDefined();
        }
      }
    });

    it("yields a valid agent Config through the agent's own parser (downward API values filled in)", () => {
      const cm = find('ConfigMap', 'weft-config');
      const fieldValues: Record<string, string> = { 'spec.nodeName': 'worker-1', 'status.hostIP': '192.0.2.21' };
      const podEnv: Record<string, string> = {};
      for (const e of agent.env) {
        if (e.value !== undefined) podEnv[e.name] = e.value;
        else if (e.valueFrom?.configMapKeyRef) podEnv[e.name] = cm.data[e.valueFrom.configMapKeyRef.key];
        else if (e.valueFrom?.fieldRef) podEnv[e.name] = fieldValues[e.valueFrom.fieldRef.fieldPath]!;
      }
      const cfg = parseConfig({}, podEnv);
      expect(cfg).toMatchObject({
        name: 'worker-1',
        listenAddr: '192.0.2.21',
        meshPort: 7946,
        wgPort: 51820,
        clusterCIDRs: ['10.244.0.0/16'],
        mtu: 'auto',
        dnsZone: 'weft.local',
        backend: 'auto',
        stateDir: '/var/lib/weft',
        runDir: '/run/weft',
        meshKeyFile: '/etc/weft/mesh/mesh.key',
        metricsAddr: { host: '127.0.0.1', port: 9465 },
        kubeconfig: undefined,
      });
      expect(cfg.dnsListen).toEqual([{ host: '169.254.20.11', port: 53 }]);
      // The declared host ports are the ones the agent uses.
      const ports = agent.ports.map((p: any) => `${p.protocol}/${p.containerPort}`).sort();
      expect(ports).toEqual([`TCP/${cfg.meshPort}`, `UDP/${cfg.meshPort}`, `UDP/${cfg.wgPort}`].sort());
    });
  });
});

describe('deploy/install-cni.sh', () => {
  const root = mkdtempSync(join(tmpdir(), 'weft-cni-install-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const dist = join(root, 'dist');
  mkdirSync(dist);
  writeFileSync(join(dist, 'weft-cni'), '#!/bin/sh\nexec "$(dirname "$0")/weft-runtime/node" "$(dirname "$0")/weft-runtime/weft-cni.mjs" "$@"\n');
  writeFileSync(join(dist, 'weft-cni.mjs'), 'console.log("plugin v1")\n');
  const fakeNode = join(root, 'node');
  writeFileSync(fakeNode, '#!/bin/sh\necho node\n');
  chmodSync(fakeNode, 0o755);
  const bin = join(root, 'host', 'opt', 'cni', 'bin');
  const net = join(root, 'host', 'etc', 'cni', 'net.d');
  const run = (extra: Record<string, string> = {}) =>
    spawnSync('sh', [join(DEPLOY, 'install-cni.sh')], {
      env: { PATH: '/usr/bin:/bin', WEFT_DIST: dist, WEFT_NODE: fakeNode, CNI_BIN_DIR: bin, CNI_NET_DIR: net, ...extra },
      encoding: 'utf8',
    });

  it('installs the launcher, the runtime and the conflist, with the right modes', () => {
    const r = run();
    expect(r.stderr).toContain('installed');
    expect(r.status).toBe(0);
    expect(readFileSync(join(bin, 'weft-runtime', 'weft-cni.mjs'), 'utf8')).toBe('console.log("plugin v1")\n');
    expect(statSync(join(bin, 'weft-cni')).mode & 0o777).toBe(0o755);
    expect(statSync(join(bin, 'weft-runtime', 'node')).mode & 0o777).toBe(0o755);
    expect(execFileSync(join(bin, 'weft-runtime', 'node'), { encoding: 'utf8' })).toBe('node\n');
    const conf = JSON.parse(readFileSync(join(net, '10-weft.conflist'), 'utf8'));
    expect(conf).toEqual({ cniVersion: '1.1.0', name: 'weft', plugins: [{ type: 'weft-cni', socket: '/run/weft/weft.sock' }] });
  });

  it('is idempotent, replaces old files and leaves no temp files behind', () => {
    writeFileSync(join(dist, 'weft-cni.mjs'), 'console.log("plugin v2")\n');
    expect(run({ WEFT_SOCKET: '/var/run/weft/weft.sock' }).status).toBe(0);
    expect(run({ WEFT_SOCKET: '/var/run/weft/weft.sock' }).status).toBe(0);
    expect(readFileSync(join(bin, 'weft-runtime', 'weft-cni.mjs'), 'utf8')).toBe('console.log("plugin v2")\n');
    expect(JSON.parse(readFileSync(join(net, '10-weft.conflist'), 'utf8')).plugins[0].socket).toBe('/var/run/weft/weft.sock');
    const all = [...readdirSync(bin), ...readdirSync(join(bin, 'weft-runtime')), ...readdirSync(net)];
    expect(all.filter((f) => f.includes('weft-tmp'))).toEqual([]);
  });

  it('refuses a socket path that would break the JSON, and a missing build', () => {
    const bad = run({ WEFT_SOCKET: '/run/weft/"x.sock' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/WEFT_SOCKET/);
    expect(run({ WEFT_SOCKET: 'relative.sock' }).status).not.toBe(0);
    const missing = run({ WEFT_DIST: join(root, 'nope') });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/npm run build/);
  });
});
