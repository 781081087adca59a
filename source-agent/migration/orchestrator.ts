/**
 * One migration, driven from the source. The whole state machine is here; each phase's work is in phases/.
 *
 *   negotiate -> prepare -> precopy -> freeze -> final-delta -> restore -> commit [-> fill] -> (migrated)
 *        \__________\__________\_________\____________\____________\_________\___-> rollback (failed)
 *
 * fill runs for a lazy restore only: the copy already runs; the original, still frozen, dies once the dest
 * has every page, or is thawed if the dest's fill failed (phases/fill.ts).
 *
 * Every step that changes something registers its undo on the rollback stack before the next step; any
 * failure runs them all (the original is thawed, the dest session removed) and reports the first cause with
 * the phase it happened in. From the commit on, the steps that could make a second copy are released by
 * handle (see phases/commit.ts). Every transition and every piece of progress is announced in one place
 * (MigrationAnnouncer): the caller's view, the logs and the metrics subscribe there.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { FerryError, asFerryError } from '../../shared/errors/ferry-error.js';
import { injectFault, type FaultPoint } from '../../shared/fault-injection.js';
import type { Logger } from '../../shared/logging/logger.js';
import type { Phase } from '../../shared/phases.js';
import { learnFixedCost } from '../cost-model.js';
import { MigrationAnnouncer, logEvents } from './announcer.js';
import type { EventSink, MigrationSummary } from './events.js';
import { drawEpoch, type MigrationContext } from './migration-context.js';
import type { CompiledMigrateOptions } from '../config/migrate-options.js';
import { commit } from './phases/commit.js';
import { fill, type Filled } from './phases/fill.js';
import { finalDelta } from './phases/final-delta.js';
import { freeze } from './phases/freeze.js';
import { negotiate, type Negotiated } from './phases/negotiate.js';
import { precopy } from './phases/precopy.js';
import { prepare } from './phases/prepare.js';
import { restore } from './phases/restore.js';
import { realPorts, type JournalPort, type MigrationPorts } from './ports.js';
import { RollbackStack } from './rollback-stack.js';
import { journaledTree } from './source-journal.js';

/** Before negotiate succeeded there is nothing a restart would have to finish. */
const NO_JOURNAL: JournalPort = { record: () => Promise.resolve(), saveFillManifests: () => Promise.resolve(), close: () => Promise.resolve() };

export interface MigrationDeps {
  log: Logger;
  /** The caller's view of the migration (the CLI's progress, the Source service's stream). */
  emit: EventSink;
  signal: AbortSignal;
  /** More subscribers to every event: the agent's metrics today, the journal later. */
  listeners?: readonly EventSink[];
  /** The world the migration acts on; tests pass fakes. */
  ports?: MigrationPorts;
}

/**
 * The legal moves forward. A failure in any phase leaves the machine in that phase (the report and the metrics
 * name it) and runs the rollback; 'rollback' itself is the phase of the undo calls, never entered here.
 */
const NEXT: Readonly<Record<Phase, Phase | undefined>> = {
  negotiate: 'prepare',
  prepare: 'precopy',
  precopy: 'freeze',
  freeze: 'final-delta',
  'final-delta': 'restore',
  restore: 'commit',
  commit: 'fill',
  fill: undefined,
  rollback: undefined,
};

