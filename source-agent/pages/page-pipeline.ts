/**
 * The one way pages go from the source to the dest, for the pre-copy rounds and the final delta alike: chunks
 * of pages in, batches out. Per chunk: hash every page (XXH3-128, native batch) and find the zero ones; skip the
 * pages the dest holds with the same hash; copy the others into batches and send them; record their hash as
 * held by the dest. The page is read once: the bytes sent are the bytes hashed, so the source's record of the
 * dest never drifts.
 */
import { hashPages, zeroPages } from '../../shared/native/addon.js';
import { HASH_BYTES, PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { BATCH_PAGES, PageBatchEncoder, type PageBatch } from '../../shared/transport/page-batch.js';

/** Where the pipeline sends each batch of a task (the caller binds the round). */
export type BatchSink = (task: number, batch: PageBatch) => Promise<void>;

/** Pages read back to back (page k at k * pageSize): a view of the reader's buffer that its next chunk overwrites. */
export interface ReadChunk {
  readonly pages: Float64Array;
  readonly data: Buffer;
  /** Pages the read covered that could not be read (unmapped while the task ran); they are not in `data`. */
  readonly unreadable?: readonly number[];
}

/** Pages the dest holds that are trusted unread (the tracker saw no write): their hash is the held one. */
export interface HeldChunk {
  readonly pages: Float64Array;
  readonly data?: undefined;
  /** Each page's slot in the task's held index, when the caller looked them up already. */
  readonly slots?: Int32Array;
}

/** Post-copy: pages the dest holds no bytes of and gets none now (the fill sends them); their hash is zero. */
export interface RemoteChunk {
  readonly pages: Float64Array;
  readonly data?: undefined;
  readonly remote: true;
}

export type PipelineChunk = ReadChunk | HeldChunk | RemoteChunk;

/** What passes through the pipeline did (added to as they go: a pass that fails keeps what it read). */
export interface PipelineStats {
  /** Pages read and hashed, their bytes, and the time that took: the cost of finding what changed (sending is not in it). */
  readPages: number;
  bytesRead: number;
  readMs: number;
  /** Pages that vanished between the scan and the read. */
  vanishedPages: number;
  /** Pages taken as held without reading them. */
  heldPages: number;
  /** Post-copy: pages left for after the resume (neither read nor held). */
  remotePages: number;
  /** Pages sent (new, or changed since the dest's copy), the zero ones among them (sent as a flag), and the data bytes sent. */
  sentPages: number;
  zeroPages: number;
  sentBytes: number;
}

export function emptyPipelineStats(): PipelineStats {
  return { readPages: 0, bytesRead: 0, readMs: 0, vanishedPages: 0, heldPages: 0, remotePages: 0, sentPages: 0, zeroPages: 0, sentBytes: 0 };
}

/** The dest's pages of task `task` as the source knows them (created empty for a task not seen yet). */
export function heldIndex(held: Map<number, PageHashIndex>, task: number): PageHashIndex {
  let index = held.get(task);
  if (!index) held.set(task, (index = new PageHashIndex()));
  return index;
}

export class PagePipeline {
  private hashes: Buffer;
  private zeros: Uint8Array;

  constructor(
    private readonly pageSize: number,
    chunkPages = BATCH_PAGES,
  ) {
    this.hashes = Buffer.allocUnsafe(chunkPages * HASH_BYTES);
    this.zeros = new Uint8Array(chunkPages);
  }

  /**
   * Sends the pages of `chunks` that task `task`'s entry in `held` does not hold with the same hash, records them
   * there, and adds to `stats`. `hashed` sees every chunk's hashes (held chunks included) before its pages are
   * sent; the view is valid until the next chunk.
   */
  async send<C extends PipelineChunk>(
    task: number,
    chunks: Iterable<C> | AsyncIterable<C>,
    held: Map<number, PageHashIndex>,
    sink: BatchSink,
    stats: PipelineStats,
    hashed?: (chunk: C, hashes: Buffer) => void,
  ): Promise<void> {
    const index = heldIndex(held, task);
    const encoder = new PageBatchEncoder(this.pageSize, (batch) => sink(task, batch));
    // Reading (the wait for the next chunk) and hashing are timed together; sending is not.
    let t0 = performance.now();
    for await (const chunk of chunks) {
      const n = chunk.pages.length;
      this.reserve(n);
      if ('remote' in chunk) {
        this.hashes.fill(0, 0, n * HASH_BYTES);
        stats.remotePages += n;
        hashed?.(chunk, this.hashes.subarray(0, n * HASH_BYTES));
        t0 = performance.now();
        continue;
      }
      if (chunk.data === undefined) {
        const slots = chunk.slots;
        for (let i = 0; i < n; i++) index.copyHash(slots ? slots[i]! : index.slotOf(chunk.pages[i]!)!, this.hashes, i * HASH_BYTES);
        stats.heldPages += n;
        hashed?.(chunk, this.hashes.subarray(0, n * HASH_BYTES));
        t0 = performance.now();
        continue;
      }
      stats.readPages += n;
      stats.bytesRead += chunk.data.length;
      stats.vanishedPages += chunk.unreadable?.length ?? 0;
      hashPages(chunk.data, n, this.pageSize, this.hashes);
      zeroPages(chunk.data, n, this.pageSize, this.zeros);
      stats.readMs += performance.now() - t0;
      hashed?.(chunk, this.hashes.subarray(0, n * HASH_BYTES));
      for (let i = 0; i < n; i++) {
        const page = chunk.pages[i]!;
        if (index.holds(page, this.hashes, i * HASH_BYTES)) continue; // unchanged, or written with the same bytes
        // add() copies the page out of the reader's buffer before the next chunk overwrites it; it returns a
        // promise only when the page filled a batch (an await per page cost a microtask turn per page).
        const full = encoder.add(page, this.hashes, i * HASH_BYTES, chunk.data, i * this.pageSize, this.zeros[i] === 1);
        if (full) await full;
        index.set(page, this.hashes, i * HASH_BYTES);
      }
      t0 = performance.now();
    }
    await encoder.flush();
    stats.sentPages += encoder.pages;
    stats.zeroPages += encoder.zeroPages;
    stats.sentBytes += encoder.bytes;
  }

  /** Room for the hashes and zero flags of an `n`-page chunk. */
  private reserve(n: number): void {
    if (n <= this.zeros.length) return;
    this.hashes = Buffer.allocUnsafe(n * HASH_BYTES);
    this.zeros = new Uint8Array(n);
  }
}
