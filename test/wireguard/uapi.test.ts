import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UapiError } from '../../src/wireguard/errors.ts';
import { base64ToHex, generateKeyPair } from '../../src/wireguard/keys.ts';
import { ParseCache, encodeSet, isNoDaemon, parseGet, uapiRequest } from '../../src/wireguard/uapi.ts';

describe('UAPI encoding and parsing', () => {
  it('encodes a set with hex keys, only the fields given, and peer lines in order', () => {
    const priv = generateKeyPair().privateKey;
    const a = generateKeyPair().publicKey;
    const b = generateKeyPair().publicKey;
    const body = encodeSet({
      privateKey: priv,
      listenPort: 51820,
      peers: [
        { publicKey: a, endpoint: '[2001:db8::1]:51820', persistentKeepalive: 25, replaceAllowedIPs: true, allowedIPs: ['10.0.0.0/24', 'fd00::/64'] },
        { publicKey: b, remove: true },
      ],
    });
    expect(body).toBe(
      [
        'set=1',
        `private_key=${base64ToHex(priv)}`,
        'listen_port=51820',
        `public_key=${base64ToHex(a)}`,
        'endpoint=[2001:db8::1]:51820',
        'persistent_keepalive_interval=25',
        'replace_allowed_ips=true',
        'allowed_ip=10.0.0.0/24',
        'allowed_ip=fd00::/64',
        `public_key=${base64ToHex(b)}`,
        'remove=true',
        '',
      ].join('\n'),
    );
  });

  it('parses a wireguard-go get reply, treating zero keys as absent and ignoring unknown keys', () => {
    const { privateKey, publicKey } = generateKeyPair();
    const a = generateKeyPair().publicKey;
    const d = parseGet('wg0', [
      `private_key=${base64ToHex(privateKey)}`,
      'listen_port=51820',
      'some_future_key=1',
      `public_key=${base64ToHex(a)}`,
      `preshared_key=${'0'.repeat(64)}`,
      'protocol_version=1',
      'endpoint=[2001:DB8::1]:5',
      'last_handshake_time_sec=1700000000',
      'last_handshake_time_nsec=5',
      'tx_bytes=10',
      'rx_bytes=20',
      'persistent_keepalive_interval=25',
      'allowed_ip=10.1.0.0/16',
    ]);
    expect(d).toEqual({
      name: 'wg0',
      privateKey,
      publicKey,
      listenPort: 51820,
      fwmark: 0,
      peers: [
        { publicKey: a, endpoint: '[2001:db8::1]:5', allowedIPs: ['10.1.0.0/16'], persistentKeepalive: 25, lastHandshake: 1700000000, rxBytes: 20, txBytes: 10 },
      ],
    });
  });

  it.each([
    ['no equals sign', ['garbage']],
    ['bad number', ['listen_port=abc']],
    ['port out of range', ['listen_port=70000']],
    ['bad key', ['public_key=xyz']],
    ['bad CIDR', [`public_key=${'1'.repeat(64)}`, 'allowed_ip=300.0.0.0/8']],
  ])('rejects a malformed reply: %s', (_n, lines) => {
    expect(() => parseGet('wg0', lines)).toThrow(UapiError);
  });

  it('bounds the number of peers and allowed IPs in a reply', () => {
    const peers = Array.from({ length: 3 }, (_, i) => `public_key=${String(i).repeat(64)}`);
    expect(() => parseGet('wg0', peers, { maxPeers: 2, maxAllowedIPsPerPeer: 10 })).toThrow(/more than 2 peers/);
    const ips = [`public_key=${'1'.repeat(64)}`, 'allowed_ip=10.0.0.0/8', 'allowed_ip=11.0.0.0/8'];
    expect(() => parseGet('wg0', ips, { maxPeers: 2, maxAllowedIPsPerPeer: 1 })).toThrow(/allowed IPs/);
  });

  it('gives the same result with a shared ParseCache, never caches failures, and stays bounded', () => {
    const { privateKey } = generateKeyPair();
    const a = generateKeyPair().publicKey;
    const lines = [`private_key=${base64ToHex(privateKey)}`, `public_key=${base64ToHex(a)}`, 'endpoint=[2001:DB8::1]:5', 'allowed_ip=10.1.2.3/16'];
    const cache = new ParseCache(3);
    const plain = parseGet('wg0', lines);
    expect(parseGet('wg0', lines, undefined, cache)).toEqual(plain);
    expect(parseGet('wg0', lines, undefined, cache)).toEqual(plain);
    expect(plain.peers[0]!.allowedIPs).toEqual(['10.1.0.0/16']);
    expect(() => parseGet('wg0', [`public_key=${base64ToHex(a)}`, 'allowed_ip=10.0.0.0/40'], undefined, cache)).toThrow(UapiError);
    expect(() => parseGet('wg0', [`public_key=${base64ToHex(a)}`, 'allowed_ip=10.0.0.0/40'], undefined, cache)).toThrow(UapiError);
    for (let i = 0; i < 10; i++) cache.get('x', String(i), (v) => v);
    expect(cache.get('x', '9', () => 'recomputed')).toBe('9');
  });

  it('never puts key material in parse errors', () => {
    const secret = `${'a'.repeat(63)}g`;
    try {
      parseGet('wg0', [`private_key=${secret}`]);
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain(secret);
    }
  });
});

