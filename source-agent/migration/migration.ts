/**
 * One migration, driven from the source: negotiate -> prepare -> precopy -> freeze -> final-delta -> restore
 * -> commit. Every step that changes something registers its undo first; any failure before the commit runs
 * them all (the original is thawed, the dest session removed) and reports the first cause.
 *
 * Commit order, chosen so that at every instant at most one copy can run and a crash between two steps
 * leaves one copy that runs or one that a restart can resume:
 *   dest: restored, stopped -> source: disarm the freeze lease -> dest: Commit (resumes the copy)
 *   -> source: kill the frozen original.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, asFerryError } from '../../shared/errors/ferry-error.js';
import { injectFault, type FaultPoint } from '../../shared/fault-injection.js';
import type { Logger } from '../../shared/logging/logger.js';
import type { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import type { Phase, SourceState } from '../../shared/phases.js';
import { DEFAULT_THROTTLE, decideAfterRound, transferRate, type ConvergencePolicy, type RoundRecord } from '../../shared/policy/convergence.js';
import { fixedCost, loadCostSamples, recordCostSample } from '../cost-model.js';
import { TokenBucket } from '../token-bucket.js';
import type { DirtyTracker, TrackedTask } from '../trackers/tracker.js';
import type { EventSink, MigrationSummary, PhaseTimes, RoundSummary } from './events.js';
import { sendFinalDelta, verifyDumpedPages } from './final-delta.js';
import type { TargetTree } from './inspect-target.js';
import { checkPeers } from './check-peers.js';
import type { CompiledMigrateOptions } from './options.js';
import { RollbackStack } from './rollback-stack.js';
import { realPorts, type DestPort, type MigrationPorts, type PageStream, type SourceHost, type ThrottlePort } from './ports.js';
import type { SourceMetrics } from '../source-metrics.js';

export interface MigrationDeps {
  log: Logger;
  emit: EventSink;
  signal: AbortSignal;
  metrics?: SourceMetrics | undefined;
  /** The world the migration acts on; tests pass fakes. */
  ports?: MigrationPorts;
}

const EPOCH = '1';
const COMMIT_ATTEMPTS = 5;

