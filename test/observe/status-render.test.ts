import { describe, expect, it } from 'vitest';
import { renderPeers, renderStatus } from '../../src/cli/status.ts';
import type { AgentStatus } from '../../src/agent/agent.ts';

const base: AgentStatus = {
  node: { name: 'n1', backend: 'userspace', publicKey: 'PUB=', meshIP: '10.244.1.1', podCIDRs: ['10.244.1.0/24'], listenPort: 51820, mtu: 1420, ifname: 'weft0', endpoints: ['192.0.2.1:51820'], keyCreatedAt: (100_000 - 7500) * 1000 },
  ready: true,
  mesh: { members: { alive: 2 } },
  datapath: { reconciles: 1, errors: 0, writes: 3, lastDurationMs: 1 },
  peers: [
    { name: 'n2', publicKey: 'K2=', endpoint: '192.0.2.2:51820', allowedIPs: ['10.244.2.0/24'], lastHandshake: 100_000 - 10, rxBytes: 1, txBytes: 2, state: 'alive', link: 'connected' },
    { name: 'n3', publicKey: 'K3=', endpoint: '192.0.2.3:51820', allowedIPs: ['10.244.3.0/24'], lastHandshake: 100_000 - 181, rxBytes: 1, txBytes: 2, state: 'alive', link: 'handshaking' },
  ],
  now: 100_000,
};

describe('weft status rendering (issue 9 additions)', () => {
  it('shows the WireGuard key age, "-" when unknown', () => {
    expect(renderStatus(base, 100_000)).toMatch(/^key age:\s+2h5m$/m);
    expect(renderStatus({ ...base, node: { ...base.node, keyCreatedAt: undefined } }, 100_000)).toMatch(/^key age:\s+-$/m);
  });
  it('flags peers without a handshake in the last 3 minutes, with a count line', () => {
    const out = renderPeers(base, 100_000);
    expect(out).toMatch(/^n3\s.*3m1s !/m);
    expect(out).toMatch(/^n2\s.*10s\s/m);
    expect(out).toContain('! 1 of 2 peers without a handshake in the last 3 minutes');
    expect(renderPeers({ ...base, peers: base.peers.slice(0, 1) }, 100_000)).not.toContain('without a handshake');
  });
});

describe('weft status: relayed peers (issue 7)', () => {
  const relayed = { name: 'n4', publicKey: 'K4=', endpoint: '198.18.0.3:51900', allowedIPs: ['10.244.4.0/24'], rxBytes: 1, txBytes: 2, state: 'alive', link: 'relayed' as const, relay: 'n5' };
  it('shows the relay a peer goes through, and still flags it when its handshake is stale', () => {
    const fresh = renderPeers({ ...base, peers: [{ ...relayed, lastHandshake: 100_000 - 5 }] }, 100_000);
    expect(fresh).toMatch(/^n4\s+198\.18\.0\.3:51900\s.*5s\s.*relayed via n5\s+alive$/m);
    expect(fresh).not.toContain('without a handshake');
    const stale = renderPeers({ ...base, peers: [{ ...relayed, lastHandshake: 100_000 - 200 }] }, 100_000);
    expect(stale).toMatch(/^n4\s.*3m20s !.*relayed via n5/m);
    expect(stale).toContain('! 1 of 1 peers without a handshake');
  });
});
