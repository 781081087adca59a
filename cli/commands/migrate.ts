import type * as grpc from '@grpc/grpc-js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { createLogger } from '../../shared/logging/logger.js';
import type { NoConvergeAction } from '../../shared/policy/convergence.js';
import type { TransportSecurity } from '../../shared/transport/transport-security.js';
import type { MigrateRequest, MigrationEventMessage } from '../../shared/transport/messages.js';
import { compileMigrateOptions, type CompiledMigrateOptions, type MigrateOptions } from '../../source-agent/config/migrate-options.js';
import { toMigrateRequest } from '../../source-agent/config/migrate-request.js';
import { fromEventMessage } from '../../source-agent/migration/event-message.js';
import type { MigrationSummary } from '../../source-agent/migration/events.js';
import { migrate } from '../../source-agent/migration/orchestrator.js';
import { grpcPorts } from '../../source-agent/migration/ports.js';
import { intFlag, msFlag, parse, rateFlag } from '../args.js';
import { applyHostConfig } from '../config/agent-config.js';
import { EXIT } from '../exit-codes.js';
import { parseMigrateMetricsFlags, startMigrateMetrics, type MigrateMetricsFlags } from '../migrate-metrics.js';
import { resumeCommand } from './resume.js';
import { connectionError, sourceAgentSocket, sourceClient, type SourceAgentSocket } from '../source-agent-socket.js';
import { ProgressView, formatSummary } from '../render.js';
import { TLS_FLAGS, tlsHelp, transportSecurityFromFlags, warnIfPlaintext } from '../tls-flags.js';

export const MIGRATE_HELP = `Usage: ferry migrate PID --to HOST:PORT [options]
       ferry migrate --resume ID|all [TLS options]

Moves the running task PID (and its whole process tree) to the dest agent at HOST:PORT: its memory is
copied in rounds while it runs, then it is frozen briefly, dumped, restored on the dest, and the original
is removed only after the dest confirms. On any failure before that, the original is resumed.
First, before anything is touched, the preflight (the checks of \`ferry check PID --to\`) refuses a task
that CRIU would refuse or the dest cannot take, with the first refusal's code (exit 2; 1 for a state
that passes, such as a vfork wait).

Options:
  --to HOST:PORT          the dest agent (required)
  --max-rounds N          pre-copy rounds at most (default 10)
  --max-downtime DUR      downtime budget that decides the freeze (default 300ms)
  --freeze-timeout DUR    the source thaws the task on its own after this long frozen (default 120s)
  --restore-timeout DUR   criu restore on the dest must finish within this (default 120s)
  --bandwidth RATE        cap pre-copy traffic, e.g. 200mbit or 25MiB (the final delta is never capped)
  --on-no-converge ACTION when pre-copy does not converge: throttle (default: take CPU from the task,
                          20 % then +10 % per round), freeze (freeze anyway), abort (leave it running) or
                          postcopy (the same as --post-copy auto)
  --post-copy WHEN        off (default), auto (when pre-copy does not converge, before any throttling) or
                          always (right after round 0): the copy resumes on the dest at once and fetches
                          the pages it lacks from the frozen original, which is then the only full copy
                          until the fill ends: its loss (the source host dies) loses the task (exit 3,
                          ORIGINAL_LOST). Needs a dest that restores lazily; not with --restore eager or
                          --no-precopy
  --no-precopy            stop-and-copy: freeze at once, send everything while frozen
  --compress WHEN         auto (default: zstd only while the measured link is the limit, never on a fast
                          link), off or zstd (every batch that shrinks; FERRY-1025 when the source or the
                          dest has no libzstd). Both agents must speak it (Negotiate); every page's hash is
                          checked after decompression
  --page-channels N       page channels (TLS sockets beside the gRPC control plane) to send pages over,
                          0 to 16 (default 1; 0: the gRPC page stream, as to a dest without page channels)
  --file-locks WHEN       auto (default: when the task holds a flock, POSIX or OFD lock), on or off: CRIU's
                          --file-locks on dump and restore (off: a task holding a lock is refused, FERRY-1202)
  --tcp-established WHEN  auto (default: when the task has a connected TCP socket), on or off (FERRY-1203 refuses
                          such a task): CRIU's --tcp-established on dump and restore, with the network lock
                          that works on the host (nftables, else iptables); refused at once (FERRY-1019) when
                          the source or the dest has none. The connection's local address must exist on the
                          dest. A rollback takes the sockets out of TCP repair and deletes CRIU's lock
                          before it thaws the task: the connections carry on
  --allow CHECK[,CHECK]   let the migration run although this preflight check refuses it; only
                          cpu-features may be overridden (see \`ferry check PID --to\`; README, Preflight)
  --tracker KIND          auto (default: soft-dirty when this kernel can, else uffd-wp, else hash),
                          soft-dirty, uffd-wp or hash
  --via PATH              run the migration in the source agent daemon on this Unix socket (its --socket,
                          e.g. /run/ferry/source.sock) instead of in this process
  --commit-patience DUR   how long an unanswered Commit (or a dest that stops answering the fill of a
                          lazy restore) is waited for before exit 3 (default 5m)
  --restore MODE          auto (default: lazy where the dest offers it, else eager), lazy (the dest
                          resumes the copy at once and pages its memory in; the original stays frozen
                          until every page is in) or eager (criu restores every page before the resume)
  --resume ID|all         finish a migration whose ferry migrate (or source agent) died, from its journal
                          under FERRY_STATE_DIR: killed at its commit, it asks the dest, then kills or
                          thaws the original; before it, it thaws the original and aborts the dest session
  --metrics HOST:PORT     serve the migration's Prometheus metrics at /metrics while it runs (one address,
                          not 0.0.0.0; port 0 picks one, printed on stderr). In-process only
  --pushgateway URL       at the end, committed or not, push the final figures to this Pushgateway (job
                          ferry_migrate; 5 s at most; a failed push is a warning). In-process only
  --json                  progress events and the summary as JSON lines on stdout
  -h, --help              this help

${tlsHelp('dest', false)}
  (In-process only: with --via the source agent dials the dest with its own certificate.)

Exit codes: 0 migrated; 1 failed and the task runs on the source; 2 refused, nothing touched;
3 the dest did not answer the commit (or, restoring lazily, stopped answering the fill): the task is
frozen here (the message names the --resume to run); or the frozen original was lost before the dest
held every page (ORIGINAL_LOST: kill the copy the message names on the dest, restart the task);
130 interrupted and rolled back.`;

