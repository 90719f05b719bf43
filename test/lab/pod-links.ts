/**
 * Helpers the relay lab tests share: pinging between the lab's pods and reading one peer out of an
 * agent's status, with a one-line rendering for failure messages.
 */
import type { AgentStatus, PeerStatus } from '../../src/agent/agent.ts';
import { type Lab, waitFor } from '../../src/lab/lab.ts';

/** The first pod of `node`. */
export function podOf(lab: Lab, node: string): Lab['meta']['pods'][number] {
  const p = lab.meta.pods.find((x) => x.node === node);
  if (!p) throw new Error(`lab ${lab.prefix}: no pod on ${node}`);
  return p;
}

/** One ping round (`count` echoes, 0.2 s apart) from `from`'s pod to `to`'s pod; true when it got answers. */
export async function pingPod(lab: Lab, from: string, to: string, count = 1): Promise<boolean> {
  const r = await lab.exec(podOf(lab, from).netns, ['ping', '-n', '-c', String(count), '-i', '0.2', '-W', '2', podOf(lab, to).ip], { check: false });
  return r.code === 0;
}

/** Waits until `from`'s pod gets an answer from `to`'s pod, pinging once a second. */
export function reachPod(lab: Lab, from: string, to: string, timeoutMs = 60_000): Promise<true> {
  return waitFor(`${podOf(lab, from).netns} -> ${podOf(lab, to).ip}`, timeoutMs, async () => ((await pingPod(lab, from, to)) ? true : undefined), 1000);
}

/** The peer `name` in an agent's status. */
export function peerOf(st: AgentStatus, name: string): PeerStatus | undefined {
  return st.peers.find((p) => p.name === name);
}

/** One line per peer for failure messages and progress logs. */
export function peerRow(p: PeerStatus | undefined): string {
  return p ? `${p.name} ${p.endpoint} ${p.link}${p.relay ? ` via ${p.relay}` : ''} hs=${p.lastHandshake}` : 'absent';
}
