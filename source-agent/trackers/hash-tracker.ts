/**
 * The hash tracker: works on any kernel. Each round reads every present page of the memory CRIU dumps
 * (pagemap or PAGEMAP_SCAN for presence, batched process_vm_readv for the bytes), hashes it (XXH3-128,
 * native batch) and sends the pages whose hash differs from the dest's copy. The page is read once: the
 * bytes sent are exactly the bytes hashed, so the source's record of the dest never drifts.
 */
import { SystemCallError } from '../../shared/errors/ferry-error.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { hashPages, zeroPages } from '../../shared/native/addon.js';
import { PagemapReader } from '../../shared/kernel/pagemap.js';
import { dumpableVmas, readMaps } from '../../shared/kernel/proc-maps.js';
import { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { HASH_BYTES, PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { PageBatcher } from '../page-batcher.js';
import type { DirtyTracker, PageSink, TrackedTask, TrackerRoundStats } from './tracker.js';

export class HashTracker implements DirtyTracker {
  readonly name = 'hash' as const;
  private readonly reader: ProcessMemoryReader;
  private readonly hashes: Buffer;
  private readonly zeros: Uint8Array;
  private readonly pagemaps = new Map<number, PagemapReader>();

  constructor(private readonly pageSize: number) {
    this.reader = new ProcessMemoryReader();
    this.hashes = Buffer.allocUnsafe(this.reader.chunkPages * HASH_BYTES);
    this.zeros = new Uint8Array(this.reader.chunkPages);
  }

  async round(
    tasks: readonly TrackedTask[],
    _round: number,
    held: Map<number, PageHashIndex>,
    sink: PageSink,
    signal: AbortSignal,
  ): Promise<TrackerRoundStats> {
    const stats: TrackerRoundStats = { presentPages: 0, dirtyPages: 0, zeroPages: 0, bytesRead: 0, readMs: 0, bytesSent: 0, vanishedPages: 0 };
    for (const task of tasks) {
      const maps = readMaps(task.hostPid);
      if (!maps) continue; // exited since the tree was read: CRIU will not dump it either
      let index = held.get(task.key);
      if (!index) held.set(task.key, (index = new PageHashIndex()));
      const runs = this.pagemap(task.hostPid).presentRuns(dumpableVmas(maps));
      const batcher = new PageBatcher(this.pageSize, (pages) => sink(task.key, pages));
      try {
        const chunks = this.reader.chunks(task.hostPid, runs, signal);
        for (;;) {
          // Reading and hashing is the tracker's own cost (the cost model's read rate); sending is not.
          const t0 = performance.now();
          const next = chunks.next();
          if (next.done) break;
          const chunk = next.value;
          const n = chunk.data.length / this.pageSize;
          stats.presentPages += n;
          stats.vanishedPages += chunk.unreadable.length;
          stats.bytesRead += chunk.data.length;
          hashPages(chunk.data, n, this.pageSize, this.hashes);
          zeroPages(chunk.data, n, this.pageSize, this.zeros);
          stats.readMs += performance.now() - t0;
          for (let i = 0; i < n; i++) {
            const page = chunk.pages[i]!;
            if (index.holds(page, this.hashes, i * HASH_BYTES)) continue;
            // add() copies the page out of the reader's buffer before the next chunk overwrites it.
            await batcher.add(page, this.hashes, i * HASH_BYTES, chunk.data, i * this.pageSize, this.zeros[i] === 1);
            index.set(page, this.hashes, i * HASH_BYTES);
          }
        }
        await batcher.flush();
      } catch (e) {
        if (e instanceof SystemCallError && e.errnoName === 'ESRCH') continue; // the task exited mid-round
        if (e instanceof SystemCallError) {
          throw new FerryError('MEMORY_READ_FAILED', { phase: 'precopy', side: 'source', sourceState: 'running', detail: e.message, cause: e });
        }
        throw e;
      }
      stats.dirtyPages += batcher.pages;
      stats.zeroPages += batcher.zeroPages;
      stats.bytesSent += batcher.bytes;
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