export async function migrateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      to: { type: 'string' },
      'max-rounds': { type: 'string' },
      'max-downtime': { type: 'string' },
      'freeze-timeout': { type: 'string' },
      'restore-timeout': { type: 'string' },
      via: { type: 'string' },
      json: { type: 'boolean' },
      bandwidth: { type: 'string' },
      'on-no-converge': { type: 'string' },
      'no-precopy': { type: 'boolean' },
      tracker: { type: 'string' },
      resume: { type: 'string' },
      'commit-patience': { type: 'string' },
      restore: { type: 'string' },
      'post-copy': { type: 'string' },
      'file-locks': { type: 'string' },
      'tcp-established': { type: 'string' },
      compress: { type: 'string' },
      allow: { type: 'string', multiple: true },
      'page-channels': { type: 'string' },
      metrics: { type: 'string' },
      pushgateway: { type: 'string' },
      ...TLS_FLAGS,
    },
    true,
  );
  if (values.help) {
    console.log(MIGRATE_HELP);
    return EXIT.ok;
  }
  const metricsFlags = parseMigrateMetricsFlags(values);
  const metricsGiven = values.metrics !== undefined || values.pushgateway !== undefined;
  if (values.resume !== undefined) {
    if (metricsGiven) {
      throw new FerryError('BAD_ARGUMENT', { message: 'ferry migrate --resume takes no --metrics or --pushgateway', hint: 'Drop --metrics and --pushgateway: a resumed migration reports in its summary and journal only.' });
    }
    if (positionals.length > 0 || values.to !== undefined || values.via !== undefined) {
      throw new FerryError('BAD_ARGUMENT', { message: 'ferry migrate --resume takes a migration id (or all) and no PID, --to or --via', hint: 'Usage: ferry migrate --resume ID (the id is in the "started" line of the migration)' });
    }
    const environment = applyHostConfig();
    const security = transportSecurityFromFlags(values, ['client']);
    warnIfPlaintext(security);
    return resumeCommand(values.resume, security, values.json ?? false, msFlag('commit-patience', values['commit-patience']), environment);
  }
  if (positionals.length !== 1 || !/^\d+$/.test(positionals[0]!)) {
    throw new FerryError('BAD_ARGUMENT', { message: 'ferry migrate needs exactly one PID', hint: 'Usage: ferry migrate PID --to HOST:PORT (see --help)' });
  }
  if (!values.to) throw new FerryError('BAD_ARGUMENT', { message: 'ferry migrate needs --to HOST:PORT', hint: 'Name the dest agent: --to 10.0.0.2:7070' });
  // The flags as given: compiled once, where the migration runs (here, or in the source agent with --via).
  const options: MigrateOptions = {
    pid: Number(positionals[0]),
    to: values.to,
    maxRounds: intFlag('max-rounds', values['max-rounds']),
    maxDowntimeMs: msFlag('max-downtime', values['max-downtime']),
    freezeTimeoutMs: msFlag('freeze-timeout', values['freeze-timeout']),
    restoreTimeoutMs: msFlag('restore-timeout', values['restore-timeout']),
    bandwidthBytesPerSecond: rateFlag('bandwidth', values.bandwidth),
    onNoConverge: values['on-no-converge'] as NoConvergeAction | undefined,
    noPrecopy: values['no-precopy'],
    tracker: values.tracker,
    commitPatienceMs: msFlag('commit-patience', values['commit-patience']),
    restore: values.restore,
    postCopy: values['post-copy'],
    fileLocks: values['file-locks'],
    tcpEstablished: values['tcp-established'],
    compress: values.compress,
    allow: values.allow,
    pageChannels: intFlag('page-channels', values['page-channels']),
  };
  // Before the socket is looked at: a usage error, whatever the agent's state.
  if (values.via !== undefined && metricsGiven) {
    throw new FerryError('BAD_ARGUMENT', { message: '--metrics and --pushgateway apply to an in-process migration only', hint: "With --via the source agent's own --metrics serves the migration: drop --metrics and --pushgateway." });
  }
  const via = values.via === undefined ? undefined : sourceAgentSocket(values.via);
  const tlsGiven = Object.keys(TLS_FLAGS).some((f) => values[f as keyof typeof TLS_FLAGS] !== undefined);
  if (via && tlsGiven) {
    throw new FerryError('BAD_ARGUMENT', { message: 'the TLS flags apply to an in-process migration only', hint: 'With --via the source agent dials the dest with its own certificate: drop --tls-*, --allow-peer and --insecure.' });
  }
  // In this process: the host's config file's [paths] and [criu], as the source agent would use them.
  const opts = via ? undefined : compileMigrateOptions(options, applyHostConfig());
  // The CLI dials the dest itself: its certificate is a TLS client's.
  const security = via ? undefined : transportSecurityFromFlags(values, ['client']);
  if (security) warnIfPlaintext(security);
  const view = new ProgressView(process.stdout, values.json ?? false);
  const summary = via ? await migrateVia(via, toMigrateRequest(options), view) : await migrateHere(opts!, security!, view, metricsFlags);
  view.finish();
  if (values.json) console.log(JSON.stringify({ kind: 'summary', summary }));
  else console.log(formatSummary(summary));
  return EXIT.ok;
}

