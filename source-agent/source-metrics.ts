/** The source's Prometheus metrics (names from docs/metrics.md; base units; no pid or id labels). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Phase } from '../shared/phases.js';
import type { MigrationEvent, MigrationSummary, RoundSummary } from './migration/events.js';

export class SourceMetrics {
  private readonly migrations: Counter<'result' | 'phase'>;
  private readonly duration: Histogram;
  private readonly downtime: Histogram;
  private readonly round: Gauge;
  private readonly dirtyPages: Gauge;
  private readonly transferRate: Gauge;
  private readonly roundDuration: Histogram;
  private readonly transferred: Counter<'kind'>;
  private readonly pages: Counter<'kind'>;
  private readonly expectedDowntime: Gauge;
  private readonly dirtyRate: Gauge;
  private readonly remaining: Gauge;
  private readonly throttle: Gauge;
  private readonly fill: Histogram;
  private readonly replaced: Counter;
  private readonly sentBytes: Counter<'phase'>;
  private readonly faultWait: Gauge<'quantile'>;

  constructor(
    registry: Registry,
    private readonly pageSize: number,
  ) {
    const registers = [registry];
    this.migrations = new Counter({ name: 'ferry_migrations_total', help: 'Migrations by result (and the phase that failed)', labelNames: ['result', 'phase'], registers });
    this.duration = new Histogram({ name: 'ferry_migration_duration_seconds', help: 'Whole migration, negotiate to commit', buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300], registers });
    this.downtime = new Histogram({ name: 'ferry_downtime_seconds', help: 'Freeze to resume of the restored copy', buckets: [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10], registers });
    this.round = new Gauge({ name: 'ferry_precopy_round', help: 'The pre-copy round in progress (0-based)', registers });
    this.dirtyPages = new Gauge({ name: 'ferry_dirty_pages', help: 'Pages sent in the last pre-copy round', registers });
    this.transferRate = new Gauge({ name: 'ferry_transfer_rate_bytes_per_second', help: 'Page bytes per second in the last round', registers });
    this.roundDuration = new Histogram({ name: 'ferry_round_duration_seconds', help: 'Pre-copy round wall time', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers });
    this.transferred = new Counter({ name: 'ferry_transferred_bytes_total', help: 'Bytes sent to the dest', labelNames: ['kind'], registers });
    this.expectedDowntime = new Gauge({ name: 'ferry_expected_downtime_seconds', help: 'Expected downtime if frozen now (dirty set / rate + fixed cost)', registers });
    this.dirtyRate = new Gauge({ name: 'ferry_dirty_rate_bytes_per_second', help: 'Bytes the task wrote per second during the last round', registers });
    this.remaining = new Gauge({ name: 'ferry_remaining_bytes', help: 'Dirty bytes still to send after the last round', registers });
    this.throttle = new Gauge({ name: 'ferry_throttle_ratio', help: 'Share of the task CPU taken away by auto-converge (0..1)', registers });
    this.pages = new Counter({ name: 'ferry_pages_total', help: 'Pages handled by kind (sent, zero)', labelNames: ['kind'], registers });
    this.fill = new Histogram({ name: 'ferry_fill_seconds', help: 'Lazy restore: Commit answered to every page in the copy', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], registers });
    this.replaced = new Counter({ name: 'ferry_replaced_pages_total', help: 'Lazy restore: trusted pages that differed from the frozen original (sent from it)', registers });
    this.sentBytes = new Counter({
      name: 'ferry_sent_bytes_total',
      help: 'Bytes sent to the dest by phase: precopy (pages while the task ran), downtime (pages and images while frozen), postcopy (pages after the resume)',
      labelNames: ['phase'],
      registers,
    });
    this.faultWait = new Gauge({ name: 'ferry_fault_wait_seconds', help: 'Lazy restore, last migration: wait of the faults that waited for the source (median, 99th percentile)', labelNames: ['quantile'], registers });
  }

  /** Subscribes to a migration's announcements (see migration/announcer.ts). */
  observe(e: MigrationEvent): void {
    switch (e.kind) {
      case 'round':
        return this.recordRound(e.round);
      case 'decision':
        return this.recordDecision(e);
      case 'done':
        return this.recordSuccess(e.summary);
      case 'failed':
        return this.recordFailure(e.phase);
      default:
        return;
    }
  }

  private recordRound(r: RoundSummary): void {
    this.round.set(r.round);
    this.dirtyPages.set(r.dirtyPages);
    this.transferRate.set(r.durationMs > 0 ? (r.bytesSent * 1000) / r.durationMs : 0);
    this.roundDuration.observe(r.durationMs / 1000);
    this.transferred.inc({ kind: 'precopy' }, r.bytesSent);
    this.sentBytes.inc({ phase: 'precopy' }, r.bytesSent);
    this.pages.inc({ kind: 'sent' }, r.dirtyPages - r.zeroPages);
    this.pages.inc({ kind: 'zero' }, r.zeroPages);
  }

  private recordDecision(d: { expectedDowntimeMs: number | undefined; dirtyRateBytesPerSecond: number | undefined; throttlePercent: number; remainingBytes: number }): void {
    if (d.expectedDowntimeMs !== undefined) this.expectedDowntime.set(d.expectedDowntimeMs / 1000);
    if (d.dirtyRateBytesPerSecond !== undefined) this.dirtyRate.set(d.dirtyRateBytesPerSecond);
    this.remaining.set(d.remainingBytes);
    this.throttle.set(d.throttlePercent / 100);
  }

  private recordSuccess(s: MigrationSummary): void {
    this.throttle.set(0);
    this.remaining.set(0);
    this.migrations.inc({ result: 'committed', phase: 'commit' });
    this.duration.observe(s.totalMs / 1000);
    this.downtime.observe(s.downtimeMs / 1000);
    this.transferred.inc({ kind: 'final-delta' }, s.finalDeltaPages * this.pageSize);
    this.transferred.inc({ kind: 'images' }, s.imageBytesSent);
    this.sentBytes.inc({ phase: 'downtime' }, s.downtimeBytes);
    this.sentBytes.inc({ phase: 'postcopy' }, s.postcopyBytes);
    if (s.restoreMode === 'lazy') {
      this.fill.observe(s.fillMs / 1000);
      this.replaced.inc(s.replacedPages);
      this.faultWait.set({ quantile: '0.5' }, s.faultWaitP50Us / 1e6);
      this.faultWait.set({ quantile: '0.99' }, s.faultWaitP99Us / 1e6);
    }
  }

  private recordFailure(phase: Phase): void {
    this.throttle.set(0);
    this.migrations.inc({ result: 'rolled-back', phase });
  }
}
