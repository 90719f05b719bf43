import { describe, expect, it } from 'vitest';
import type { MemberState } from '../../mesh/api.ts';
import { planDatapath, RELAY_KEEPALIVE_S, type DatapathConfig, type RelayPlanInput } from '../../src/plan/datapath.ts';
import { chooseRelay } from '../../src/relay/choose.ts';
import type { RelayOffer, RelaySession } from '../../src/relay/records.ts';
import { nodeInfo, remote } from './helpers.ts';

const v4: DatapathConfig = { ifname: 'weft0', listenPort: 51820, clusterCIDRs: ['10.244.0.0/16'], mtu: 'auto', underlayMTU: 1500, underlayFamilies: [4] };
const offer = (host: string): RelayOffer => ({ host, family: host.includes(':') ? 6 : 4, ports: [51900, 51999] });

function relayInput(states: Record<string, MemberState>, offers: Record<string, string>, sessions: Record<string, RelaySession[]>): RelayPlanInput {
  return { states: new Map(Object.entries(states)), offers: new Map(Object.entries(offers).map(([k, h]) => [k, offer(h)])), sessions: new Map(Object.entries(sessions)) };
}

describe('planDatapath with relays (issue 7)', () => {
  // node-1 and node-2 cannot reach each other; node-3 and node-4 offer relaying.
  const n1 = nodeInfo(1);
  const n2 = nodeInfo(2);
  const relays = { 'node-3': '198.18.0.3', 'node-4': '198.18.0.4' };
  const chosen = chooseRelay('node-1', 'node-2', Object.keys(relays))!;
  const other = Object.keys(relays).find((r) => r !== chosen)!;
  const session: RelaySession = { a: 'node-1', b: 'node-2', portA: 51910, portB: 51911 };
  const states = { 'node-1': 'alive', 'node-2': 'alive', 'node-3': 'alive', 'node-4': 'alive' } as const;

  it('aims both sides at the chosen relay, each at its own port, with keepalive on both sides', () => {
    const input = relayInput(states, relays, { [chosen]: [session] });
    const a = planDatapath(n1, [remote(n2), remote(nodeInfo(3))], v4, input);
    const b = planDatapath(n2, [remote(n1)], v4, input);
    expect(a.peers[0]).toMatchObject({ name: 'node-2', endpoint: `${relays[chosen as keyof typeof relays]}:51910`, persistentKeepalive: RELAY_KEEPALIVE_S, relay: chosen });
    expect(b.peers[0]).toMatchObject({ name: 'node-1', endpoint: `${relays[chosen as keyof typeof relays]}:51911`, persistentKeepalive: RELAY_KEEPALIVE_S, relay: chosen });
    // Other peers stay direct, without keepalive.
    expect(a.peers[1]).toEqual({ name: 'node-3', publicKey: nodeInfo(3).wgPublicKey, endpoint: '192.0.2.4:51820', allowedIPs: ['10.244.3.0/24', '10.244.3.1/32'], persistentKeepalive: 0 });
  });

  it.each([
    ['a session published by a relay that is not the chosen one', () => relayInput(states, relays, { [other]: [session] })],
    ['the chosen relay is dead', () => relayInput({ ...states, [chosen]: 'dead' }, relays, { [chosen]: [session] })],
    ['the chosen relay is suspect', () => relayInput({ ...states, [chosen]: 'suspect' }, relays, { [chosen]: [session] })],
    ['no session for the pair', () => relayInput(states, relays, { [chosen]: [{ ...session, b: 'node-9' }] })],
    ['the relay is IPv6 and the underlay IPv4 only', () => relayInput(states, { ...relays, [chosen]: '2001:db8::3' }, { [chosen]: [session] })],
  ])('stays direct when %s', (_what, make) => {
    const input = make();
    const a = planDatapath(n1, [remote(n2)], v4, input);
    // When the chosen relay is not alive, the other relay is the choice now, and it published nothing.
    expect(a.peers[0]).toMatchObject({ name: 'node-2', endpoint: '192.0.2.3:51820', persistentKeepalive: 0 });
    expect(a.peers[0]!.relay).toBeUndefined();
  });

  it('gives the same plan without relay input as with an empty one', () => {
    expect(planDatapath(n1, [remote(n2)], v4, relayInput(states, relays, {}))).toEqual(planDatapath(n1, [remote(n2)], v4));
  });
});

describe('relay planning is symmetric (property)', () => {
  it('for any offers, liveness and sessions, both sides of a pair agree on relaying, through the same relay, each at its own port', async () => {
    const fc = (await import('fast-check')).default;
    const names = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
    const state = fc.constantFrom<MemberState>('alive', 'suspect', 'dead');
    fc.assert(
      fc.property(
        fc.tuple(...names.map(() => state)),
        fc.subarray(names.slice(2)),
        fc.array(fc.tuple(fc.constantFrom(...names.slice(2)), fc.integer({ min: 0, max: 40 })), { maxLength: 4 }),
        (states, offering, published) => {
          const st = Object.fromEntries(names.map((n, i) => [n, states[i]!]));
          const offers = Object.fromEntries(offering.map((n) => [n, `198.18.0.${n.slice(5)}`]));
          const sessions: Record<string, RelaySession[]> = {};
          for (const [r, k] of published) if (!sessions[r]) sessions[r] = [{ a: 'node-1', b: 'node-2', portA: 51900 + 2 * k, portB: 51901 + 2 * k }];
          const input = relayInput(st, offers, sessions);
          const a = planDatapath(nodeInfo(1), [remote(nodeInfo(2))], v4, input).peers[0]!;
          const b = planDatapath(nodeInfo(2), [remote(nodeInfo(1))], v4, input).peers[0]!;
          expect(a.relay).toBe(b.relay);
          if (a.relay !== undefined) {
            const s = sessions[a.relay]![0]!;
            expect(a.endpoint).toBe(`${offers[a.relay]}:${s.portA}`);
            expect(b.endpoint).toBe(`${offers[a.relay]}:${s.portB}`);
            expect(st[a.relay]).toBe('alive');
            expect([a.persistentKeepalive, b.persistentKeepalive]).toEqual([RELAY_KEEPALIVE_S, RELAY_KEEPALIVE_S]);
          } else {
            expect([a.endpoint, b.endpoint]).toEqual(['192.0.2.3:51820', '192.0.2.2:51820']);
          }
        },
      ),
    );
  });
});
