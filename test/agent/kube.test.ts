import { describe, expect, it } from 'vitest';
import { mergeKubeSnapshot } from '../../src/agent/kube.ts';
import { parseConfig } from '../../src/config.ts';

const base = parseConfig({ name: 'n1', seeds: '192.0.2.1:7946' }, {});

describe('mergeKubeSnapshot', () => {
  it('takes the node podCIDR when no --pod-cidr is given, and adds other nodes as seeds', () => {
    const m = mergeKubeSnapshot(base, { podCIDRs: ['10.244.7.0/24'], seeds: ['192.0.2.1:7946', '192.0.2.2:7946', '192.0.2.9:7946'], endpointIPs: ['192.0.2.9'] });
    expect(m.podCIDRsFrom).toBe('kubernetes');
    expect(m.config.podCIDRs).toEqual(['10.244.7.0/24']);
    expect(m.config.seeds).toEqual([{ host: '192.0.2.1', port: 7946 }, { host: '192.0.2.2', port: 7946 }]);
    expect(m.addedSeeds).toBe(1);
    expect(Object.isFrozen(m.config)).toBe(true);
  });

  it('keeps a --pod-cidr over the Kubernetes one', () => {
    const c = parseConfig({ name: 'n1', podCidr: '10.244.1.0/24' }, {});
    const m = mergeKubeSnapshot(c, { podCIDRs: ['10.244.7.0/24'], seeds: [], endpointIPs: [] });
    expect(m.podCIDRsFrom).toBe('flag');
    expect(m.config.podCIDRs).toEqual(['10.244.1.0/24']);
  });

  it('ignores podCIDRs outside the cluster CIDR or of the wrong size, and malformed seeds', () => {
    const m = mergeKubeSnapshot(base, { podCIDRs: ['10.99.0.0/24', '10.244.0.0/23'], seeds: ['nonsense', '192.0.2.5:0'], endpointIPs: [] });
    expect(m.podCIDRsFrom).toBe('mesh');
    expect(m.config.podCIDRs).toEqual([]);
    expect(m.ignored).toHaveLength(4);
    expect(m.config.seeds).toEqual(base.seeds);
  });
});
