import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1';

const file = join(import.meta.dirname, '..', '..', 'deploy', 'coredns-stub.yaml');

describe('deploy/coredns-stub.yaml', () => {
  const cm = parseYaml(readFileSync(file, 'utf8'), { version: '1.1' });

  it('is a valid ConfigMap in kube-system with one CoreDNS server block', () => {
    expect(() => new ConfigMap(cm).validate()).not.toThrow();
    expect(cm.metadata).toMatchObject({ name: 'coredns-custom', namespace: 'kube-system' });
    expect(Object.keys(cm.data)).toEqual(['weft.server']);
  });

  it('forwards the default zone and the cluster reverse zone to the per-node link-local address', () => {
    const block: string = cm.data['weft.server'];
    const header = block.split('\n')[0];
    expect(header.split(/\s+/).filter((z) => z !== '{')).toEqual(['weft.local:53', '244.10.in-addr.arpa:53']);
    expect(block).toMatch(/^\s+forward \. 169\.254\.20\.11:53 \{$/m);
    expect(block).toMatch(/^\s+cache 5$/m);
    // Balanced braces: CoreDNS refuses a Corefile that is not.
    expect((block.match(/\{/g) ?? []).length).toBe((block.match(/\}/g) ?? []).length);
  });
});
