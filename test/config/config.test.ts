import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, parseDuration } from '../../src/config.ts';

const host = { hostname: 'node-a' };

describe('parseConfig defaults', () => {
  it('fills every default and derives the socket path', () => {
    const c = parseConfig({}, {}, host);
    expect(c).toMatchObject({
      name: 'node-a', seeds: [], listenAddr: undefined, meshPort: 7946, wgPort: 51820, ifname: 'weft0',
      clusterCIDRs: ['10.244.0.0/16'], blockSize: 24, podCIDRs: [], backend: 'auto', mtu: 'auto',
      stateDir: '/var/lib/weft', runDir: '/run/weft', socketPath: '/run/weft/weft.sock', meshKeyFile: undefined,
      resyncMs: 30_000, dnsZone: 'weft.local', dnsListen: [], dnsTtl: 5, logLevel: 'info', kubeconfig: undefined,
      metricsAddr: undefined,
    });
  });

  it('is deeply frozen', () => {
    const c = parseConfig({ seeds: '192.0.2.1:7946' }, {}, host);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.seeds)).toBe(true);
    expect(Object.isFrozen(c.seeds[0])).toBe(true);
  });
});

describe('parseConfig precedence', () => {
  it('flag wins over env, env over default', () => {
    expect(parseConfig({ meshPort: '1000' }, { WEFT_MESH_PORT: '2000' }, host).meshPort).toBe(1000);
    expect(parseConfig({}, { WEFT_MESH_PORT: '2000' }, host).meshPort).toBe(2000);
    expect(parseConfig({}, { WEFT_MESH_PORT: '' }, host).meshPort).toBe(7946);
  });
});

describe('parseConfig good values', () => {
  const table: [Record<string, string>, Record<string, unknown>][] = [
    [{ seeds: '192.0.2.1:7946, [2001:db8::1]:7000,seed.example:1' }, { seeds: [{ host: '192.0.2.1', port: 7946 }, { host: '2001:db8::1', port: 7000 }, { host: 'seed.example', port: 1 }] }],
    [{ clusterCidr: '10.244.0.0/16,fd00:10::/56' }, { clusterCIDRs: ['10.244.0.0/16', 'fd00:10::/56'] }],
    [{ podCidr: '10.244.7.0/24' }, { podCIDRs: ['10.244.7.0/24'] }],
    [{ clusterCidr: '10.0.0.0/8', blockSize: '26', podCidr: '10.9.9.64/26' }, { podCIDRs: ['10.9.9.64/26'], blockSize: 26 }],
    [{ mtu: '1420' }, { mtu: 1420 }],
    [{ resync: '1m30s' }, { resyncMs: 90_000 }],
    [{ resync: '2' }, { resyncMs: 2000 }],
    [{ dnsZone: 'Cluster.Example.' }, { dnsZone: 'cluster.example' }],
    [{ dnsListen: '127.0.0.1:5353' }, { dnsListen: [{ host: '127.0.0.1', port: 5353 }] }],
    [{ metricsAddr: '127.0.0.1:9465' }, { metricsAddr: { host: '127.0.0.1', port: 9465 } }],
    [{ listenAddr: '192.0.2.10' }, { listenAddr: '192.0.2.10' }],
    [{ backend: 'userspace', logLevel: 'debug' }, { backend: 'userspace', logLevel: 'debug' }],
    [{ runDir: '/tmp/x/' }, { socketPath: '/tmp/x/weft.sock' }],
    [{}, { leaveOnExit: false }],
    [{ leaveOnExit: 'true' }, { leaveOnExit: true }],
    [{ leaveOnExit: 'no' }, { leaveOnExit: false }],
  ];
  it.each(table)('%j', (flags, want) => {
    expect(parseConfig(flags, {}, host)).toMatchObject(want);
  });
});

