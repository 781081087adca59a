/**
 * The hash tracker: works on any kernel. Each round reads every present page of the memory CRIU dumps
 * (pagemap or PAGEMAP_SCAN for presence, batched process_vm_readv for the bytes), hashes it (XXH3-128,
 * native batch) and sends the pages whose hash differs from the dest's copy. The page is read once: the
 * bytes sent are exactly the bytes hashed, so the source's record of the dest never drifts.
 */
import { SystemCallError } from '../../shared/errors/ferry-error.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { PagemapReader } from '../../shared/kernel/pagemap.js';
import { dumpableVmas, readMaps } from '../../shared/kernel/proc-maps.js';
import { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { ChangedPageSender, emptyRoundStats } from './page-sender-loop.js';
import type { DirtyTracker, PageSink, TrackedTask, TrackerRoundStats } from './tracker.js';

export class HashTracker implements DirtyTracker {
  readonly name = 'hash' as const;
  private readonly sender: ChangedPageSender;
  private readonly pagemaps = new Map<number, PagemapReader>();

  constructor(private readonly pageSize: number) {
    this.sender = new ChangedPageSender(new ProcessMemoryReader(), pageSize);
  }

  async round(
    tasks: readonly TrackedTask[],
    _round: number,
    held: Map<number, PageHashIndex>,
    sink: PageSink,
    signal: AbortSignal,
  ): Promise<TrackerRoundStats> {
    const stats = emptyRoundStats();
    for (const task of tasks) {
      const maps = readMaps(task.hostPid);
      if (!maps) continue; // exited since the tree was read: CRIU will not dump it either
      let index = held.get(task.key);
      if (!index) held.set(task.key, (index = new PageHashIndex()));
      const runs = this.pagemap(task.hostPid).presentRuns(dumpableVmas(maps));
      try {
        await this.sender.send(task, runs, index, sink, signal, stats, true);
      } catch (e) {
        if (e instanceof SystemCallError && e.errnoName === 'ESRCH') continue; // the task exited mid-round
        if (e instanceof SystemCallError) {
          throw new FerryError('MEMORY_READ_FAILED', { phase: 'precopy', side: 'source', sourceState: 'running', detail: e.message, cause: e });
        }
        throw e;
      }
    }
    return stats;
  }

  private pagemap(pid: number): PagemapReader {
    let r = this.pagemaps.get(pid);
    if (!r) this.pagemaps.set(pid, (r = new PagemapReader(pid)));
    return r;
  }

  close(): void {
    for (const r of this.pagemaps.values()) r.close();
    this.pagemaps.clear();
  }
}
