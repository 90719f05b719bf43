import { describe, expect, it } from 'vitest';
import { endpointsForPeer } from '../../src/plan/nat.ts';

describe('endpointsForPeer (nodes behind the same NAT)', () => {
  it.each([
    ['not behind NAT: unchanged', ['198.18.0.2:51820'], ['198.18.0.1:51820'], ['198.18.0.2:51820']],
    ['remote behind NAT, self not: aim at the NAT', ['198.18.0.254:51820', '192.0.2.11:51820'], ['198.18.0.1:51820'], ['198.18.0.254:51820', '192.0.2.11:51820']],
    ['both behind the same NAT: private first', ['198.18.0.254:51821', '192.0.2.11:51821'], ['198.18.0.254:51820', '192.0.2.10:51820'], ['192.0.2.11:51821', '198.18.0.254:51821']],
    ['behind different NATs: the remote NAT', ['203.0.113.9:51820', '10.0.0.5:51820'], ['198.18.0.254:51820', '192.0.2.10:51820'], ['203.0.113.9:51820', '10.0.0.5:51820']],
    ['same NAT but the remote offers nothing else', ['198.18.0.254:51821'], ['198.18.0.254:51820', '192.0.2.10:51820'], ['198.18.0.254:51821']],
    ['garbage endpoints are left to the planner', ['x', 'y'], ['x', 'z'], ['x', 'y']],
  ])('%s', (_n, remote, self, want) => {
    expect(endpointsForPeer(remote, self)).toEqual(want);
  });
});
