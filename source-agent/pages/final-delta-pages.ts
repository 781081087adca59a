/**
 * final-delta: the dump's pages that the dest does not hold yet, then every other image verbatim.
 * The pages are those of the dump's pagemaps, in pagemap order: PRESENT entries have their bytes in
 * pages-<id>.img; LAZY-only entries (a lazy dump leaves anonymous memory out) are read from the stopped task.
 * Every page is hashed; a page is sent only when the dest's copy (known by hash on the source) differs. The
 * hashes of all dumped pages form the manifest the dest checks the images against. For a lazy restore, the
 * pages taken on the tracker's word are marked unconfirmed in their manifest: the fill confirms them against the
 * frozen original after the resume (confirm-pages.ts) instead of a read-back inside the freeze.
 * Post-copy: no lazy page of a task is read at all. One the dest holds goes as held and unconfirmed (whatever the
 * tracker says: the fill compares it with the original, so a page written before round 0 read it is not sent
 * twice); one it lacks is remote (zero hash, remote and unconfirmed bits): the fill sends its bytes after the resume.
 */
import { open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { ANY_PAGEMAP, TASK_PAGEMAP } from '../../shared/criu/image-names.js';
import { decodePagemap, PE_LAZY, PE_PRESENT, type PagemapEntry } from '../../shared/criu/pagemap-image.js';
import { hashPages } from '../../shared/native/addon.js';
import { setBits } from '../../shared/pages/page-bitmap.js';
import { HASH_BYTES, PageHashIndex } from '../../shared/pages/page-hash-index.js';
import type { PagesImageManifest } from '../../shared/transport/messages.js';
import { BATCH_PAGES } from '../../shared/transport/page-batch.js';
import type { PageRuns } from '../../shared/kernel/pagemap.js';
import { describePageAddresses } from '../../shared/kernel/process-memory.js';
import { emptyPipelineStats, heldIndex, PagePipeline, type BatchSink } from './page-pipeline.js';

/** Non-task pagemaps (shared memory) get keys above every pid; they have no pre-copy, so all pages go now. */
const OTHER_KEY_BASE = 0x80000000;

/** Reads `count` pages from `firstPage` of the stopped task whose images carry key `task`. */
export type TaskPageReader = (task: number, firstPage: number, count: number) => Iterable<{ data: Buffer; pages: Float64Array; unreadable: readonly number[] }>;

export interface FinalDeltaResult {
  manifests: PagesImageManifest[];
  /** Per manifest (same order): its pagemap's entries as page runs, so manifest index i is the i-th page of them. */
  pageRuns: PageRuns[];
  dumpPages: number;
  /** Pages taken as the dest holds them because the tracker saw no write: checked by verifyDumpedPages. */
  trustedPages: number;
  /** Pages read from the stopped task (the lazy part of the dump). */
  taskPages: number;
  sentPages: number;
  sentBytes: number;
  zeroPages: number;
  /** Post-copy: pages the dest lacks at the resume (the manifests' remote bits). */
  remotePages: number;
}

/** eager: every page is checked inside the freeze; lazy: the trusted ones are confirmed in the fill; postcopy: see above. */
export type FinalDeltaMode = 'eager' | 'lazy' | 'postcopy';

const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { phase: 'final-delta', side: 'source', detail });

type DumpedChunk =
  | { kind: 'read'; pages: Float64Array; data: Buffer; fromTask: boolean }
  /** Pages the tracker says are unchanged since the dest got them: not read, their hash is the held one. */
  | { kind: 'held'; pages: Float64Array; slots: Int32Array }
  /** Post-copy: pages the dest lacks, left for the fill. */
  | { kind: 'remote'; pages: Float64Array; remote: true };

/** Nothing written: in post-copy every held page is taken as held (and confirmed in the fill). */
const NOTHING_WRITTEN: PageRuns = { starts: [], counts: [] };

/**
 * Splits a lazy entry into runs to read and runs the dest already holds unchanged (`changed` from the tracker;
 * a page the dest does not hold is always read). `slots` gets each page's slot in `held` (-1: not held), so the
 * held runs need no second lookup: this walk runs over every dumped page inside the freeze.
 */