export async function migrate(opts: CompiledMigrateOptions, deps: MigrationDeps): Promise<MigrationSummary> {
  const migrationId = randomUUID();
  const log = deps.log.child({ side: 'source', migrationId });
  const ports = deps.ports ?? realPorts;
  const host = ports.host;
  const started = performance.now();
  const rollback = new RollbackStack();
  let phase: Phase = 'negotiate';
  let sourceState: SourceState = 'running';
  let client: DestPort | undefined;
  let imagesDir: string | undefined;
  let frozenAt: number | undefined;
  const enter = (p: Phase): void => {
    phase = p;
    deps.signal.throwIfAborted();
    log.info('phase', { phase: p });
    deps.emit({ kind: 'phase', phase: p });
    injectFault(`source.${p}` as FaultPoint);
  };

  try {
    // negotiate: everything here only reads; a refusal touches nothing.
    const target = host.inspectTarget(opts.pid);
    await host.requireCriu();
    const local = await host.peerInfo();
    client = await ports.connectDest(opts.to, opts.connectTimeoutMs, deps.signal);
    const negotiated = await client.negotiate({ source: local }, deps.signal);
    const protocolVersion = checkPeers(local, negotiated);
    const chosen = await host.chooseTracker(opts.tracker);
    log.info('tracker', { tracker: chosen.name, note: chosen.note });
    deps.emit({ kind: 'started', migrationId, pid: opts.pid, dest: opts.to, tasks: target.tasks.length, tracker: chosen.name, trackerNote: chosen.note });

    enter('prepare');
    const tracker = host.createTracker(chosen.name);
    rollback.push('close the tracker', () => tracker.close());
    const prepareRequest = {
      migrationId,
      epoch: EPOCH,
      protocolVersion,
      requiredPids: target.pidNamespaceRoot ? [] : target.tasks.map((t) => t.hostPid),
      expectedBytes: String(estimateBytes(target)),
      taskName: target.name,
    };
    await client.prepare(prepareRequest, deps.signal);
    const c = client;
    // A dest that is gone cannot be told; its commit lease and its start-up cleanup remove the session.
    rollback.push(
      'abort the dest session',
      async () => {
        await c.abort({ migrationId, epoch: EPOCH, reason: `rollback after ${phase}` });
      },
      'dest',
    );
    const sender = client.openPageStream({
      migrationId,
      epoch: EPOCH,
      windowBytes: opts.windowBytes,
      signal: deps.signal,
      bandwidth: opts.bandwidthBytesPerSecond ? new TokenBucket(opts.bandwidthBytesPerSecond) : undefined,
    });
    rollback.push('drop the page stream', () => sender.cancel(), 'dest');

    enter('precopy');
    const held = new Map<number, PageHashIndex>();
    const precopied = opts.noPrecopy
      ? { rounds: [], decision: 'pre-copy off (stop-and-copy): freezing at once', throttle: undefined }
      : await precopy(host, { target, dest: opts.to }, tracker, held, sender, opts, deps);
    const { rounds, decision } = precopied;

    enter('freeze');
    sender.phase = 'freeze';
    const frozenTree = host.tree(target.rootPid);
    const lease = host.armFreezeLease(opts.freezeTimeoutMs, target.rootPid, frozenTree.map((t) => t.hostPid));
    rollback.push('thaw the original', async () => {
      await lease.release();
      host.signalTree(target.rootPid, 'SIGCONT');
      sourceState = 'running';
      if (frozenAt !== undefined) log.info('original thawed', { frozenMs: Math.round(performance.now() - frozenAt) });
    });
    await mkdir(opts.imagesRoot, { recursive: true });
    imagesDir = await mkdtemp(join(opts.imagesRoot, `${migrationId}-`));
    const logsDir = join(opts.imagesRoot, 'logs');
    await mkdir(logsDir, { recursive: true });
    frozenAt = performance.now();
    sourceState = 'frozen';
    const dumpKind = await host.dump({ pid: target.rootPid, imagesDir, logFile: join(logsDir, `${migrationId}-dump.log`), timeoutMs: opts.freezeTimeoutMs });
    const phases: PhaseTimes = { dumpMs: performance.now() - frozenAt };

    enter('final-delta');
    sender.phase = 'final-delta';
    const t0 = performance.now();
    const finalRound = rounds.length;
    const hostPidOf = new Map(frozenTree.map((t) => [t.nsPid, t.hostPid]));
    const readTask = (task: number, first: number, count: number): ReturnType<SourceHost['readPages']> => {
      const pid = hostPidOf.get(task);
      if (pid === undefined) throw new FerryError('TASK_TREE_CHANGING', { phase: 'final-delta', side: 'source', detail: `the dump has task ${task}, which was not in the tree at the freeze` });
      return host.readPages(pid, first, count);
    };
    // With exact write tracking only the written pages are read now; all of them are checked beside the restore.
    const changed = dumpKind === 'lazy' ? tracker.changedSinceLastRound?.(frozenTree.map((t) => ({ hostPid: t.hostPid, key: t.nsPid }))) : undefined;
    const tScan = performance.now();
    const delta = await sendFinalDelta(imagesDir, held, (task, batch) => sender.send(task, finalRound, batch), host.pageSize, readTask, changed);
    const tPages = performance.now();
    // The images go up while the page stream drains; Restore waits for both (the dest must hold every page).
    const [, uploaded] = await Promise.all([sender.finish(), client.uploadImages(imagesDir, { migrationId, epoch: EPOCH }, deps.signal)]);
    log.debug('final delta steps', { scanMs: Math.round(tScan - t0), pagesMs: Math.round(tPages - tScan), finishMs: Math.round(performance.now() - tPages) });
    phases.finalDeltaMs = performance.now() - t0;
    log.info('final delta sent', { dumpKind, taskPages: delta.taskPages, dumpPages: delta.dumpPages, sentPages: delta.sentPages, images: uploaded.files, imageBytes: uploaded.bytes });

    enter('restore');
    const restoring = client.restore(
      { migrationId, epoch: EPOCH, pages: delta.manifests, timeoutMs: opts.restoreTimeoutMs, commitLeaseMs: opts.freezeTimeoutMs },
      deps.signal,
    );
    const checking = delta.trustedPages > 0 ? verifyDumpedPages(imagesDir, delta.manifests, host.pageSize, readTask) : Promise.resolve(0);
    const [restoredResult, checked] = await Promise.allSettled([restoring, checking]);
    // A missed write outranks whatever the restore did: the rollback removes the dest's copy either way.
    if (checked.status === 'rejected') throw checked.reason;
    if (restoredResult.status === 'rejected') throw restoredResult.reason;
    const restored = restoredResult.value;
    if (checked.value > 0) log.info('tracker checked', { pages: checked.value, trustedPages: delta.trustedPages });
    phases.rebuildMs = Number(restored.rebuildUs) / 1000;
    phases.restoreMs = Number(restored.restoreUs) / 1000;

    enter('commit');
    const t1 = performance.now();
    await lease.disarm(); // from here the guard never thaws; the decision is ours
    rollback.drop('drop the page stream');
    let committed: { restoredPid: number };
    try {
      committed = await commitWithRetry(client, migrationId, log);
    } catch (e) {
      if (e instanceof FerryError && e.key === 'COMMIT_UNCONFIRMED') {
        // The dest may be running the copy: resuming the original could make two. It stays frozen.
        rollback.drop('thaw the original');
        rollback.drop('abort the dest session');
      }
      throw e;
    }
    // The copy runs on the dest: nothing may resume the original any more.
    rollback.drop('thaw the original');
    rollback.drop('abort the dest session');
    const downtimeMs = performance.now() - frozenAt;
    phases.commitMs = performance.now() - t1;
    host.signalTree(target.rootPid, 'SIGKILL');
    sourceState = 'gone';

    const summary: MigrationSummary = {
      migrationId,
      pid: opts.pid,
      dest: opts.to,
      tracker: tracker.name,
      tasks: frozenTree.length,
      rounds,
      decision,
      presentPages: rounds[0]?.presentPages ?? 0,
      pagesSent: sender.pagesSent,
      pageBytesSent: sender.bytesSent,
      finalDeltaPages: delta.sentPages,
      dumpPages: delta.dumpPages,
      imageBytesSent: uploaded.bytes,
      totalMs: performance.now() - started,
      downtimeMs,
      phases,
      restoredPid: committed.restoredPid,
      throttle: precopied.throttle,
      dumpKind,
      finalDeltaTaskPages: delta.taskPages,
    };
    await recordFixedCost(opts.to, summary, rounds, delta.sentBytes, log);
    deps.metrics?.recordSuccess(summary);
    log.info('migrated', { ...summary, rounds: rounds.length });
    deps.emit({ kind: 'done', summary });
    await rollback.run(); // what is left are cleanups (tracker)
    return summary;
  } catch (e) {
    const first = deps.signal.aborted && !(e instanceof FerryError && e.key !== 'CANCELLED')
      ? new FerryError('CANCELLED', { phase, side: 'source', cause: e })
      : asFerryError(e, 'INTERNAL', { phase, side: 'source' });
    first.phase ??= phase;
    first.side ??= 'source';
    const errors = await rollback.run();
    first.rollbackErrors.push(...errors);
    // Only a failed step on this side (the thaw) leaves the task's state unknown.
    first.sourceState = errors.some((x) => x.side === 'source') ? 'unknown' : first.key === 'COMMIT_UNCONFIRMED' ? 'frozen' : sourceState;
    log.error('migration failed', { phase, err: first, rollbackErrors: errors.map((x) => x.message), sourceState: first.sourceState });
    deps.metrics?.recordFailure(phase);
    deps.emit({ kind: 'failed', error: first.toJSON() });
    throw first;
  } finally {
    client?.close();
    if (imagesDir) await rm(imagesDir, { recursive: true, force: true });
  }
}

