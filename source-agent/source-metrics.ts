/** The source's Prometheus metrics (docs/metrics.md: ferry_source_*, base units; a pid or an id only on the info metric). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { SerializedFerryError } from '../shared/errors/ferry-error.js';
import { PHASES, type Phase } from '../shared/phases.js';
import type { EventSink, MigrationEvent, MigrationSummary, RoundSummary } from './migration/events.js';

export type MigrationResult = 'committed' | 'rolled-back' | 'unknown';
const RESULTS: readonly MigrationResult[] = ['committed', 'rolled-back', 'unknown'];

/** The CLI's exit 3 cases (cli/exit-codes.ts): the original's fate is open, an operator must act. */
export function resultOf(error: SerializedFerryError): MigrationResult {
  if (error.key === 'COMMIT_UNCONFIRMED' || error.key === 'ORIGINAL_LOST') return 'unknown';
  return error.sourceState === 'unknown' || error.sourceState === 'frozen' ? 'unknown' : 'rolled-back';
}

/** What a migration's listener needs beyond its events. */
export interface TrackedMigration {
  maxDowntimeMs: number;
}

export class SourceMetrics {
  private readonly migrations: Counter<'result' | 'phase'>;
  private readonly inFlight: Gauge;
  private readonly phase: Gauge<'phase'>;
  private readonly phaseStart: Gauge;
  private readonly info: Gauge<'migration_id' | 'pid' | 'tracker' | 'dest'>;
  private readonly duration: Histogram;
  private readonly downtime: Histogram;
  private readonly lastDowntime: Gauge;
  private readonly budget: Gauge;
  private readonly round: Gauge;
  private readonly rounds: Counter;
  private readonly dirtyPages: Gauge;
  private readonly pagesPerSecond: Gauge;
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
  private readonly faultWaitMedian: Gauge;
  private readonly faultWaitP99: Gauge;
  private readonly pageRawBytes: Counter<'phase'>;
  private readonly pageWireBytes: Counter<'phase'>;
  private readonly roundCodec: Gauge<'codec'>;

