/**
 * The Source gRPC service of `ferry source-agent`: Check (with a pid, the preflight of that task, run here: this
 * agent's capabilities and namespaces are the ones its Migrate would have), and Migrate with its progress
 * stream, for one caller (the peer of one connection). Each call is authorized before anything is touched: the dest must be on the
 * agent's allow-list, and the caller must be allowed to migrate the whole tree (caller-permission.ts). A
 * migration runs under the agent's own signal, not the caller's: if the CLI goes away the migration still
 * finishes or rolls back.
 */
import type * as grpc from '@grpc/grpc-js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { toStatus } from '../shared/errors/grpc-status.js';
import type { Logger } from '../shared/logging/logger.js';
import type { Phase } from '../shared/phases.js';
import type { CheckRequest, CheckResponse, MigrateRequest, MigrationEventMessage } from '../shared/transport/messages.js';
import type { TransportSecurity } from '../shared/transport/transport-security.js';
import { authorizeMigration, permissionLostError, reauthorizeOnProgress, type Caller } from './caller-permission.js';
import { runCheck, runTaskCheck } from './check.js';
import { readSourceEnvironment, type SourceEnvironment } from './config/environment.js';
import { compileCriuFeatures, compileMigrateOptions } from './config/migrate-options.js';
import { compileAllow } from './preflight/preflight.js';
import { fromMigrateRequest } from './config/migrate-request.js';
import type { DestAllowList } from './dest-allow-list.js';
import { toEventMessage } from './migration/event-message.js';
import type { EventSink, MigrationEvent } from './migration/events.js';
import { migrate } from './migration/orchestrator.js';
import { grpcPorts } from './migration/ports.js';
import type { SourceMetrics } from './source-metrics.js';

export class SourceService {
  private readonly running = new Set<AbortController>();

  constructor(
    private readonly log: Logger,
    private readonly metrics: SourceMetrics,
    private readonly allowDests: DestAllowList,
    /** How this agent dials the dests (mutual TLS with its own certificate, unless --insecure). */
    private readonly security: TransportSecurity,
    /** The paths its migrations use (FERRY_* over the config file), compiled once by the agent's command. */
    private readonly environment: SourceEnvironment = readSourceEnvironment(),
  ) {}

  /** The handlers of one connection, whose every call comes from `caller`. */
  handlers(caller: Caller): grpc.UntypedServiceImplementation {
    const log = this.log.child({ callerUid: caller.uid, callerPid: caller.pid });
    return {
      Check: (call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => {
        this.check(call.request, caller, log).then(
          (r) => cb(null, r),
          (e: unknown) => cb(this.failed(log, 'Check', e)),
        );
      },
      Migrate: (call: grpc.ServerWritableStream<MigrateRequest, MigrationEventMessage>) => {
        this.migrate(call, caller, log).catch((e: unknown) => call.emit('error', this.failed(log, 'Migrate', e)));
      },
    };
  }

  /** The status of a failed call; refusals of the caller are logged here (the agent's audit trail). */
  private failed(log: Logger, call: string, e: unknown): grpc.ServiceError {
    if (e instanceof FerryError && (e.key === 'CALLER_NOT_PERMITTED' || e.key === 'DEST_NOT_ALLOWED')) log.warn(`${call} refused`, { err: e });
    return toStatus(e) as grpc.ServiceError;
  }

  private async check(request: CheckRequest, caller: Caller, log: Logger): Promise<CheckResponse> {
    const dest = request.dest ? this.allowDests.check(request.dest, 'Check') : undefined;
    const pid = request.pid;
    log.info('Check', { dest, pid });
    if (pid === undefined || pid === null) return runCheck(dest, undefined, this.security);
    // Checked like the flags typed on this host; the preflight reads the tree's /proc: only for a caller that may migrate it.
    const allow = compileAllow(request.allow);
    const criuFeatures = compileCriuFeatures(request.fileLocks, request.tcpEstablished);
    authorizeMigration(caller, pid);
    const { response, findings } = await runTaskCheck(pid, dest, criuFeatures, allow, undefined, this.security);
    return { ...response, preflight: findings.map(({ check, verdict, code, message, hint }) => ({ check, verdict, code, message, hint })) };
  }

  private async migrate(call: grpc.ServerWritableStream<MigrateRequest, MigrationEventMessage>, caller: Caller, log: Logger): Promise<void> {
    const opts = compileMigrateOptions(fromMigrateRequest(call.request), this.environment);
    this.allowDests.check(opts.to, 'Migrate');
    authorizeMigration(caller, opts.pid);
    log.info('Migrate', { pid: opts.pid, dest: opts.to });
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
    const listeners: EventSink[] = [this.metrics.track(opts)];
    if (caller.uid !== 0) listeners.push(reauthorizeOnProgress(caller, opts.pid, controller, log));
    try {
      await migrate(opts, { log, emit, signal: controller.signal, listeners, ports: grpcPorts(this.security) });
      if (!call.cancelled) call.end();
    } catch (e) {
      throw permissionLostError(controller.signal, e);
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
