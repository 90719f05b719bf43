import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MemberView, MeshSnapshot } from '../../mesh/api.ts';
import { MAX_WANTS, RELAY_OFFER_KEY, RELAY_SESSIONS_KEY, RELAY_WANT_KEY, RelayRecordsCache, parseOffer, parseSessions, parseWant, relayCandidates, relayInputsFromSnapshot } from '../../src/relay/records.ts';
import { entry } from '../plan/helpers.ts';

const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

function member(name: string, entries: Record<string, unknown>, state: MemberView['state'] = 'alive'): MemberView {
  return { name, identityKey: 'x', addr: '192.0.2.1', port: 7946, state, incarnation: 1, entries: new Map(Object.entries(entries).map(([k, v]) => [k, entry(k, v)])) };
}

describe('relay entries', () => {
  it.each([
    [{ host: '198.18.0.2', ports: [51900, 51999] }, { host: '198.18.0.2', family: 4, ports: [51900, 51999] }],
    [{ host: '2001:db8::0:1', ports: [1, 1] }, { host: '2001:db8::1', family: 6, ports: [1, 1] }],
  ])('accepts offer %j', (v, want) => {
    expect(parseOffer(enc(v))).toEqual({ ok: true, value: want });
  });

  it.each([
    ['not JSON', '{', 'JSON'],
    ['an array', [], 'object'],
    ['a host name', { host: 'relay.example', ports: [1, 2] }, 'IP'],
    ['unspecified', { host: '0.0.0.0', ports: [1, 2] }, 'unicast'],
    ['multicast', { host: '224.0.0.1', ports: [1, 2] }, 'unicast'],
    ['lo > hi', { host: '198.18.0.2', ports: [5, 4] }, 'lo > hi'],
    ['port 0', { host: '198.18.0.2', ports: [0, 4] }, 'ports'],
    ['three ports', { host: '198.18.0.2', ports: [1, 2, 3] }, 'ports'],
    ['too big', 'x'.repeat(40_000), 'bytes'],
  ])('refuses an offer that is %s', (_what, v, reason) => {
    const r = parseOffer(enc(v));
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.reason).toContain(reason);
  });

  it.each([
    ['unsorted', ['b', 'a'], 'sorted'],
    ['duplicated', ['a', 'a'], 'sorted'],
    ['its owner', ['me'], 'owner'],
    ['a bad name', ['A B'], 'name'],
    ['too long', Array.from({ length: MAX_WANTS + 1 }, (_, i) => `n${String(i).padStart(4, '0')}`), 'more than'],
    ['an object', { peers: [] }, 'array'],
  ])('refuses a want list that is %s', (_what, v, reason) => {
    const r = parseWant(enc(v), 'me');
    expect(r.ok ? '' : r.reason).toContain(reason);
  });

  const offer = { host: '198.18.0.2', family: 4 as const, ports: [51900, 51909] as const };
  it.each([
    ['unordered pair', [{ a: 'b', b: 'a', portA: 51900, portB: 51901 }], 'a < b'],
    ['owner in the pair', [{ a: 'a', b: 'r', portA: 51900, portB: 51901 }], 'own owner'],
    ['a port out of range', [{ a: 'a', b: 'b', portA: 51900, portB: 52000 }], 'outside'],
    ['a port used twice', [{ a: 'a', b: 'b', portA: 51900, portB: 51900 }], 'twice'],
    ['a pair twice', [{ a: 'a', b: 'b', portA: 51900, portB: 51901 }, { a: 'a', b: 'b', portA: 51902, portB: 51903 }], 'twice'],
    ['a non-integer port', [{ a: 'a', b: 'b', portA: 51900.5, portB: 51901 }], 'port'],
  ])('refuses sessions with %s', (_what, v, reason) => {
    const r = parseSessions(enc(v), 'r', offer);
    expect(r.ok ? '' : r.reason).toContain(reason);
  });

  it('reads every member; rejects bad entries with a reason; sessions need an offer; candidates are alive offerers', () => {
    const snap: MeshSnapshot = {
      self: 'a',
      members: [
        member('a', { [RELAY_WANT_KEY]: ['b'] }),
        member('b', { [RELAY_WANT_KEY]: ['b'] }),
        member('r1', { [RELAY_OFFER_KEY]: { host: '198.18.0.2', ports: [51900, 51999] }, [RELAY_SESSIONS_KEY]: [{ a: 'a', b: 'b', portA: 51900, portB: 51901 }] }),
        member('r2', { [RELAY_OFFER_KEY]: { host: '198.18.0.3', ports: [51900, 51999] } }, 'suspect'),
        member('r3', { [RELAY_SESSIONS_KEY]: [] }),
      ],
    };
    const r = relayInputsFromSnapshot(snap);
    expect([...r.wants]).toEqual([['a', ['b']]]);
    expect([...r.sessions.keys()]).toEqual(['r1']);
    expect(r.rejected.map((x) => [x.node, x.key])).toEqual([['b', RELAY_WANT_KEY], ['r3', RELAY_SESSIONS_KEY]]);
    expect(relayCandidates(r)).toEqual(['r1']);
  });

  it('with a cache, an unchanged snapshot gives the same object and a changed state a new one', () => {
    const cache = new RelayRecordsCache();
    const m = member('r1', { [RELAY_OFFER_KEY]: { host: '198.18.0.2', ports: [51900, 51999] } });
    const s1: MeshSnapshot = { self: 'a', members: [m] };
    const first = relayInputsFromSnapshot(s1, cache);
    expect(relayInputsFromSnapshot({ self: 'a', members: [m] }, cache)).toBe(first);
    const dead = relayInputsFromSnapshot({ self: 'a', members: [{ ...m, state: 'dead' }] }, cache);
    expect(dead).not.toBe(first);
    expect(dead.offers.get('r1')).toBe(first.offers.get('r1'));
  });

  it('never throws on arbitrary payloads', () => {
    fc.assert(
      fc.property(fc.oneof(fc.json(), fc.uint8Array({ maxLength: 200 }).map((b) => b as unknown)), (v) => {
        const bytes = v instanceof Uint8Array ? v : enc(v);
        const snap: MeshSnapshot = { self: 'x', members: [{ ...member('n', {}), entries: new Map([RELAY_OFFER_KEY, RELAY_WANT_KEY, RELAY_SESSIONS_KEY].map((k) => [k, { key: k, version: 1, payload: bytes, expiresAt: 0, deleted: false }])) }] };
        const r = relayInputsFromSnapshot(snap);
        expect(r.offers.size + r.wants.size + r.sessions.size + r.rejected.length).toBeGreaterThan(0);
      }),
    );
  });
});

describe('fitting (entry size bound on what a node publishes)', async () => {
  const { fitting } = await import('../../src/relay/service.ts');
  const { MAX_RELAY_PAYLOAD } = await import('../../src/relay/records.ts');
  it('keeps short lists whole and cuts long ones to a prefix that parses back within the bound', () => {
    const short = ['a', 'b'];
    expect(fitting(short)).toBe(short);
    const long = Array.from({ length: 256 }, (_, i) => `${String(i).padStart(3, '0')}${'x'.repeat(240)}`);
    const cut = fitting(long);
    expect(cut.length).toBeGreaterThan(100);
    expect(cut.length).toBeLessThan(256);
    expect(cut).toEqual(long.slice(0, cut.length));
    const payload = new TextEncoder().encode(JSON.stringify(cut));
    expect(payload.length).toBeLessThanOrEqual(MAX_RELAY_PAYLOAD);
    expect(parseWant(payload, 'me').ok).toBe(true);
  });
});
