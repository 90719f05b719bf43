import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config.ts';

const base = { name: 'n1' };

describe('relay and prober flags', () => {
  it('defaults: auto, 51900-51999, 30 s, 10 s', () => {
    expect(parseConfig(base, {})).toMatchObject({ relay: 'auto', relayPorts: [51900, 51999], relayAfterMs: 30_000, probeIntervalMs: 10_000 });
  });
  it('reads flags and WEFT_* env vars', () => {
    expect(parseConfig({ ...base, relay: 'off', relayPorts: '40000-40001', relayAfter: '5s', probeInterval: '2s' }, {})).toMatchObject({ relay: 'off', relayPorts: [40000, 40001], relayAfterMs: 5000, probeIntervalMs: 2000 });
    expect(parseConfig(base, { WEFT_RELAY: 'on', WEFT_RELAY_PORTS: '50000-50099' })).toMatchObject({ relay: 'on', relayPorts: [50000, 50099] });
  });
  it.each([
    ['relay', 'maybe', /--relay .*not one of auto, on, off/],
    ['relayPorts', '51900', /--relay-ports .*lo-hi/],
    ['relayPorts', '51999-51900', /lo <= hi/],
    ['relayPorts', '80-90', /1024-65535/],
    ['relayPorts', '51900-51900', /at least 2 ports/],
    ['relayPorts', '51800-51900', /WireGuard port 51820/],
    ['relayPorts', '7900-7999', /mesh port 7946/],
    ['relayAfter', '100ms', /between 1s and 1h/],
    ['probeInterval', '5m', /between 1s and 2m/],
  ])('refuses --%s %s', (key, value, msg) => {
    expect(() => parseConfig({ ...base, [key]: value }, {})).toThrow(ConfigError);
    expect(() => parseConfig({ ...base, [key]: value }, {})).toThrow(msg);
  });
});
