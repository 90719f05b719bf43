/**
 * The node's pod gateway device as the agent drives it (`createHostNet`): ensure with the planned
 * pod MTU, retire the legacy pod bridge of an upgraded node once its last pod is gone, and remove
 * both on uninstall.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createHostNet } from '../../src/agent/components.ts';
import { GATEWAY_DEVICE, LEGACY_BRIDGE } from '../../src/cni/devices.ts';
import { parseConfig } from '../../src/config.ts';
import { FakeNetns } from '../cni/fake-netns.ts';

const log = pino({ level: 'silent' });
const underlay = { addr: '192.0.2.11', family: 4 as const, ifname: 'eth0', mtu: 1500 };
const config = parseConfig({ name: 'n1' }, {});

describe('createHostNet', () => {
  it('ensures weftgw0 with the gateway addresses and the pod MTU', async () => {
    const net = new FakeNetns();
    const host = createHostNet(GATEWAY_DEVICE, config, underlay, log, async () => {}, net);
    await host.ensureGateway(['10.244.3.1/24']);
    expect(net.gateways.get('weftgw0')).toEqual(new Set(['10.244.3.1/24']));
    expect(net.calls).toContain('ensureGateway weftgw0 10.244.3.1/24');
  });

  it('keeps a legacy weftbr0 while pods are on it, removes it once idle, then stops looking', async () => {
    const net = new FakeNetns();
    net.bridges.set(LEGACY_BRIDGE, 2);
    const host = createHostNet(GATEWAY_DEVICE, config, underlay, log, async () => {}, net);
    await host.ensureGateway(['10.244.3.1/24']);
    expect(net.bridges.get(LEGACY_BRIDGE)).toBe(2);
    net.bridges.set(LEGACY_BRIDGE, 0); // the last old pod restarted onto a routed veth
    await host.ensureGateway(['10.244.3.1/24']);
    expect(net.bridges.has(LEGACY_BRIDGE)).toBe(false);
    const checks = net.calls.filter((c) => c.startsWith('removeIdleBridge')).length;
    await host.ensureGateway(['10.244.3.1/24']);
    expect(net.calls.filter((c) => c.startsWith('removeIdleBridge'))).toHaveLength(checks);
  });

  it('a failing legacy check does not fail the gateway', async () => {
    const net = new FakeNetns();
    net.removeIdleBridge = async () => {
      throw new Error('ip: boom');
    };
    const host = createHostNet(GATEWAY_DEVICE, config, underlay, log, async () => {}, net);
    await host.ensureGateway(['10.244.3.1/24']);
    expect(net.gateways.get('weftgw0')).toEqual(new Set(['10.244.3.1/24']));
  });

  it('uninstall removes weftgw0 and a legacy weftbr0 even with ports left', async () => {
    const net = new FakeNetns();
    net.bridges.set(LEGACY_BRIDGE, 3);
    const host = createHostNet(GATEWAY_DEVICE, config, underlay, log, async () => {}, net);
    await host.ensureGateway(['10.244.3.1/24']);
    await host.removeGateway();
    expect(net.gateways.size).toBe(0);
    expect(net.bridges.size).toBe(0);
    expect(net.calls.filter((c) => c.startsWith('removeDevice'))).toEqual(['removeDevice weftgw0', 'removeDevice weftbr0']);
  });
});
