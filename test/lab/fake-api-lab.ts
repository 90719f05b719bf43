/**
 * A fake Kubernetes API server (test/k8s/fake-apiserver.ts) the agents of a lab reach over the lab's
 * underlay, for the lab e2e tests that run agents in Kubernetes mode.
 */
import { writeFile } from 'node:fs/promises';
import type { Lab } from '../../src/lab/lab.ts';
import { FakeApiServer, type KubeObject } from '../k8s/fake-apiserver.ts';

/** Node index -> the podCIDR its Node object carries (deliberately not the lab's 10.244.<i>.0/24). */
export const nodePodCIDR = (index: number): string => `10.244.${100 + index}.0/24`;

/** A Node object as the kubelet registers it: podCIDR(s), InternalIP and Hostname. */
export const nodeObject = (name: string, ip: string, podCIDR: string): KubeObject => ({
  metadata: { name },
  spec: { podCIDR, podCIDRs: [podCIDR] },
  status: { addresses: [{ type: 'InternalIP', address: ip }, { type: 'Hostname', address: name }] },
});

/** The running server, and how to stop it. */
export interface LabApiServer {
  readonly server: FakeApiServer;
  /** Stops the watch bookmarks and the server. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts the server on the lab's underlay, for `Lab.up`'s `beforeAgents`: a veth from the host
 * (`<prefix>api`, address .250) into the underlay bridge, the kubeconfig written to `kubeconfig`
 * (0600), one Node object per lab node, and watch bookmarks every 2 s. A real API server sends
 * bookmarks periodically; they tell the agent its pod view is current (a pod is only judged gone
 * once the view is fresh 30 s past its CNI ADD). The veth is the lab host's, so `lab down` removes it.
 */
export async function startLabApiServer(l: Lab, prefix: string, kubeconfig: string): Promise<LabApiServer> {
  const base = l.meta.subnet.split('/')[0]!.split('.').slice(0, 3).join('.');
  const apiIP = `${base}.250`;
  await l.host.addVeth({ name: `${prefix}api` }, { name: 'api', netns: l.underlayNetns });
  await l.host.exec({ netns: l.underlayNetns }, ['ip', 'link', 'set', 'api', 'master', 'br0']);
  await l.host.addAddress(undefined, `${prefix}api`, `${apiIP}/24`);
  const server = await FakeApiServer.start({ host: apiIP, token: 'lab-token' });
  const bookmarks = setInterval(() => server.bookmark(), 2000);
  await writeFile(kubeconfig, server.kubeconfigText(), { mode: 0o600 });
  for (const n of l.meta.nodes) server.upsertNode(nodeObject(n.name, n.underlayIP, nodePodCIDR(n.index)));
  return {
    server,
    async close() {
      clearInterval(bookmarks);
      await server.close();
    },
  };
}
