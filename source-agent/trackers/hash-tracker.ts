/**
 * The hash tracker: works on any kernel. Each round reads every present page of the memory CRIU dumps
 * (pagemap or PAGEMAP_SCAN for presence, batched process_vm_readv for the bytes) and runs it through the page
 * pipeline, which sends the pages whose hash differs from the dest's copy.
 */
import { dumpableVmas } from '../../shared/kernel/proc-maps.js';
import type { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { emptyPipelineStats, PagePipeline, type BatchSink } from '../pages/page-pipeline.js';
import { rethrowUnlessExited, roundStats, type DirtyTracker, type TrackedTask, type TrackerRoundStats } from './tracker.js';
import { realTrackerKernel, type PresenceReader, type TrackerKernel } from './tracker-kernel.js';

export class HashTracker implements DirtyTracker {
  readonly name = 'hash' as const;
  private readonly pipeline: PagePipeline;
  private readonly pagemaps = new Map<number, PresenceReader>();

  constructor(
    pageSize: number,
    private readonly kernel: TrackerKernel = realTrackerKernel(),
  ) {
    this.pipeline = new PagePipeline(pageSize);
  }

  async round(tasks: readonly TrackedTask[], held: Map<number, PageHashIndex>, sink: BatchSink, signal: AbortSignal): Promise<TrackerRoundStats> {
    const pass = emptyPipelineStats();
    for (const task of tasks) {
      const maps = this.kernel.maps(task.hostPid);
      if (!maps) continue; // exited since the tree was read: CRIU will not dump it either
      const runs = this.pagemap(task.hostPid).presentRuns(dumpableVmas(maps));
      try {
        await this.pipeline.send(task.key, this.kernel.readPages(task.hostPid, runs, signal), held, sink, pass);
      } catch (e) {
        rethrowUnlessExited(e); // the task exited mid-round
      }
    }
    // Every present page is read: the pages read are the present ones.
    return roundStats(pass.readPages, pass);
  }

  private pagemap(pid: number): PresenceReader {
    let r = this.pagemaps.get(pid);
    if (!r) this.pagemaps.set(pid, (r = this.kernel.openPresence(pid)));
    return r;
  }

  close(): void {
    for (const r of this.pagemaps.values()) r.close();
    this.pagemaps.clear();
  }
}
