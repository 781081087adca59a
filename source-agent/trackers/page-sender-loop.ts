/**
 * What every tracker does once it knows which pages to look at: read them from the task (batched
 * process_vm_readv), hash them (XXH3-128, native batch), and send those whose hash differs from the dest's
 * copy, recording the new hash in `held`. The page is read once: the bytes sent are the bytes hashed.
 */
import { hashPages, zeroPages } from '../../shared/native/addon.js';
import type { PageRuns } from '../../shared/kernel/pagemap.js';
import type { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { HASH_BYTES, type PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { PageBatcher } from '../page-batcher.js';
import type { PageSink, TrackedTask, TrackerRoundStats } from './tracker.js';

export class ChangedPageSender {
  private readonly hashes: Buffer;
  private readonly zeros: Uint8Array;

  constructor(
    private readonly reader: ProcessMemoryReader,
    private readonly pageSize: number,
  ) {
    this.hashes = Buffer.allocUnsafe(reader.chunkPages * HASH_BYTES);
    this.zeros = new Uint8Array(reader.chunkPages);
  }

  /** Reads `runs` of the task and sends what changed; adds to `stats` (presentPages too when `countPresent`). */
  async send(
    task: TrackedTask,
    runs: PageRuns,
    index: PageHashIndex,
    sink: PageSink,
    signal: AbortSignal,
    stats: TrackerRoundStats,
    countPresent = false,
  ): Promise<void> {
    const batcher = new PageBatcher(this.pageSize, (pages) => sink(task.key, pages));
    const chunks = this.reader.chunks(task.hostPid, runs, signal);
    for (;;) {
      // Reading and hashing is the tracker's own cost (the cost model's read rate); sending is not.
      const t0 = performance.now();
      const next = chunks.next();
      if (next.done) break;
      const chunk = next.value;
      const n = chunk.data.length / this.pageSize;
      if (countPresent) stats.presentPages += n;
      stats.vanishedPages += chunk.unreadable.length;
      stats.bytesRead += chunk.data.length;
      hashPages(chunk.data, n, this.pageSize, this.hashes);
      zeroPages(chunk.data, n, this.pageSize, this.zeros);
      stats.readMs += performance.now() - t0;
      for (let i = 0; i < n; i++) {
        const page = chunk.pages[i]!;
        if (index.holds(page, this.hashes, i * HASH_BYTES)) continue; // unchanged, or written with the same bytes
        // add() copies the page out of the reader's buffer before the next chunk overwrites it.
        await batcher.add(page, this.hashes, i * HASH_BYTES, chunk.data, i * this.pageSize, this.zeros[i] === 1);
        index.set(page, this.hashes, i * HASH_BYTES);
      }
    }
    await batcher.flush();
    stats.dirtyPages += batcher.pages;
    stats.zeroPages += batcher.zeroPages;
    stats.bytesSent += batcher.bytes;
  }
}

export function emptyRoundStats(): TrackerRoundStats {
  return { presentPages: 0, dirtyPages: 0, zeroPages: 0, bytesRead: 0, readMs: 0, bytesSent: 0, vanishedPages: 0 };
}