describe('uapiRequest against a scripted socket', () => {
  let dir: string;
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wwg-uapi-'));
  });
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
    await rm(dir, { recursive: true, force: true });
  });
  const serve = async (onRequest: (req: string, sock: Socket) => void): Promise<string> => {
    const path = join(dir, 'wg0.sock');
    server = createServer({ allowHalfOpen: true }, (sock) => {
      sockets.add(sock);
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString();
        if (buf.endsWith('\n\n')) onRequest(buf, sock);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => server!.listen(path, r));
    return path;
  };
  const opts = { timeoutMs: 500, maxReplyBytes: 1024 };

  it('returns the reply lines on errno=0, with the request terminated by an empty line', async () => {
    let seen = '';
    const path = await serve((req, s) => {
      seen = req;
      s.end('listen_port=1\nerrno=0\n\n');
    });
    expect(await uapiRequest(path, 'get wg0', 'get=1\n', opts)).toEqual(['listen_port=1']);
    expect(seen).toBe('get=1\n\n');
  });

  it('turns errno != 0 into UapiError with the errno', async () => {
    const path = await serve((_r, s) => s.end('errno=22\n\n'));
    const err = (await uapiRequest(path, 'set wg0', 'set=1\n', opts).catch((e: unknown) => e)) as UapiError;
    expect(err).toBeInstanceOf(UapiError);
    expect(err.errno).toBe(22);
    expect(err.message).toMatch(/^uapi: set wg0: .*errno=22/);
  });

  it('times out on a daemon that never answers', async () => {
    const path = await serve(() => {});
    await expect(uapiRequest(path, 'get wg0', 'get=1\n', opts)).rejects.toThrow(/within 500 ms/);
  });

  it('drops an oversize reply', async () => {
    const path = await serve((_r, s) => s.write(`${'x=1\n'.repeat(1000)}`));
    await expect(uapiRequest(path, 'get wg0', 'get=1\n', opts)).rejects.toThrow(/larger than 1024 bytes/);
  });

  it('rejects a reply that is cut short or lacks errno', async () => {
    const path = await serve((_r, s) => s.end('listen_port=1\n'));
    await expect(uapiRequest(path, 'get wg0', 'get=1\n', opts)).rejects.toThrow(/closed before/);
    const p2 = await new Promise<string>((r) => {
      server!.close(() => r(''));
    }).then(() => serve((_r, s) => s.end('listen_port=1\n\n')));
    await expect(uapiRequest(p2, 'get wg0', 'get=1\n', opts)).rejects.toThrow(/errno=/);
  });

  it('says "no daemon" for a missing socket', async () => {
    const err = await uapiRequest(join(dir, 'none.sock'), 'get x', 'get=1\n', opts).catch((e: unknown) => e);
    expect(isNoDaemon(err)).toBe(true);
  });
});
