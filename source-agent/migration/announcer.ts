/**
 * The one place a migration's transitions and progress are announced. Every phase entered, round, decision
 * and outcome is a MigrationEvent; the caller's view, the logs and the metrics (and, later, the journal)
 * subscribe here instead of being called by hand from the phases.
 */
import type { Logger } from '../../shared/logging/logger.js';
import type { EventSink, MigrationEvent } from './events.js';

export class MigrationAnnouncer {
  private readonly listeners: EventSink[] = [];

  constructor(private readonly log: Logger) {}

  subscribe(listener: EventSink): void {
    this.listeners.push(listener);
  }

  /** A failing listener is logged and skipped: watching a migration must never break it. */
  announce(e: MigrationEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(e);
      } catch (err) {
        this.log.warn('a migration listener failed', { kind: e.kind, err });
      }
    }
  }
}

/** The structured log lines of a migration's events (never page contents). */
export function logEvents(log: Logger): EventSink {
  return (e) => {
    switch (e.kind) {
      case 'started':
        log.info('started', { pid: e.pid, dest: e.dest, tasks: e.tasks, tracker: e.tracker, note: e.trackerNote });
        return;
      case 'phase':
        log.info('phase', { phase: e.phase });
        return;
      case 'round':
        log.info('round done', { ...e.round, durationMs: Math.round(e.round.durationMs), pagesSent: e.pagesSent });
        return;
      case 'decision':
        log.info('decision', { action: e.action, rule: e.rule, decision: e.message, expectedDowntimeMs: e.expectedDowntimeMs });
        return;
      case 'done':
        log.info('migrated', { ...e.summary, rounds: e.summary.rounds.length });
        return;
      case 'failed':
        log.error('migration failed', { phase: e.phase, err: e.error, sourceState: e.error.sourceState });
        return;
    }
  };
}
