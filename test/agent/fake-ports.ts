/**
 * Test doubles of the agent's datapath and host-network ports (`src/agent/ports.ts`), shared by the
 * agent and relay tests that run real Agents over the fake mesh.
 */
import type { MeshSnapshot } from '../../mesh/api.ts';
import type { DatapathPort, DatapathStats, HostNetPort } from '../../src/agent/ports.ts';
import type { DesiredState } from '../../src/model.ts';
import { FakeMesh } from './fake-mesh.ts';

/** A datapath that only remembers the last desired state it was asked to apply. */
export class LastDatapath implements DatapathPort {
  last: DesiredState | undefined;
  async apply(d: DesiredState): Promise<void> {
    this.last = d;
  }
  stats(): DatapathStats {
    return { reconciles: 0, errors: 0, writes: 0, lastDurationMs: 0 };
  }
  async stop(): Promise<void> {}
  async uninstall(): Promise<void> {}
}

/** Host networking that does nothing (no gateway device, no sysctls). */
export const noopHostNet: HostNetPort = { ensureGateway: async () => {}, enableForwarding: async () => {}, removeGateway: async () => {} };

/** A fake mesh member that members see behind NAT once `observed` is set (the snapshot's `observedSelf`). */
export class NattedMesh extends FakeMesh {
  observed: { addr: string; port: number } | undefined;
  override snapshot(): MeshSnapshot {
    const s = super.snapshot();
    return this.observed ? { ...s, observedSelf: this.observed } : s;
  }
}
