/**
 * Prometheus metrics of the link prober and the relay (issues 7 and 9), read from their counters at
 * scrape time: probes sent and failed, direct links judged failed, peers wanted through a relay, and
 * on a relay its sessions, forwarded packets and bytes, and drops by reason.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ProberStats } from './prober.ts';
import type { RelayStats } from './service.ts';

/** Registers the relay and prober metrics on `registry`; the readers may return undefined (not running yet). */
export function registerRelayMetrics(registry: Registry, read: { relay: () => RelayStats | undefined; prober: () => ProberStats | undefined }): void {
  const counter = (name: string, help: string, value: () => Readonly<Record<string, number>> | undefined, label?: string): void => {
    new Counter({
      name, help, labelNames: label ? [label] : [], registers: [registry],
      collect() {
        this.reset();
        for (const [k, n] of Object.entries(value() ?? {})) if (Number.isFinite(n) && n > 0) (label ? this.inc({ [label]: k }, n) : this.inc(n));
      },
    });
  };
  const gauge = (name: string, help: string, value: () => number | undefined): void => {
    new Gauge({
      name, help, registers: [registry],
      collect() {
        const v = value();
        this.set(v ?? 0);
      },
    });
  };
  counter('weft_link_probes_total', 'Probe datagrams the link prober sent through the tunnel (peers without a recent handshake)', () => { const p = read.prober(); return p && { all: p.probes }; });
  counter('weft_link_probe_errors_total', 'Probe datagrams that could not be sent', () => { const p = read.prober(); return p && { all: p.probeErrors }; });
  gauge('weft_links_failing', 'Direct links without a handshake for --relay-after (asked to be relayed)', () => read.prober()?.failing);
  gauge('weft_relay_wants', 'Peers this node asks to reach through a relay', () => read.relay()?.wants);
  gauge('weft_relay_offering', '1 while this node offers to relay', () => (read.relay()?.offering ? 1 : 0));
  gauge('weft_relay_sessions', 'Relayed pairs this node forwards for', () => read.relay()?.forwarder.sessions);
  counter('weft_relay_packets_total', 'Datagrams this relay forwarded', () => { const r = read.relay(); return r && { all: r.forwarder.packets }; });
  counter('weft_relay_bytes_total', 'Bytes this relay forwarded', () => { const r = read.relay(); return r && { all: r.forwarder.bytes }; });
  counter('weft_relay_drops_total', 'Datagrams this relay dropped, by reason (source, size, no-destination, send-error)', () => read.relay()?.forwarder.drops, 'reason');
}
