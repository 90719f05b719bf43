import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { filterAudit, parseAuditLine, parseSince, readRejections, renderAudit, startRejectionAudit } from '../../src/observe/audit.ts';

function capture(): { logger: pino.Logger; lines: () => Record<string, unknown>[] } {
  let buf = '';
  const dest = new Writable({ write(chunk, _enc, cb) { buf += chunk.toString(); cb(); } });
  return { logger: pino({ base: { node: 'n1' } }, dest), lines: () => buf.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

describe('audit read-back', () => {
  const log = [
    JSON.stringify({ level: 30, time: 1_000, node: 'n1', component: 'agent', audit: true, event: 'peer-added', peer: 'n2', publicKey: 'K2=', msg: 'peer added' }),
    JSON.stringify({ level: 30, time: 2_000, node: 'n1', component: 'agent', msg: 'reconciled' }),
    'garbage {',
    JSON.stringify({ level: 30, time: 3_000, node: 'n1', audit: true, event: 'peer-removed', peer: 'n2', meshState: 'dead', msg: 'peer removed' }),
    JSON.stringify({ audit: 'true', event: 'fake' }),
    JSON.stringify({ audit: true, event: 5 }),
    JSON.stringify([1, 2]),
    `{"audit":true,"event":"x","pad":"${'a'.repeat(70_000)}"}`,
  ].join('\n');

  it('keeps only well-formed audit lines, in order, filtered by time and event', () => {
    expect(filterAudit(log).map((e) => e.event)).toEqual(['peer-added', 'peer-removed']);
    expect(filterAudit(log, { since: 2_000 }).map((e) => e.event)).toEqual(['peer-removed']);
    expect(filterAudit(log, { events: ['peer-added'] })).toHaveLength(1);
    expect(parseAuditLine('')).toBeUndefined();
  });

  it('renders one line per event with its interesting fields', () => {
    const out = renderAudit(filterAudit(log));
    expect(out.split('\n')[0]).toBe('1970-01-01T00:00:01.000Z  n1  peer-added  peer=n2  publicKey=K2=');
    expect(out).toContain('peer-removed  peer=n2  meshState=dead');
    expect(renderAudit([])).toBe('no audit events\n');
  });

  it('parses --since as a duration or a date, and rejects junk', () => {
    expect(parseSince('15m', 1_000_000)).toBe(100_000);
    expect(parseSince('2h', 10 * 3_600_000)).toBe(8 * 3_600_000);
    expect(parseSince('2026-01-01T00:00:00Z', 0)).toBe(Date.parse('2026-01-01T00:00:00Z'));
    expect(() => parseSince('yesterday-ish', 0)).toThrow(/--since/);
  });
});

describe('rejection audit', () => {
  it('emits one aggregated line per interval with the deltas, nothing when quiet, and survives counter resets', async () => {
    const registry = new Registry();
    const rejected = new Counter({ name: 'r', help: 'r', labelNames: ['reason'], registers: [registry] });
    let stats: Record<string, unknown> = { decryptFailures: 0, badSignatures: 0, malformed: 0, rateLimited: 0, packetsIn: 100 };
    const { logger, lines } = capture();
    const a = startRejectionAudit({ logger, intervalMs: 3_600_000, read: () => readRejections(rejected, () => stats) });
    try {
      await a.flush();
      expect(lines()).toEqual([]);
      rejected.inc({ reason: 'bad-cidr' }, 3);
      stats = { ...stats, decryptFailures: 1000, packetsIn: 5000 };
      await a.flush();
      await a.flush();
      stats = { ...stats, decryptFailures: 2 };
      await a.flush();
      const out = lines();
      expect(out).toHaveLength(2);
      expect(out[0]).toMatchObject({ audit: true, event: 'rejected', records: { 'bad-cidr': 3 }, packets: { decryptFailures: 1000 } });
      expect(out[1]).toMatchObject({ audit: true, event: 'rejected', records: {}, packets: { decryptFailures: 2 } });
    } finally {
      a.stop();
    }
  });

  it('logs and skips an interval whose counters cannot be read', async () => {
    const { logger, lines } = capture();
    const a = startRejectionAudit({ logger, intervalMs: 3_600_000, read: () => { throw new Error('boom'); } });
    await a.flush();
    a.stop();
    expect(lines()[0]).toMatchObject({ level: 40, msg: 'cannot read rejection counters for the audit trail' });
  });
});