function* lazyRuns(e: PagemapEntry, changed: PageRuns | undefined, held: PageHashIndex, slots: Int32Array): Generator<{ read: boolean; first: number; count: number }> {
  if (!changed) {
    yield { read: true, first: e.firstPage, count: e.nrPages };
    return;
  }
  let r = 0;
  let runStart = e.firstPage;
  let runRead: boolean | undefined;
  const starts = changed.starts;
  const counts = changed.counts;
  const end = e.firstPage + e.nrPages;
  // The next written run at or after p: advanced as p goes, so the walk is one pass over both.
  let nextWritten = r < starts.length ? starts[r]! : Infinity;
  let nextWrittenEnd = r < starts.length ? starts[r]! + counts[r]! : Infinity;
  let slot: number | undefined = -1;
  for (let p = e.firstPage; p < end; p++) {
    while (nextWrittenEnd <= p) {
      r++;
      nextWritten = r < starts.length ? starts[r]! : Infinity;
      nextWrittenEnd = r < starts.length ? starts[r]! + counts[r]! : Infinity;
    }
    slot = held.slotAfter(p, slot ?? -1);
    slots[p - e.firstPage] = slot ?? -1;
    const read = nextWritten <= p || slot === undefined;
    if (runRead === undefined) runRead = read;
    else if (read !== runRead) {
      yield { read: runRead, first: runStart, count: p - runStart };
      runStart = p;
      runRead = read;
    }
  }
  if (runRead !== undefined) yield { read: runRead, first: runStart, count: end - runStart };
}

/** The pages the pagemap names, in its order, a chunk (<= BATCH_PAGES) at a time. */
async function* dumpedPages(
  entries: readonly PagemapEntry[],
  pagesFile: FileHandle | undefined,
  readTask: (firstPage: number, count: number) => Iterable<{ data: Buffer; pages: Float64Array; unreadable: readonly number[] }>,
  pageSize: number,
  chunk: Buffer,
  changed: PageRuns | undefined,
  held: PageHashIndex,
  postCopy = false,
): AsyncGenerator<DumpedChunk> {
  let fileOffset = 0;
  for (const e of entries) {
    if ((e.flags & PE_PRESENT) !== 0) {
      for (let done = 0; done < e.nrPages; ) {
        const n = Math.min(BATCH_PAGES, e.nrPages - done);
        const { bytesRead } = await pagesFile!.read(chunk, 0, n * pageSize, fileOffset);
        if (bytesRead !== n * pageSize) throw invalid(`pages image: short read at ${fileOffset}`);
        fileOffset += n * pageSize;
        const pages = new Float64Array(n);
        for (let i = 0; i < n; i++) pages[i] = e.firstPage + done + i;
        yield { kind: 'read', pages, data: chunk.subarray(0, n * pageSize), fromTask: false };
        done += n;
      }
    } else if ((e.flags & PE_LAZY) !== 0) {
      const slots = new Int32Array(e.nrPages);
      for (const run of lazyRuns(e, postCopy ? NOTHING_WRITTEN : changed, held, slots)) {
        if (run.read && postCopy) {
          // Not held (the only reason to read with nothing written): the fill sends it after the resume.
          for (let done = 0; done < run.count; done += BATCH_PAGES) {
            const n = Math.min(BATCH_PAGES, run.count - done);
            yield { kind: 'remote', pages: Float64Array.from({ length: n }, (_, i) => run.first + done + i), remote: true };
          }
          continue;
        }
        if (!run.read) {
          for (let done = 0; done < run.count; done += BATCH_PAGES) {
            const n = Math.min(BATCH_PAGES, run.count - done);
            const pages = new Float64Array(n);
            for (let i = 0; i < n; i++) pages[i] = run.first + done + i;
            const at = run.first - e.firstPage + done;
            yield { kind: 'held', pages, slots: slots.subarray(at, at + n) };
          }
          continue;
        }
        for (const c of readTask(run.first, run.count)) {
          if (c.unreadable.length > 0) {
            throw new FerryError('MEMORY_READ_FAILED', { phase: 'final-delta', side: 'source', detail: `pages at ${describePageAddresses(c.unreadable)} of the stopped task cannot be read` });
          }
          yield { kind: 'read', pages: c.pages, data: c.data, fromTask: true };
        }
      }
    } else {
      throw invalid(`pagemap entry at ${e.vaddr.toString(16)} has flags ${e.flags}: neither present nor lazy`);
    }
  }
}

