import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerRelayMetrics } from '../../src/relay/metrics.ts';

describe('relay and prober metrics', () => {
  it('exports the prober and relay counters at scrape time, zero-valued before they run', async () => {
    const registry = new Registry();
    let running = false;
    registerRelayMetrics(registry, {
      prober: () => (running ? { ticks: 3, probes: 7, probeErrors: 1, readErrors: 0, failing: 2 } : undefined),
      relay: () => (running ? { offering: true, wants: 1, forwarder: { sessions: 2, packets: 10, bytes: 1500, drops: { source: 4, size: 0, 'no-destination': 1, 'send-error': 0 } } } : undefined),
    });
    const before = await registry.metrics();
    expect(before).toMatch(/^weft_relay_sessions 0$/m);
    expect(before).not.toMatch(/^weft_link_probes_total [1-9]/m);
    running = true;
    const text = await registry.metrics();
    expect(text).toMatch(/^weft_link_probes_total 7$/m);
    expect(text).toMatch(/^weft_link_probe_errors_total 1$/m);
    expect(text).toMatch(/^weft_links_failing 2$/m);
    expect(text).toMatch(/^weft_relay_wants 1$/m);
    expect(text).toMatch(/^weft_relay_offering 1$/m);
    expect(text).toMatch(/^weft_relay_sessions 2$/m);
    expect(text).toMatch(/^weft_relay_packets_total 10$/m);
    expect(text).toMatch(/^weft_relay_bytes_total 1500$/m);
    expect(text).toMatch(/^weft_relay_drops_total\{reason="source"\} 4$/m);
    expect(text).toMatch(/^weft_relay_drops_total\{reason="no-destination"\} 1$/m);
  });
});