/** In this process; Ctrl-C (SIGINT/SIGTERM) rolls back before exiting. */
async function migrateHere(opts: CompiledMigrateOptions, security: TransportSecurity, view: ProgressView, metricsFlags: MigrateMetricsFlags): Promise<MigrationSummary> {
  // First: a bad FERRY_LOG_LEVEL / FERRY_LOG_FORMAT is refused before anything listens.
  const log = createLogger({ side: 'source' }, undefined, 'silent');
  const metrics = await startMigrateMetrics(metricsFlags, opts.maxDowntimeMs, (line) => console.error(line));
  const controller = new AbortController();
  const onSignal = (): void => controller.abort(new FerryError('CANCELLED', { side: 'source' }));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const ports = grpcPorts(security);
    const listeners = metrics ? [metrics.listener] : [];
    return await migrate(opts, { log, emit: (e) => view.event(e), signal: controller.signal, ports, listeners });
  } finally {
    await metrics?.finish();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Through a source agent daemon: the migration goes on there if this CLI goes away. */
async function migrateVia(socket: SourceAgentSocket, request: MigrateRequest, view: ProgressView): Promise<MigrationSummary> {
  const client = sourceClient<{ Migrate: (req: MigrateRequest) => grpc.ClientReadableStream<MigrationEventMessage> }>(socket);
  try {
    const stream = client.Migrate(request);
    let summary: MigrationSummary | undefined;
    let started = false;
    let migrationId: string | undefined;
    try {
      for await (const msg of stream as AsyncIterable<MigrationEventMessage>) {
        started = true;
        const e = fromEventMessage(msg);
        view.event(e);
        if (e.kind === 'started') migrationId = e.migrationId;
        if (e.kind === 'done') summary = e.summary;
      }
    } catch (e) {
      if (e instanceof FerryError) throw e;
      // Before the first event the call never reached the agent; after it, the agent went away mid-migration and
      // only its journal knows how far it got (the restarted agent finishes it).
      const fallback = started
        ? new FerryError('SOURCE_AGENT_LOST', {
            sourceState: 'unknown',
            detail: `the source agent on ${socket.path} went away during migration ${migrationId ?? '(not started)'}: ${(e as Error).message}; restarted, it finishes the migration (or: ferry migrate --resume ${migrationId ?? 'all'})`,
          })
        : connectionError(socket, e);
      throw fromServiceError(e, fallback);
    }
    if (!summary) throw new FerryError('INTERNAL', { message: 'the source agent ended the migration without a result' });
    return summary;
  } finally {
    client.close();
  }
}
