/**
 * The Source gRPC service of `ferry source-agent`: Check, and Migrate with its progress stream. A migration
 * runs under the agent's own signal, not the caller's: if the CLI goes away the migration still finishes or
 * rolls back.
 */
import * as grpc from '@grpc/grpc-js';
import { toStatus } from '../shared/errors/grpc-status.js';
import type { Logger } from '../shared/logging/logger.js';
import type { Phase } from '../shared/phases.js';
import type { CheckRequest, CheckResponse, MigrateRequest, MigrationEventMessage } from '../shared/transport/messages.js';
import { runCheck } from './check.js';
import { compileMigrateOptions } from './config/migrate-options.js';
import { fromMigrateRequest } from './config/migrate-request.js';
import { toEventMessage } from './migration/event-message.js';
import type { MigrationEvent } from './migration/events.js';
import { migrate } from './migration/orchestrator.js';
import type { SourceMetrics } from './source-metrics.js';

export class SourceService {
  private readonly running = new Set<AbortController>();

  constructor(
    private readonly log: Logger,
    private readonly metrics: SourceMetrics,
  ) {}

  handlers(): grpc.UntypedServiceImplementation {
    return {
      Check: (call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => {
        runCheck(call.request.dest || undefined).then(
          (r) => cb(null, r),
          (e: unknown) => cb(toStatus(e) as grpc.ServiceError),
        );
      },
      Migrate: (call: grpc.ServerWritableStream<MigrateRequest, MigrationEventMessage>) => {
        this.migrate(call).catch((e: unknown) => call.emit('error', toStatus(e)));
      },
    };
  }

  private async migrate(call: grpc.ServerWritableStream<MigrateRequest, MigrationEventMessage>): Promise<void> {
    const opts = compileMigrateOptions(fromMigrateRequest(call.request));
    const controller = new AbortController();
    this.running.add(controller);
    let phase: Phase = 'negotiate';
    let migrationId = '';
    const emit = (e: MigrationEvent): void => {
      if (e.kind === 'phase') phase = e.phase;
      if (e.kind === 'started') migrationId = e.migrationId;
      if (call.cancelled) return; // the caller left; the migration goes on
      call.write(toEventMessage(migrationId, phase, e));
    };
    try {
      await migrate(opts, { log: this.log, emit, signal: controller.signal, listeners: [(e) => this.metrics.observe(e)] });
      if (!call.cancelled) call.end();
    } finally {
      this.running.delete(controller);
    }
  }

  /** Agent shutdown: running migrations roll back. */
  async close(): Promise<void> {
    for (const c of this.running) c.abort();
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 50));
  }
}
