import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AgentUnavailableError, parseResponse } from '../../src/cni/agent-client.ts';
import { compareVersions, convertResult, hostVethName, parseCniArgs, SUPPORTED_VERSIONS, type CniResult } from '../../src/cni/spec.ts';
import { stderrLogger } from '../../src/cni/plugin.ts';

const result: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'wv0', mac: '02:00:00:00:00:01', mtu: 1420 },
    { name: 'eth0', mac: '02:00:00:00:00:02', mtu: 1420, sandbox: '/var/run/netns/p' },
  ],
  ips: [
    { address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 1 },
    { address: 'fd00::102/120', gateway: 'fd00::101', interface: 1 },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1' }],
  dns: { nameservers: ['10.244.1.1'], search: ['ns.pod.weft.local', 'pod.weft.local'] },
};

describe('convertResult', () => {
  it('keeps the 1.x shape for 1.0.0 and 1.1.0', () => {
    expect(convertResult(result, '1.1.0')).toEqual(result);
    expect(convertResult(result, '1.0.0')).toEqual({ ...result, cniVersion: '1.0.0' });
  });
  it.each(['0.3.0', '0.3.1', '0.4.0'] as const)('adds ip.version and drops mtu for %s', (v) => {
    const r = convertResult(result, v) as { cniVersion: string; ips: { version: string }[]; interfaces: object[] };
    expect(r.cniVersion).toBe(v);
    expect(r.ips.map((i) => i.version)).toEqual(['4', '6']);
    expect(r.ips[0]).toEqual({ version: '4', address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 1 });
    expect(r.interfaces[1]).toEqual({ name: 'eth0', mac: '02:00:00:00:00:02', sandbox: '/var/run/netns/p' });
  });
  it('versions are ordered', () => {
    const sorted = [...SUPPORTED_VERSIONS].sort(compareVersions);
    expect(sorted).toEqual([...SUPPORTED_VERSIONS]);
    expect(compareVersions('0.10.0', '0.4.0')).toBeGreaterThan(0);
  });
});

describe('parseCniArgs', () => {
  it('parses pairs and keeps unknown keys', () => {
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;')).toEqual({
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: 'ns',
      K8S_POD_NAME: 'web-0',
      K8S_POD_INFRA_CONTAINER_ID: 'abc',
    });
    expect(parseCniArgs(undefined)).toEqual({});
    expect(parseCniArgs('A=b=c')).toEqual({ A: 'b=c' });
  });
  it.each(['novalue', '=x', 'A=1;;B', 'x'.repeat(5000), Array.from({ length: 40 }, (_, i) => `K${i}=v`).join(';')])('rejects %j with code 4', (s) => {
    expect(() => parseCniArgs(s)).toThrow(expect.objectContaining({ code: 4 }));
  });
  it('never throws anything but a CniError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        try {
          parseCniArgs(s);
        } catch (err) {
          expect((err as Error).name).toBe('CniError');
        }
      }),
    );
  });
});

describe('hostVethName', () => {
  it('is a valid, stable interface name that differs per attachment', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 256 }), fc.string({ minLength: 1, maxLength: 15 }), (c, i) => {
        const n = hostVethName(c, i);
        expect(n).toMatch(/^wv[0-9a-f]{11}$/);
        expect(hostVethName(c, i)).toBe(n);
      }),
    );
    expect(hostVethName('a', 'eth0')).not.toBe(hostVethName('a', 'eth1'));
    expect(hostVethName('a', 'eth0')).not.toBe(hostVethName('b', 'eth0'));
  });
});

describe('parseResponse (plugin HTTP client)', () => {
  it('reads content-length and chunked bodies', () => {
    expect(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra'))).toEqual({ status: 200, body: '{}' });
    expect(parseResponse(Buffer.from('HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'))).toEqual({ status: 503, body: '{"a":1}' });
  });
  it.each(['', 'garbage\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'])('rejects %j', (raw) => {
    expect(() => parseResponse(Buffer.from(raw))).toThrow(AgentUnavailableError);
  });
});

describe('stderrLogger', () => {
  it('writes pino-shaped JSON lines at or above its level', () => {
    const lines: string[] = [];
    const l = stderrLogger('warn', (s) => lines.push(s));
    l.info({ a: 1 }, 'hidden');
    l.warn({ a: 2 }, 'shown');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, component: 'weft-cni', a: 2, msg: 'shown' });
  });
});