  constructor(
    registry: Registry,
    private readonly pageSize: number,
  ) {
    const registers = [registry];
    this.migrations = new Counter({ name: 'ferry_source_migrations_total', help: 'Migrations ended, by result (committed, rolled-back, unknown: act now) and the phase that failed', labelNames: ['result', 'phase'], registers });
    this.inFlight = new Gauge({ name: 'ferry_source_migrations_in_flight', help: 'Migrations running now', registers });
    this.phase = new Gauge({ name: 'ferry_source_migration_phase', help: 'Migrations in flight in each phase', labelNames: ['phase'], registers });
    this.phaseStart = new Gauge({ name: 'ferry_source_phase_start_timestamp_seconds', help: 'When the latest migration entered its current phase (Unix time)', registers });
    this.info = new Gauge({ name: 'ferry_source_migration_info', help: 'The migration in flight (1 while it runs)', labelNames: ['migration_id', 'pid', 'tracker', 'dest'], registers });
    this.duration = new Histogram({ name: 'ferry_source_migration_duration_seconds', help: 'Whole migration, negotiate to commit', buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300], registers });
    this.downtime = new Histogram({ name: 'ferry_source_downtime_seconds', help: 'Actual downtime: freeze to resume of the restored copy', buckets: [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10], registers });
    this.lastDowntime = new Gauge({ name: 'ferry_source_last_downtime_seconds', help: 'Actual downtime of the latest committed migration', registers });
    this.budget = new Gauge({ name: 'ferry_source_downtime_budget_seconds', help: "The latest migration's maximum downtime (--max-downtime)", registers });
    this.round = new Gauge({ name: 'ferry_source_precopy_round', help: 'The last pre-copy round finished (0-based)', registers });
    this.rounds = new Counter({ name: 'ferry_source_precopy_rounds_total', help: 'Pre-copy rounds finished (dirty syncs)', registers });
    this.dirtyPages = new Gauge({ name: 'ferry_source_dirty_pages', help: 'Pages the last pre-copy round found dirty and sent', registers });
    this.pagesPerSecond = new Gauge({ name: 'ferry_source_pages_per_second', help: 'Pre-copy pages sent per second: while a round runs, since its last progress (every 0.5 s); then the round\'s average', registers });
    this.transferRate = new Gauge({ name: 'ferry_source_transfer_rate_bytes_per_second', help: 'Pre-copy page bytes sent per second: while a round runs, since its last progress (every 0.5 s); then the round\'s average', registers });
    this.roundDuration = new Histogram({ name: 'ferry_source_round_duration_seconds', help: 'Pre-copy round wall time', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers });
    this.transferred = new Counter({ name: 'ferry_source_transferred_bytes_total', help: 'Bytes sent to the dest by kind: precopy pages, final-delta pages, images', labelNames: ['kind'], registers });
    this.expectedDowntime = new Gauge({ name: 'ferry_source_expected_downtime_seconds', help: 'Expected downtime if frozen now (dirty set / rate + fixed cost)', registers });
    this.dirtyRate = new Gauge({ name: 'ferry_source_dirty_rate_bytes_per_second', help: 'Bytes the task wrote per second during the last round', registers });
    this.remaining = new Gauge({ name: 'ferry_source_remaining_bytes', help: 'Dirty bytes still to send after the last round', registers });
    this.throttle = new Gauge({ name: 'ferry_source_throttle_ratio', help: 'Share of the task CPU taken away by auto-converge (0..1)', registers });
    this.pages = new Counter({ name: 'ferry_source_pages_total', help: 'Pre-copy pages by kind (sent, zero)', labelNames: ['kind'], registers });
    this.fill = new Histogram({ name: 'ferry_source_fill_duration_seconds', help: 'Lazy restore: Commit answered to every page in the copy', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], registers });
    this.replaced = new Counter({ name: 'ferry_source_replaced_pages_total', help: 'Lazy restore: trusted pages that differed from the frozen original (sent from it)', registers });
    this.sentBytes = new Counter({
      name: 'ferry_source_sent_bytes_total',
      help: 'Bytes sent to the dest by phase: precopy (pages while the task ran), downtime (pages and images while frozen), postcopy (pages after the resume)',
      labelNames: ['phase'],
      registers,
    });
    // Two gauges, not a quantile label: promtool reserves `quantile` for summaries, and these come from the dest.
    this.faultWaitMedian = new Gauge({ name: 'ferry_source_fault_wait_median_seconds', help: 'Lazy restore, last migration: median wait of the faults that waited for the source', registers });
    this.faultWaitP99 = new Gauge({ name: 'ferry_source_fault_wait_p99_seconds', help: 'Lazy restore, last migration: 99th percentile wait of the faults that waited for the source', registers });
    this.pageRawBytes = new Counter({ name: 'ferry_source_page_raw_bytes_total', help: 'Page bytes sent, before compression, by phase (precopy at each round\'s end, final-delta at the end)', labelNames: ['phase'], registers });
    this.pageWireBytes = new Counter({ name: 'ferry_source_page_wire_bytes_total', help: 'Page bytes as they went on the wire (after compression), by phase', labelNames: ['phase'], registers });
    this.roundCodec = new Gauge({ name: 'ferry_source_round_codec', help: 'The codec most of the last pre-copy round went with (--compress): 1 for it, 0 for the others', labelNames: ['codec'], registers });
    // Every series a dashboard or an alert reads exists from the start, so increase() sees the first migration.
    for (const p of PHASES) this.phase.set({ phase: p }, 0);
    for (const result of RESULTS) for (const p of PHASES) this.migrations.inc({ result, phase: p }, 0);
    for (const phase of ['precopy', 'downtime', 'postcopy']) this.sentBytes.inc({ phase }, 0);
    for (const kind of ['precopy', 'final-delta', 'images']) this.transferred.inc({ kind }, 0);
    for (const kind of ['sent', 'zero']) this.pages.inc({ kind }, 0);
    for (const phase of ['precopy', 'final-delta']) {
      this.pageRawBytes.inc({ phase }, 0);
      this.pageWireBytes.inc({ phase }, 0);
    }
    for (const codec of ['none', 'zstd']) this.roundCodec.set({ codec }, 0);
  }

  /** One migration's listener (subscribe it to its announcer): each migration keeps its own phase and info series. */
  track(m: TrackedMigration): EventSink {
    let phase: Phase | undefined;
    let opened = false;
    let info: Record<'migration_id' | 'pid' | 'tracker' | 'dest', string> | undefined;
    const enter = (next: Phase | undefined): void => {
      if (phase) this.phase.dec({ phase });
      phase = next;
      if (next) {
        this.phase.inc({ phase: next });
        this.phaseStart.set(Date.now() / 1000);
      }
    };
    // Pre-copy bytes are counted as the stream sends them (progress, then each round's end up to the same
    // cumulative figure), so that a long round shows on the rate panels while it runs.
    let precopyCounted = 0;
    let rateSample: { at: number; pages: number; bytes: number } | undefined;
    const countPrecopy = (bytesSent: number): void => {
      if (bytesSent <= precopyCounted) return;
      this.sentBytes.inc({ phase: 'precopy' }, bytesSent - precopyCounted);
      this.transferred.inc({ kind: 'precopy' }, bytesSent - precopyCounted);
      precopyCounted = bytesSent;
    };
    const end = (): void => {
      enter(undefined);
      this.inFlight.dec();
      if (info) this.info.remove(info);
      this.throttle.set(0);
      this.remaining.set(0);
    };
    return (e: MigrationEvent): void => {
      // The orchestrator starts in negotiate without announcing it: the first event opens the migration.
      if (!opened) {
        opened = true;
        this.inFlight.inc();
        this.budget.set(m.maxDowntimeMs / 1000);
        enter('negotiate');
      }
      switch (e.kind) {
        case 'started':
          info = { migration_id: e.migrationId, pid: String(e.pid), tracker: e.tracker, dest: e.dest };
          this.info.set(info, 1);
          return;
        case 'phase':
          return enter(e.phase);
        case 'progress': {
          if (e.phase !== 'precopy') return;
          countPrecopy(e.bytesSent);
          const now = performance.now();
          if (rateSample && now > rateSample.at) {
            const seconds = (now - rateSample.at) / 1000;
            this.pagesPerSecond.set((e.pagesSent - rateSample.pages) / seconds);
            this.transferRate.set((e.bytesSent - rateSample.bytes) / seconds);
          }
          rateSample = { at: now, pages: e.pagesSent, bytes: e.bytesSent };
          return;
        }
        case 'round':
          countPrecopy(e.bytesSent);
          rateSample = undefined;
          return this.recordRound(e.round);
        case 'decision':
          return this.recordDecision(e);
        case 'done':
          this.recordSuccess(e.summary);
          return end();
        case 'failed':
          this.migrations.inc({ result: resultOf(e.error), phase: e.phase });
          return end();
        default:
          return;
      }
    };
  }

  private recordRound(r: RoundSummary): void {
    const pagesSent = r.dirtyPages - r.zeroPages;
    this.round.set(r.round);
    this.rounds.inc();
    this.dirtyPages.set(r.dirtyPages);
    this.transferRate.set(r.durationMs > 0 ? (r.bytesSent * 1000) / r.durationMs : 0);
    this.pagesPerSecond.set(r.durationMs > 0 ? (r.dirtyPages * 1000) / r.durationMs : 0);
    this.roundDuration.observe(r.durationMs / 1000);
    this.pages.inc({ kind: 'sent' }, pagesSent);
    this.pages.inc({ kind: 'zero' }, r.zeroPages);
    this.pageRawBytes.inc({ phase: 'precopy' }, r.bytesSent);
    this.pageWireBytes.inc({ phase: 'precopy' }, r.wireBytes);
    for (const codec of ['none', 'zstd']) this.roundCodec.set({ codec }, codec === r.codec ? 1 : 0);
  }

  private recordDecision(d: { expectedDowntimeMs: number | undefined; dirtyRateBytesPerSecond: number | undefined; throttlePercent: number; remainingBytes: number }): void {
    if (d.expectedDowntimeMs !== undefined) this.expectedDowntime.set(d.expectedDowntimeMs / 1000);
    if (d.dirtyRateBytesPerSecond !== undefined) this.dirtyRate.set(d.dirtyRateBytesPerSecond);
    this.remaining.set(d.remainingBytes);
    this.throttle.set(d.throttlePercent / 100);
  }

  private recordSuccess(s: MigrationSummary): void {
    this.migrations.inc({ result: 'committed', phase: 'commit' });
    this.duration.observe(s.totalMs / 1000);
    this.downtime.observe(s.downtimeMs / 1000);
    this.lastDowntime.set(s.downtimeMs / 1000);
    this.transferred.inc({ kind: 'final-delta' }, s.finalDeltaPages * this.pageSize);
    this.transferred.inc({ kind: 'images' }, s.imageBytesSent);
    this.sentBytes.inc({ phase: 'downtime' }, s.downtimeBytes);
    this.sentBytes.inc({ phase: 'postcopy' }, s.postcopyBytes);
    // What the rounds did not send of the stream's page bytes, the final delta did.
    const precopyRaw = s.rounds.reduce((n, r) => n + r.bytesSent, 0);
    const precopyWire = s.rounds.reduce((n, r) => n + (r.wireBytes ?? r.bytesSent), 0);
    // A summary from an agent before compression (or a test's partial one) may lack the figures: nothing then.
    this.pageRawBytes.inc({ phase: 'final-delta' }, Math.max(0, (s.pageBytesSent || 0) - precopyRaw));
    this.pageWireBytes.inc({ phase: 'final-delta' }, Math.max(0, (s.pageWireBytes || s.pageBytesSent || 0) - precopyWire));
    if (s.restoreMode === 'lazy') {
      this.fill.observe(s.fillMs / 1000);
      this.replaced.inc(s.replacedPages);
      this.faultWaitMedian.set(s.faultWaitP50Us / 1e6);
      this.faultWaitP99.set(s.faultWaitP99Us / 1e6);
    }
  }
}
