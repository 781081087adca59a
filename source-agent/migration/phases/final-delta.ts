/**
 * final-delta: with the task stopped, the dumped pages the dest lacks (with exact write tracking, only the
 * pages written since the last round are read), then the non-page images; Restore waits for both.
 */
import { FerryError } from '../../../shared/errors/ferry-error.js';
import { faultArmed } from '../../../shared/fault-injection.js';
import type { PageRuns } from '../../../shared/kernel/pagemap.js';
import { sendFinalDelta, type FinalDeltaResult, type TaskPageReader } from '../../pages/final-delta-pages.js';
import type { MigrationContext } from '../migration-context.js';
import type { Frozen } from './freeze.js';
import type { Negotiated } from './negotiate.js';
import type { Prepared } from './prepare.js';
import type { Precopied } from './precopy.js';

export interface DeltaSent {
  delta: FinalDeltaResult;
  images: { files: number; bytes: number };
  /** Reads pages of the frozen tree by the task keys the images use (the check beside the restore too). */
  readTask: TaskPageReader;
  finalDeltaMs: number;
  /** Post-copy: the task's lazy pages were not read; the fill sends what differs or is remote. */
  postCopy: boolean;
}

/**
 * The damage point: the tracker misses every write since the last round (some of those pages were read by that
 * round after their write, so only all of them makes sure that some held page is stale).
 */
function missWrites(changed: Map<number, PageRuns>, log: MigrationContext['log']): void {
  for (const [task, runs] of changed) {
    const pages = runs.counts.reduce((n, c) => n + c, 0);
    runs.starts.length = 0;
    runs.counts.length = 0;
    log.warn('fault injection: the tracker misses the writes since the last round', { task, pages });
  }
}

export async function finalDelta(ctx: MigrationContext, n: Negotiated, p: Prepared, pre: Precopied, f: Frozen): Promise<DeltaSent> {
  const { host, log } = ctx;
  const t0 = performance.now();
  const hostPidOf = new Map(f.tree.map((t) => [t.nsPid, t.hostPid]));
  const readTask: TaskPageReader = (task, first, count) => {
    const pid = hostPidOf.get(task);
    if (pid === undefined) throw new FerryError('TASK_TREE_CHANGING', { phase: 'final-delta', side: 'source', detail: `the dump has task ${task}, which was not in the tree at the freeze` });
    return host.readPages(pid, first, count);
  };
  // With exact write tracking only the written pages are read now; all of them are checked beside the restore.
  // Post-copy reads none and trusts no tracker: its scan of the frozen tree would only lengthen the freeze.
  const changed = f.dumpKind === 'lazy' && !pre.postCopy ? p.tracker.changedSinceLastRound?.(f.tree.map((t) => ({ hostPid: t.hostPid, key: t.nsPid }))) : undefined;
  if (changed && faultArmed('source.tracker-misses-page')) missWrites(changed, log);
  // A plain dump has every page in its images: they are all sent now, and post-copy is a lazy restore only.
  if (pre.postCopy && f.dumpKind === 'full') log.warn('post-copy with a plain dump (FERRY_DUMP=full, or no userfaultfd here): every page goes inside the freeze');
  const tScan = performance.now();
  const round = pre.rounds.length; // the final delta's batches count as the round after the last one
  const delta = await sendFinalDelta(f.imagesDir, pre.held, (task, batch) => p.stream.send(task, round, batch), host.pageSize, readTask, changed, pre.postCopy ? 'postcopy' : n.restore.mode);
  const tPages = performance.now();
  // The images go up while the page stream drains; Restore waits for both (the dest must hold every page).
  const [, images] = await Promise.all([p.stream.finish(), n.dest.uploadImages(f.imagesDir, { migrationId: ctx.migrationId, epoch: ctx.epoch }, ctx.signal)]);
  log.debug('final delta steps', { scanMs: Math.round(tScan - t0), pagesMs: Math.round(tPages - tScan), finishMs: Math.round(performance.now() - tPages) });
  log.info('final delta sent', { dumpKind: f.dumpKind, postCopy: pre.postCopy, remotePages: delta.remotePages, taskPages: delta.taskPages, dumpPages: delta.dumpPages, sentPages: delta.sentPages, images: images.files, imageBytes: images.bytes });
  return { delta, images, readTask, finalDeltaMs: performance.now() - t0, postCopy: pre.postCopy };
}