/** Sends what the dest lacks of the dump to `sink`, and builds the manifest of every dumped page's hash. */
export async function sendFinalDelta(
  imagesDir: string,
  held: Map<number, PageHashIndex>,
  sink: BatchSink,
  pageSize: number,
  readTask: TaskPageReader,
  changed?: Map<number, PageRuns>,
  /** lazy, postcopy: mark the held pages unconfirmed (one bit per page, pagemap order, LSB first). */
  mode: FinalDeltaMode = 'eager',
): Promise<FinalDeltaResult> {
  const markUnconfirmed = mode !== 'eager';
  const postCopy = mode === 'postcopy';
  const names = (await readdir(imagesDir)).sort();
  const manifests: PagesImageManifest[] = [];
  const pageRuns: PageRuns[] = [];
  let dumpPages = 0;
  let taskPages = 0;
  let otherKey = OTHER_KEY_BASE;
  const chunk = Buffer.allocUnsafe(BATCH_PAGES * pageSize);
  const pipeline = new PagePipeline(pageSize);
  const sent = emptyPipelineStats();
  for (const name of names) {
    if (!ANY_PAGEMAP.test(name)) continue;
    const taskMatch = TASK_PAGEMAP.exec(name);
    const task = taskMatch ? Number(taskMatch[1]) : otherKey++;
    const pagemap = decodePagemap(await readFile(join(imagesDir, name)), name);
    const entries = pagemap.entries;
    const total = entries.reduce((n, e) => n + e.nrPages, 0);
    const presentPages = entries.filter((e) => (e.flags & PE_PRESENT) !== 0).reduce((n, e) => n + e.nrPages, 0);
    const hashes = Buffer.allocUnsafe(total * HASH_BYTES);
    // Allocated at the first held chunk: a manifest without one says "all confirmed" with an empty field.
    let unconfirmed: Buffer | undefined;
    let remote: Buffer | undefined;
    const index = heldIndex(held, task);
    const pagesFile = presentPages > 0 ? await open(join(imagesDir, `pages-${pagemap.pagesId}.img`), 'r') : undefined;
    try {
      if (pagesFile && (await pagesFile.stat()).size !== presentPages * pageSize) {
        throw invalid(`pages-${pagemap.pagesId}.img does not hold the ${presentPages} present pages of ${name}`);
      }
      if (!taskMatch && presentPages !== total) throw invalid(`${name}: lazy pages outside a task`);
      let done = 0;
      const chunks = dumpedPages(entries, pagesFile, (first, count) => readTask(task, first, count), pageSize, chunk, changed?.get(task), index, postCopy);
      await pipeline.send(task, chunks, held, sink, sent, (c, chunkHashes) => {
        chunkHashes.copy(hashes, done * HASH_BYTES);
        if (c.kind === 'read' && c.fromTask) taskPages += c.pages.length;
        if (c.kind === 'held' && markUnconfirmed) setBits((unconfirmed ??= Buffer.alloc(Math.ceil(total / 8))), done, c.pages.length);
        if (c.kind === 'remote') {
          setBits((unconfirmed ??= Buffer.alloc(Math.ceil(total / 8))), done, c.pages.length);
          setBits((remote ??= Buffer.alloc(Math.ceil(total / 8))), done, c.pages.length);
        }
        done += c.pages.length;
      });
      if (done !== total) throw invalid(`${name}: read ${done} of ${total} pages`);
    } finally {
      await pagesFile?.close();
    }
    manifests.push({ pagemapImage: name, task, hashes, ...(unconfirmed && { unconfirmed }), ...(remote && { remote }) });
    pageRuns.push({ starts: entries.map((e) => e.firstPage), counts: entries.map((e) => e.nrPages) });
    dumpPages += total;
  }
  return { manifests, pageRuns, dumpPages, taskPages, trustedPages: sent.heldPages, sentPages: sent.sentPages, sentBytes: sent.sentBytes, zeroPages: sent.zeroPages, remotePages: sent.remotePages };
}


/**
 * The check behind a tracker's word: reads every dumped page again (stopped task or pages image), hashes it
 * and compares it with the manifest. Runs beside the dest's restore; a difference means the tracker missed a
 * write, and the migration rolls back (TRACKER_MISSED_PAGE) before anything is committed.
 */
export async function verifyDumpedPages(
  imagesDir: string,
  manifests: readonly PagesImageManifest[],
  pageSize: number,
  readTask: TaskPageReader,
): Promise<number> {
  const chunk = Buffer.allocUnsafe(BATCH_PAGES * pageSize);
  const got = Buffer.allocUnsafe(BATCH_PAGES * HASH_BYTES);
  let checked = 0;
  for (const m of manifests) {
    const pagemap = decodePagemap(await readFile(join(imagesDir, m.pagemapImage)), m.pagemapImage);
    const presentPages = pagemap.entries.filter((e) => (e.flags & PE_PRESENT) !== 0).reduce((n, e) => n + e.nrPages, 0);
    const pagesFile = presentPages > 0 ? await open(join(imagesDir, `pages-${pagemap.pagesId}.img`), 'r') : undefined;
    try {
      let done = 0;
      for await (const c of dumpedPages(pagemap.entries, pagesFile, (first, count) => readTask(m.task, first, count), pageSize, chunk, undefined, new PageHashIndex())) {
        if (c.kind !== 'read') continue; // unreachable without `changed`: every page is read
        const n = c.pages.length;
        hashPages(c.data, n, pageSize, got);
        for (let i = 0; i < n; i++) {
          if (got.compare(m.hashes, (done + i) * HASH_BYTES, (done + i + 1) * HASH_BYTES, i * HASH_BYTES, (i + 1) * HASH_BYTES) !== 0) {
            throw new FerryError('TRACKER_MISSED_PAGE', { phase: 'final-delta', side: 'source', detail: `task ${m.task} page at ${describePageAddresses([c.pages[i]!])}: its bytes differ from what the dest holds` });
          }
        }
        done += n;
      }
      checked += done;
    } finally {
      await pagesFile?.close();
    }
  }
  return checked;
}
