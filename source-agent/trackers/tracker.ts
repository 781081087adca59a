/**
 * A dirty-page tracker finds, each round, the pages the dest must receive: round 0 every present page, later
 * rounds the pages written since. It reads them and runs them through the page pipeline; what the dest holds is
 * recorded in `held` (page -> hash), which the final delta compares the dump against.
 */
import { FerryError, SystemCallError, isFerryError } from '../../shared/errors/ferry-error.js';
import type { PageRuns } from '../../shared/kernel/pagemap.js';
import type { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import type { BatchSink, PipelineStats } from '../pages/page-pipeline.js';

export type TrackerName = 'hash' | 'uffd-wp' | 'soft-dirty';
/** What the operator asks for: `auto` takes the best this kernel can do. */
export type TrackerChoice = TrackerName | 'auto';

export interface TrackedTask {
  hostPid: number;
  /** The task's pid as CRIU names its images (pid in the root's pid namespace). */
  key: number;
}

export interface TrackerRoundStats {
  /** Pages found present in the tracked memory this round. */
  presentPages: number;
  /** Pages sent this round (new or changed since the dest's copy). */
  dirtyPages: number;
  zeroPages: number;
  /** Page bytes read from the task (the tracker's own cost), and the time reading and hashing them took. */
  bytesRead: number;
  readMs: number;
  /** Page data bytes sent (zero pages travel as flags). */
  bytesSent: number;
  /** Pages that vanished between the scan and the read (unmapped while running: normal). */
  vanishedPages: number;
  /** The round's scan found this many pages to read (exact trackers; the hash tracker reads every present page). */
  candidatePages?: number;
  /** The round ended after its scan, nothing read or sent: `beforeRead` said so (post-copy takes over). */
  stoppedBeforeRead?: boolean;
}

/**
 * Asked once per round by an exact tracker, after its scan of every task and before it reads a page: the pages
 * it would read and how many are present. False ends the round there. The scan has reset the tracking, so a
 * stopped round leaves the tracker's word unusable for the final delta: only post-copy, which takes no held page
 * on the tracker's word, may follow one.
 */
export type BeforeRead = (candidatePages: number, presentPages: number) => boolean;

export interface DirtyTracker {
  readonly name: TrackerName;
  /**
   * After the freeze: per task key, the pages that may differ from what the dest holds (written since the
   * last round, or never seen). Undefined when the tracker cannot tell (hash): then every page is read.
   * The final delta reads only these; a full read-back check still runs beside the restore.
   */
  changedSinceLastRound?(tasks: readonly TrackedTask[]): Map<number, PageRuns>;
  round(tasks: readonly TrackedTask[], held: Map<number, PageHashIndex>, sink: BatchSink, signal: AbortSignal, beforeRead?: BeforeRead): Promise<TrackerRoundStats>;
  close(): void;
}

/** The round's figures: the present pages the tracker found, the rest from its passes through the pipeline. */
export function roundStats(presentPages: number, pass: PipelineStats): TrackerRoundStats {
  return {
    presentPages,
    dirtyPages: pass.sentPages,
    zeroPages: pass.zeroPages,
    bytesRead: pass.bytesRead,
    readMs: pass.readMs,
    bytesSent: pass.sentBytes,
    vanishedPages: pass.vanishedPages,
  };
}

/**
 * What a failed look at one task means for the round. Returns when the task exited mid-round (ESRCH, or
 * TASK_EXITED from an injection): skip it, CRIU will not dump it either. Any other failed system call is
 * MEMORY_READ_FAILED; anything else is rethrown as it is.
 */
export function rethrowUnlessExited(e: unknown): void {
  if (isFerryError(e, 'TASK_EXITED') || (e instanceof SystemCallError && e.errnoName === 'ESRCH')) return;
  if (e instanceof SystemCallError) {
    throw new FerryError('MEMORY_READ_FAILED', { phase: 'precopy', side: 'source', sourceState: 'running', detail: e.message, cause: e });
  }
  throw e;
}