function estimateBytes(target: TargetTree): number {
  return target.residentBytes;
}

/** Teaches the cost model: this freeze's cost without the transfer of the final delta's pages. */
async function recordFixedCost(dest: string, s: MigrationSummary, rounds: RoundSummary[], deltaBytes: number, log: Logger): Promise<void> {
  const rate = transferRate(rounds.map((r) => ({ ...r, transferMs: r.transferMs })));
  const transferMs = rate ? (deltaBytes * 1000) / rate : 0;
  try {
    await recordCostSample(dest, { residentBytes: s.dumpPages * 4096, fixedMs: Math.max(0, s.downtimeMs - transferMs), at: new Date().toISOString() });
  } catch (e) {
    log.warn('could not record the cost model sample', { err: e }); // the migration itself succeeded
  }
}

interface PrecopyResult {
  rounds: RoundSummary[];
  decision: string;
  throttle: { method: string; maxPercent: number } | undefined;
}

/**
 * precopy: rounds while the task runs, until the policy says freeze (or abort). Auto-converge throttling
 * starts here and is always released before this returns or throws: the freeze must find the task unthrottled.
 */
async function precopy(
  host: SourceHost,
  migration: { target: TargetTree; dest: string },
  tracker: DirtyTracker,
  held: Map<number, PageHashIndex>,
  sender: PageStream,
  opts: CompiledMigrateOptions,
  deps: MigrationDeps,
): Promise<PrecopyResult> {
  const history: RoundRecord[] = [];
  const rounds: RoundSummary[] = [];
  const samples = await loadCostSamples(migration.dest);
  const policy: ConvergencePolicy = {
    maxRounds: opts.maxRounds,
    maxDowntimeMs: opts.maxDowntimeMs,
    floorPages: opts.floorPages,
    pageSize: host.pageSize,
    onNoConverge: opts.onNoConverge,
    ...DEFAULT_THROTTLE,
  };
  let throttle: ThrottlePort | undefined;
  let maxThrottle = 0;
  let readMs = 0;
  let readBytes = 0;
  try {
    for (let round = 0; ; round++) {
      deps.signal.throwIfAborted();
      const tasks: TrackedTask[] = host.tree(migration.target.rootPid).map((t) => ({ hostPid: t.hostPid, key: t.nsPid }));
      if (tasks.length === 0) throw new FerryError('TASK_EXITED', { phase: 'precopy', side: 'source', sourceState: 'gone' });
      const t0 = performance.now();
      const stats = await tracker.round(tasks, held, (task, batch) => sender.send(task, round, batch), deps.signal);
      await sender.flush(); // the round ends when the dest holds it: its time includes the transfer
      const durationMs = performance.now() - t0;
      readMs += stats.readMs;
      readBytes += stats.bytesRead;
      const summary: RoundSummary = {
        round,
        presentPages: stats.presentPages,
        dirtyPages: stats.dirtyPages,
        zeroPages: stats.zeroPages,
        bytesSent: stats.bytesSent,
        bytesRead: stats.bytesRead,
        durationMs,
        transferMs: Math.max(1, durationMs - stats.readMs),
        throttlePercent: throttle?.percent ?? 0,
      };
      rounds.push(summary);
      history.push(summary);
      deps.metrics?.recordRound(summary);
      deps.emit({ kind: 'round', round: summary, pagesSent: sender.pagesSent, bytesSent: sender.bytesSent, rateBytesPerSecond: transferRate(history) ?? 0 });

      const residentBytes = stats.presentPages * host.pageSize;
      const cost = fixedCost(samples, residentBytes, {
        readBytesPerSecond: readMs > 0 ? (readBytes * 1000) / readMs : undefined,
        storeBytesPerSecond: sender.storeMicros > 0 ? (sender.storedBytes * 1e6) / sender.storeMicros : undefined,
      });
      const decision = decideAfterRound({ history, fixedCost: cost, throttlePercent: throttle?.percent ?? 0, residentBytes }, policy);
      deps.emit({
        kind: 'decision',
        action: decision.action,
        rule: decision.rule,
        message: decision.reason,
        expectedDowntimeMs: decision.expectedDowntimeMs,
        dirtyRateBytesPerSecond: decision.dirtyRateBytesPerSecond,
        transferRateBytesPerSecond: decision.transferRateBytesPerSecond,
        fixedCostMs: cost.ms,
        throttlePercent: decision.throttlePercent,
      });
      deps.metrics?.recordDecision(decision, stats.dirtyPages * host.pageSize);
      deps.log.info('round done', { round, ...stats, durationMs: Math.round(durationMs), decision: decision.reason });
      switch (decision.action) {
        case 'continue':
          break;
        case 'throttle':
          throttle ??= await host.createThrottle(migration.target.rootPid);
          await throttle.set(decision.throttlePercent);
          maxThrottle = Math.max(maxThrottle, decision.throttlePercent);
          break;
        case 'abort':
          throw new FerryError('PRECOPY_NOT_CONVERGING', { phase: 'precopy', side: 'source', sourceState: 'running', detail: decision.reason });
        case 'freeze':
          return { rounds, decision: decision.reason, throttle: throttle ? { method: throttle.method, maxPercent: maxThrottle } : undefined };
      }
    }
  } finally {
    await throttle?.release();
  }
}

/**
 * Commit is idempotent on the dest, so an unanswered Commit is retried. If it stays unanswered the outcome is
 * unknown: the original stays frozen (never killed, never thawed) and the operator is told to look.
 */
async function commitWithRetry(client: DestPort, migrationId: string, log: Logger): Promise<{ restoredPid: number }> {
  let last: unknown;
  for (let attempt = 1; attempt <= COMMIT_ATTEMPTS; attempt++) {
    try {
      return await client.commit({ migrationId, epoch: EPOCH });
    } catch (e) {
      if (e instanceof FerryError && e.key === 'COMMIT_REJECTED') throw e; // the dest refused: safe to thaw
      last = e;
      log.warn('commit unanswered, retrying', { attempt, err: e });
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
  throw new FerryError('COMMIT_UNCONFIRMED', { phase: 'commit', side: 'source', sourceState: 'frozen', cause: last });
}