export async function migrate(opts: CompiledMigrateOptions, deps: MigrationDeps): Promise<MigrationSummary> {
  const migrationId = randomUUID();
  const state: { phase: Phase; round: number | undefined } = { phase: 'negotiate', round: undefined };
  // Every line of this migration, whoever writes it (a phase, the tracker, the throttle, the page stream), says
  // where the machine is as it is written.
  const log = deps.log.child({ side: 'source', migrationId }).withContext(() => ({ phase: state.phase, round: state.round }));
  const ports = deps.ports ?? realPorts;
  const started = performance.now();
  const announcer = new MigrationAnnouncer(log);
  announcer.subscribe(logEvents(log));
  for (const listener of deps.listeners ?? []) announcer.subscribe(listener);
  announcer.subscribe(deps.emit);
  const ctx: MigrationContext = {
    migrationId,
    epoch: drawEpoch(),
    opts,
    host: ports.host,
    log,
    signal: deps.signal,
    rollback: new RollbackStack(),
    announcer,
    journal: NO_JOURNAL,
    get phase() {
      return state.phase;
    },
    get round() {
      return state.round;
    },
    set round(r) {
      state.round = r;
    },
    sourceState: 'running',
  };
  const enter = (next: Phase): void => {
    if (NEXT[state.phase] !== next) throw new FerryError('INTERNAL', { phase: state.phase, side: 'source', detail: `illegal transition ${state.phase} -> ${next}` });
    state.phase = next;
    state.round = undefined;
    // From the commit on the copy runs: a Ctrl-C cannot undo it; the fill's own loop says what --resume finishes.
    if (next !== 'fill') deps.signal.throwIfAborted();
    announcer.announce({ kind: 'phase', phase: next });
    injectFault(`source.${next}` as FaultPoint);
  };
  let negotiatedWith: Negotiated | undefined;
  let imagesDir: string | undefined;

  try {
    const negotiated = await negotiate(ctx, ports);
    negotiatedWith = negotiated;
    const { target } = negotiated;
    ctx.journal = await ports.beginJournal(opts.journalDir, migrationId, { pid: opts.pid, to: opts.to, epoch: ctx.epoch, tree: journaledTree(target.tasks.map((t) => t.hostPid)) });
    enter('prepare');
    const prepared = await prepare(ctx, negotiated);
    enter('precopy');
    const precopied = await precopy(ctx, negotiated, prepared);
    enter('freeze');
    const frozen = await freeze(ctx, negotiated, (dir) => (imagesDir = dir));
    enter('final-delta');
    const sent = await finalDelta(ctx, negotiated, prepared, precopied, frozen);
    enter('restore');
    const restored = await restore(ctx, negotiated, frozen, sent);
    await ctx.journal.record('restored', { restoredPid: restored.restoredPid, restore: negotiated.restore.mode });
    enter('commit');
    const committed = await commit(ctx, negotiated, prepared, frozen);
    let filled: Filled | undefined;
    if (negotiated.restore.mode === 'lazy') {
      enter('fill');
      filled = await fill(ctx, negotiated, restored, committed, frozen);
    }

    const { rounds } = precopied;
    const summary: MigrationSummary = {
      migrationId,
      pid: opts.pid,
      dest: opts.to,
      tracker: prepared.tracker.name,
      tasks: frozen.tree.length,
      rounds,
      decision: precopied.decision,
      presentPages: rounds[0]?.presentPages ?? 0,
      pagesSent: prepared.stream.pagesSent,
      pageBytesSent: prepared.stream.bytesSent,
      finalDeltaPages: sent.delta.sentPages,
      dumpPages: sent.delta.dumpPages,
      imageBytesSent: sent.images.bytes,
      totalMs: performance.now() - started,
      downtimeMs: committed.downtimeMs,
      phases: { dumpMs: frozen.dumpMs, finalDeltaMs: sent.finalDeltaMs, rebuildMs: restored.rebuildMs, restoreMs: restored.restoreMs, commitMs: committed.commitMs },
      restoredPid: committed.restoredPid,
      throttle: precopied.throttle,
      dumpKind: frozen.dumpKind,
      finalDeltaTaskPages: sent.delta.taskPages,
      restoreMode: negotiated.restore.mode,
      fillMs: filled?.fillMs ?? 0,
      fillFaults: Number(filled?.done.faults ?? 0),
      fillFaultsWaited: Number(filled?.done.faultsWaited ?? 0),
      replacedPages: filled?.replacedPages ?? 0,
      confirmedPages: filled?.confirmedPages ?? 0,
      filledPages: Number(filled?.done.filledPages ?? 0),
      pagerFillUs: Number(filled?.done.fillUs ?? 0),
      postCopy: opts.postCopy,
      postCopied: precopied.postCopy,
      // By phase, as QEMU reports them: while the task ran, while it was frozen, after the copy resumed.
      precopyBytes: rounds.reduce((n, r) => n + r.bytesSent, 0),
      downtimeBytes: sent.delta.sentBytes + sent.images.bytes,
      postcopyBytes: filled?.dataBytes ?? 0,
      remotePages: sent.delta.remotePages,
      faultWaitP50Us: Number(filled?.done.waitP50Us ?? 0),
      faultWaitP99Us: Number(filled?.done.waitP99Us ?? 0),
      originalExitMs: (filled?.originalExit ?? committed.originalExit)?.exitMs ?? 0,
      originalLeft: (filled?.originalExit ?? committed.originalExit)?.left ?? [],
      compress: opts.compress,
      pageCodec: negotiated.pageCodecs.includes('zstd') && opts.compress !== 'off' ? 'zstd' : 'none',
      // A stream that encoded nothing through the compression (none was given it) sent its bytes as they were.
      pageWireBytes: prepared.compression.rawBytes > 0 ? prepared.compression.wireBytes : prepared.stream.bytesSent,
    };
    await learnFixedCost(
      opts.costModelPath,
      opts.to,
      { rounds, residentBytes: summary.dumpPages * ctx.host.pageSize, vmas: target.vmas, restore: negotiated.restore.mode, downtimeMs: summary.downtimeMs, finalDeltaBytes: sent.delta.sentBytes },
      log,
    );
    await ctx.journal.record('done', { outcome: 'migrated' }).catch((e: unknown) => log.error('journal write failed', { err: e }));
    announcer.announce({ kind: 'done', summary });
    await ctx.rollback.run(); // what is left are cleanups (tracker)
    return summary;
  } catch (e) {
    const phase = state.phase;
    const first =
      deps.signal.aborted && !(e instanceof FerryError && e.key !== 'CANCELLED')
        ? new FerryError('CANCELLED', { phase, side: 'source', cause: e })
        : asFerryError(e, 'INTERNAL', { phase, side: 'source' });
    first.phase ??= phase;
    first.side ??= 'source';
    const errors = await ctx.rollback.run();
    first.rollbackErrors.push(...errors);
    // Only a failed step on this side (the thaw) leaves the task's state unknown.
    // A task that exited is gone whatever the rollback did.
    first.sourceState = errors.some((x) => x.side === 'source')
      ? 'unknown'
      : first.key === 'COMMIT_UNCONFIRMED'
        ? 'frozen'
        : first.sourceState === 'gone'
          ? 'gone'
          : ctx.sourceState;
    // Rolled back, unless the original's fate is still open: then the journal says what --resume must finish.
    if (first.sourceState !== 'frozen' && first.sourceState !== 'unknown') {
      const outcome = first.key === 'ORIGINAL_LOST' ? 'original-lost' : 'rolled-back';
      await ctx.journal.record('done', { outcome, code: first.code }).catch((e: unknown) => log.error('journal write failed', { err: e }));
    }
    announcer.announce({ kind: 'failed', phase, error: first.toJSON() });
    throw first;
  } finally {
    await ctx.journal.close();
    negotiatedWith?.dest.close();
    if (imagesDir) await rm(imagesDir, { recursive: true, force: true });
    negotiatedWith?.taskLock.release(); // last: the task is another migration's to take only once this one is over
  }
}
