/** The one place a migration announces itself: every listener hears every event, in order, and none can break it. */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createLogger } from '../../shared/logging/logger.js';
import { MigrationAnnouncer, logEvents } from '../../source-agent/migration/announcer.js';
import type { MigrationSummary } from '../../source-agent/migration/events.js';
import { SourceMetrics } from '../../source-agent/source-metrics.js';
import { ROUND, THROTTLE_DECISION } from '../support/migration-events.js';

const round = ROUND;
const decision = THROTTLE_DECISION;

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const value = (metric?.values as { value: number; labels: Record<string, string> }[] | undefined)?.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value;
}

describe('MigrationAnnouncer', () => {
  it('tells every listener every event in order; a listener that throws is logged and skipped', () => {
    const lines: string[] = [];
    const announcer = new MigrationAnnouncer(createLogger({}, (l) => lines.push(l), 'debug'));
    const heard: string[][] = [[], []];
    announcer.subscribe((e) => heard[0]!.push(e.kind));
    announcer.subscribe(() => {
      throw new Error('broken dashboard');
    });
    announcer.subscribe((e) => heard[1]!.push(e.kind));
    announcer.announce({ kind: 'phase', phase: 'prepare' });
    announcer.announce(decision);
    expect(heard).toEqual([
      ['phase', 'decision'],
      ['phase', 'decision'],
    ]);
    expect(lines.filter((l) => l.includes('a migration listener failed'))).toHaveLength(2);
  });

  it('logs each event once, with its phase and never page contents', () => {
    const lines: string[] = [];
    const log = logEvents(createLogger({ side: 'source' }, (l) => lines.push(l), 'info'));
    log({ kind: 'phase', phase: 'freeze' });
    log({ kind: 'failed', phase: 'restore', error: new FerryError('CRIU_RESTORE_FAILED', { phase: 'restore' }).toJSON() });
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.map((r) => [r.msg, r.phase])).toEqual([
      ['phase', 'freeze'],
      ['migration failed', 'restore'],
    ]);
  });

  it('drives the metrics: rounds, decisions and the outcome, labelled by the failed phase', async () => {
    const registry = new Registry();
    const metrics = new SourceMetrics(registry, 4096);
    const announcer = new MigrationAnnouncer(createLogger({}, () => undefined));
    announcer.subscribe(metrics.track({ maxDowntimeMs: 300 }));
    announcer.announce({ kind: 'round', round, pagesSent: 100, bytesSent: 90 * 4096, rateBytesPerSecond: 1e7 });
    announcer.announce(decision);
    expect(await metricValue(registry, 'ferry_source_pages_total', { kind: 'zero' })).toBe(10);
    expect(await metricValue(registry, 'ferry_source_remaining_bytes')).toBe(100 * 4096);
    expect(await metricValue(registry, 'ferry_source_throttle_ratio')).toBeCloseTo(0.3);
    announcer.announce({ kind: 'failed', phase: 'precopy', error: new FerryError('PAGE_STREAM_FAILED').toJSON() });
    expect(await metricValue(registry, 'ferry_source_migrations_total', { result: 'rolled-back', phase: 'precopy' })).toBe(1);
    expect(await metricValue(registry, 'ferry_source_throttle_ratio')).toBe(0);
  });

  it("counts pre-copy bytes as a round sends them, up to the round's end, and shows its rate while it runs", async () => {
    const registry = new Registry();
    const observe = new SourceMetrics(registry, 4096).track({ maxDowntimeMs: 300 });
    observe({ kind: 'progress', phase: 'precopy', round: 0, pagesSent: 100, bytesSent: 100 * 4096 });
    const afterFirst = performance.now();
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'precopy' })).toBe(100 * 4096);
    await new Promise((r) => setTimeout(r, 20));
    const beforeSecond = performance.now();
    observe({ kind: 'progress', phase: 'precopy', round: 0, pagesSent: 300, bytesSent: 300 * 4096 });
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'precopy' })).toBe(300 * 4096);
    expect(await metricValue(registry, 'ferry_source_transferred_bytes_total', { kind: 'precopy' })).toBe(300 * 4096);
    // 200 pages over at least the time between the two calls: a live rate, not the 0 of a round not yet ended.
    const live = await metricValue(registry, 'ferry_source_pages_per_second');
    expect(live).toBeGreaterThan(0);
    expect(live).toBeLessThanOrEqual(200 / ((beforeSecond - afterFirst) / 1000));
    // The round's end brings the counter to the stream's cumulative figure, never past it, never twice.
    observe({ kind: 'round', round: { ...round, round: 0, bytesSent: 400 * 4096 }, pagesSent: 400, bytesSent: 400 * 4096, rateBytesPerSecond: 1e7 });
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'precopy' })).toBe(400 * 4096);
    // The final delta goes through the same stream while frozen: not pre-copy.
    observe({ kind: 'progress', phase: 'final-delta', round: 1, pagesSent: 450, bytesSent: 450 * 4096 });
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'precopy' })).toBe(400 * 4096);
  });

  it('splits the bytes sent by phase and keeps the last migration\'s fault waits (issue 12)', async () => {
    const registry = new Registry();
    const observe = new SourceMetrics(registry, 4096).track({ maxDowntimeMs: 300 });
    observe({ kind: 'round', round, pagesSent: 100, bytesSent: 90 * 4096, rateBytesPerSecond: 1e7 });
    const summary = {
      rounds: [round], totalMs: 1000, downtimeMs: 100, finalDeltaPages: 0, imageBytesSent: 500, restoreMode: 'lazy', fillMs: 2000, replacedPages: 0,
      precopyBytes: 90 * 4096, downtimeBytes: 500, postcopyBytes: 7 * 4096, faultWaitP50Us: 250, faultWaitP99Us: 40_000,
    } as unknown as MigrationSummary;
    observe({ kind: 'done', summary });
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'precopy' })).toBe(90 * 4096);
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'downtime' })).toBe(500);
    expect(await metricValue(registry, 'ferry_source_sent_bytes_total', { phase: 'postcopy' })).toBe(7 * 4096);
    expect(await metricValue(registry, 'ferry_source_fault_wait_median_seconds')).toBeCloseTo(0.00025);
    expect(await metricValue(registry, 'ferry_source_fault_wait_p99_seconds')).toBeCloseTo(0.04);
  });
});