describe('parseConfig bad values', () => {
  const table: [Record<string, string>, Record<string, string>, string, RegExp][] = [
    [{ meshPort: 'abc' }, {}, '--mesh-port', /--mesh-port \/ WEFT_MESH_PORT: "abc" is not an integer/],
    [{}, { WEFT_WG_PORT: '70000' }, '--wg-port', /WEFT_WG_PORT: "70000" is not a port/],
    [{ seeds: '192.0.2.1' }, {}, '--seeds', /expected host:port/],
    [{ seeds: '192.0.2.1:0' }, {}, '--seeds', /port outside/],
    [{ clusterCidr: '10.244.0.5/16' }, {}, '--cluster-cidr', /host bits set.*10\.244\.0\.0\/16/],
    [{ clusterCidr: '10.244.0.0/33' }, {}, '--cluster-cidr', /not a CIDR/],
    [{ clusterCidr: '10.0.0.0/8,10.1.0.0/16' }, {}, '--cluster-cidr', /one CIDR per family/],
    [{ podCidr: '10.245.0.0/24' }, {}, '--pod-cidr', /not inside the cluster CIDR/],
    [{ podCidr: '10.244.0.0/25' }, {}, '--pod-cidr', /must be a \/24/],
    [{ blockSize: '8' }, {}, '--block-size', /between 16/],
    [{ backend: 'bpf' }, {}, '--backend', /not one of auto, kernel, userspace/],
    [{ mtu: '100' }, {}, '--mtu', /between 1280/],
    [{ resync: '10parsecs' }, {}, '--resync', /not a duration/],
    [{ resync: '100ms' }, {}, '--resync', /between 1s and 24h/],
    [{ stateDir: 'relative/dir' }, {}, '--state-dir', /not an absolute path/],
    [{ ifname: 'this-name-is-too-long' }, {}, '--ifname', /not a valid interface name/],
    [{ name: 'Bad_Name' }, {}, '--name', /not a valid node name/],
    [{ listenAddr: 'eth0' }, {}, '--listen-addr', /not an IP address/],
    [{ dnsZone: 'bad..zone' }, {}, '--dns-zone', /not a valid DNS zone/],
    [{ dnsListen: 'localhost:53' }, {}, '--dns-listen', /not an IP address/],
    [{ dnsTtl: '-1' }, {}, '--dns-ttl', /between 0 and 86400/],
    [{ logLevel: 'loud' }, {}, '--log-level', /not one of/],
    [{ metricsAddr: ':9465' }, {}, '--metrics-addr', /expected host:port/],
    [{ runDir: `/${'x'.repeat(120)}` }, {}, '--run-dir', /too long for a unix socket/],
    [{}, { WEFT_LEAVE_ON_EXIT: 'maybe' }, '--leave-on-exit', /WEFT_LEAVE_ON_EXIT: "maybe" is not a boolean/],
  ];
  it.each(table)('%j %j -> %s', (flags, env, flag, msg) => {
    let err: unknown;
    try {
      parseConfig(flags, env, host);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).flag).toBe(flag);
    expect((err as Error).message).toMatch(msg);
    expect((err as Error).message).not.toContain('\n');
  });

  it('truncates a huge value in the message', () => {
    expect(() => parseConfig({ ifname: 'x'.repeat(3000) }, {}, host)).toThrow(/\.\.\."/);
    expect(() => parseConfig({ ifname: 'x'.repeat(5000) }, {}, host)).toThrow(/longer than 4096/);
  });
});

describe('parseDuration', () => {
  const fail = (why: string): never => {
    throw new Error(why);
  };
  it.each([['500ms', 500], ['30s', 30_000], ['5m', 300_000], ['24h', 86_400_000], ['1h30m', 5_400_000], ['1.5s', 1500]])('%s', (s, ms) => {
    expect(parseDuration(s as string, fail)).toBe(ms);
  });
  it.each(['', 's', '5 m', '5d', '-1s'])('rejects %j', (s) => {
    expect(() => parseDuration(s, fail)).toThrow(/not a duration/);
  });
});

describe('--token-secret', () => {
  it('defaults to weft-join-tokens, reads WEFT_TOKEN_SECRET, and off means no mirror', () => {
    expect(parseConfig({ name: 'n1' }, {}).tokenSecret).toBe('weft-join-tokens');
    expect(parseConfig({ name: 'n1' }, { WEFT_TOKEN_SECRET: 'my-tokens' }).tokenSecret).toBe('my-tokens');
    expect(parseConfig({ name: 'n1', tokenSecret: 'off' }, { WEFT_TOKEN_SECRET: 'my-tokens' }).tokenSecret).toBeUndefined();
  });
  it.each(['My_Tokens', '-tokens', 'a'.repeat(254), ''])('refuses the Secret name %j', (v) => {
    expect(() => parseConfig({ name: 'n1', tokenSecret: v }, {})).toThrow(/--token-secret .*DNS-1123/);
  });
});
