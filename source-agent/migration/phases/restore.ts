/**
 * restore: the dest rebuilds the images from its page store and restores the tree, stopped.
 * Eager: beside it, when the tracker's word decided what was sent, every dumped page is read back and compared
 * (a missed write rolls back). Lazy: that check moves out of the freeze, into the fill after the resume (the
 * pages taken on the tracker's word are marked unconfirmed in the manifests, and the dest's pager serves none
 * of them before the source confirmed it); the manifests are kept beside the journal, on disk before the
 * Commit can be sent, so that a resolver can run the fill after this agent died.
 */
import { COMMIT_LEASE_MS, fillUnresolvedError, originalLostError } from '../commit-outcome.js';
import { fillUntilDone, whileOriginal, type FillOutcome } from '../../pages/confirm-pages.js';
import type { FillManifest } from '../fill-manifests.js';
import type { MigrationContext } from '../migration-context.js';
import { verifyDumpedPages } from '../../pages/final-delta-pages.js';
import type { DeltaSent } from './final-delta.js';
import type { Frozen } from './freeze.js';
import type { Negotiated } from './negotiate.js';

/** The fill of a lazy restore, opened beside the Restore (wants only); its sweep starts at the Commit's answer. */
export interface EarlyFill {
  outcome: Promise<FillOutcome>;
  startSweep(): void;
  /** The copy the fill's error messages name, once the dest restored it. */
  restoredPid: number;
}

export interface Restored {
  restoredPid: number;
  rebuildMs: number;
  restoreMs: number;
  /** Lazy: the manifests the fill works from (task manifests only: the pager fills task memory). */
  fillManifests: FillManifest[];
  /** Lazy: pages the dest's pager fills after the resume. */
  pagesLazy: number;
  /** Lazy: the fill, already answering what the dest's pager asks for. */
  fill?: EarlyFill;
}

export async function restore(ctx: MigrationContext, n: Negotiated, f: Frozen, d: DeltaSent): Promise<Restored> {
  const { opts } = ctx;
  const lazy = n.restore.mode === 'lazy';
  const fillManifests = lazy ? fillManifestsOf(d, f) : [];
  const fill = lazy ? openFill(ctx, n, f, fillManifests, d.postCopy) : undefined;
  const restoring = n.dest.restore(
    {
      migrationId: ctx.migrationId,
      epoch: ctx.epoch,
      pages: d.delta.manifests,
      timeoutMs: opts.restoreTimeoutMs,
      commitLeaseMs: COMMIT_LEASE_MS,
      mode: lazy ? 'RESTORE_MODE_LAZY' : 'RESTORE_MODE_EAGER',
      criuFeatures: f.criuFeatures,
      mountNs: f.mountNs ? { externalMounts: f.mountNs.externalMounts } : null,
      taskNetwork: f.taskNetwork ? { ...f.taskNetwork, addresses: [...f.taskNetwork.addresses] } : null,
    },
    ctx.signal,
  );
  // Lazy: the manifests go to disk beside the restore (not before it: the write is not the freeze's to wait
  // for), and the phase ends only once they are there: a Commit is never sent before.
  const checking = lazy
    ? ctx.journal.saveFillManifests(fillManifests, ctx.host.pageSize).then(() => 0)
    : d.delta.trustedPages > 0
      ? verifyDumpedPages(f.imagesDir, d.delta.manifests, ctx.host.pageSize, d.readTask)
      : Promise.resolve(0);
  const [restored, checked] = await Promise.allSettled([restoring, checking]);
  // A missed write outranks whatever the restore did: the rollback removes the dest's copy either way.
  if (checked.status === 'rejected') throw checked.reason;
  if (restored.status === 'rejected') throw restored.reason;
  if (checked.value > 0) ctx.log.info('tracker checked', { pages: checked.value, trustedPages: d.delta.trustedPages });
  const r = restored.value;
  if (fill) fill.restoredPid = r.restoredPid;
  return { restoredPid: r.restoredPid, rebuildMs: Number(r.rebuildUs) / 1000, restoreMs: Number(r.restoreUs) / 1000, fillManifests, pagesLazy: Number(r.pagesLazy ?? 0), fill };
}

/**
 * Opens the fill beside the Restore: criu's restorer may fault on a lazy page the tracker vouched for, and the
 * pager serves it only once this side confirmed it from the frozen original. Its own signal: a Ctrl-C after the
 * resume must not cut it short (phases/fill.ts); a rollback before the resume stops it.
 */
function openFill(ctx: MigrationContext, n: Negotiated, f: Frozen, manifests: FillManifest[], postCopy: boolean): EarlyFill {
  // The frozen tree's processes as they are now: a pid read later must still be the same process.
  const started = new Map(f.tree.map((t) => [t.hostPid, ctx.host.startTime(t.hostPid)]));
  const isOriginal = (pid: number): boolean => started.get(pid) !== undefined && ctx.host.startTime(pid) === started.get(pid);
  const stop = new AbortController();
  let startSweep!: () => void;
  const sweepAfter = new Promise<void>((ok) => (startSweep = ok));
  const target = { migrationId: ctx.migrationId, epoch: ctx.epoch, rootPid: n.target.rootPid, to: ctx.opts.to, restoredPid: 0 };
  const early: EarlyFill = {
    startSweep: () => startSweep(),
    restoredPid: 0,
    outcome: fillUntilDone(n.dest, {
      migrationId: ctx.migrationId,
      epoch: ctx.epoch,
      manifests,
      pageSize: ctx.host.pageSize,
      readPages: whileOriginal((pid, first, count) => ctx.host.readPages(pid, first, count), isOriginal),
      log: ctx.log,
      signal: stop.signal,
      sweepAfter,
      freshSession: true,
      postCopy,
      patienceMs: ctx.opts.commitPatienceMs,
      unanswered: (cause) => fillUnresolvedError({ ...target, restoredPid: early.restoredPid }, cause),
      lost: (cause) => originalLostError({ ...target, restoredPid: early.restoredPid }, cause),
    }),
  };
  // Observed by the fill phase; a rollback before it ends the call and nobody waits for it.
  early.outcome.catch(() => undefined);
  ctx.rollback.push('stop the fill', () => stop.abort());
  return early;
}

function fillManifestsOf(d: DeltaSent, f: Frozen): FillManifest[] {
  const hostPidOf = new Map(f.tree.map((t) => [t.nsPid, t.hostPid]));
  return d.delta.manifests.flatMap((man, i) => {
    const hostPid = hostPidOf.get(man.task);
    // Non-task pagemaps (shared memory) are restored by criu from their images: nothing of theirs is filled.
    if (hostPid === undefined) return [];
    return [{ task: man.task, hostPid, runs: d.delta.pageRuns[i]!, hashes: man.hashes, unconfirmed: man.unconfirmed ?? Buffer.alloc(0), remote: man.remote ?? Buffer.alloc(0) }];
  });
}
