/**
 * The pages the dest has received for one task of one migration, kept so that CRIU can restore straight
 * from them (see image-chain.ts): level files of pages in ascending address order, plus the
 * page -> (slot, hash) index.
 *
 * A page keeps its slot for the whole migration: sent again, it overwrites its slot in place. New pages are
 * appended to the current level while their addresses keep ascending (a round scans memory in address
 * order); a new page below the last one appended starts a new level. So every level file is ordered like a
 * CRIU pages image, and at the freeze nothing has to be copied: the levels become a parent-image chain.
 * Every page's hash was checked on arrival; verify() checks the bytes on disk again before CRIU sees them.
 *
 * Bounded: a zero page is a hole in its level file (CRIU reads zeros there; no disk is spent), the levels
 * of a task are capped (PAGE_STORE_LIMIT: pages in descending order would make one level each), the level
 * files are opened through the agent's LevelFilePool (few descriptors whatever the levels), and every new
 * slot and byte is taken from the session's budget before the batch is stored.
 */
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { hashPages } from '../shared/native/addon.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { PageHashIndex, HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { readPageNumber, type DecodedPageBatch } from '../shared/transport/page-batch.js';
import { DEFAULT_DEST_LIMITS } from './dest-limits.js';
import { LevelFilePool } from './level-file-pool.js';
import { SessionBudget } from './session-budget.js';

export interface StoreLevel {
  /** Where the file is now: the image chain moves it (and says so here). */
  path: string;
  /** Slots [firstSlot, firstSlot + pages) live in this level, at (slot - firstSlot) * pageSize. */
  firstSlot: number;
  pages: number;
  /** Highest page number in the level: a new page must be above it to join. */
  lastPage: number;
  /** The file's length: a trailing hole is made by extending it, so that every slot reads back. */
  fileBytes: number;
}

export interface TaskPageStoreOptions {
  /** The agent's open level files; a store of its own (8 files) unless told. */
  files?: LevelFilePool;
  /** The session's budget; none unless told. */
  budget?: SessionBudget;
  maxLevels?: number;
}

const VERIFY_CHUNK_PAGES = 256;
/** Consecutive slots of one level go in one positioned writev of at most this many pages. */
const WRITEV_PAGES = 1024;

export class TaskPageStore {
  readonly index = new PageHashIndex();
  readonly levels: StoreLevel[] = [];
  /** Page number of every slot (the inverse of the index), for verify() and the chain's pagemaps. */
  private pageOfSlot = new Float64Array(1024);
  /** 1 once a slot's bytes were written: a zero page on a slot never written stays a hole. */
  private written = new Uint8Array(1024);
  private readonly zeroPage: Buffer;
  private readonly files: LevelFilePool;
  private readonly budget: SessionBudget;
  private readonly maxLevels: number;
  /** put() and close() run one at a time: two streams of one session never interleave their writes. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly task: number,
    private readonly dir: string,
    private readonly pageSize: number,
    opts: TaskPageStoreOptions,
  ) {
    this.zeroPage = Buffer.alloc(pageSize);
    this.files = opts.files ?? new LevelFilePool(8);
    this.budget = opts.budget ?? SessionBudget.unlimited(pageSize);
    this.maxLevels = opts.maxLevels ?? DEFAULT_DEST_LIMITS.maxStoreLevels;
  }

  static open(dir: string, task: number, pageSize: number, opts: TaskPageStoreOptions = {}): Promise<TaskPageStore> {
    return Promise.resolve(TaskPageStore.create(dir, task, pageSize, opts));
  }

  /** As open(), at once: nothing is touched on disk before the first page. */
  static create(dir: string, task: number, pageSize: number, opts: TaskPageStoreOptions = {}): TaskPageStore {
    return new TaskPageStore(task, dir, pageSize, opts);
  }

  slotPage(slot: number): number {
    return this.pageOfSlot[slot]!;
  }

  levelOfSlot(slot: number): number {
    let k = this.levels.length - 1;
    while (k > 0 && this.levels[k]!.firstSlot > slot) k--;
    return k;
  }

  /** Runs `fn` on a level's file, opened through the pool. */
  useFile<T>(level: StoreLevel, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    return this.files.use(level.path, fn);
  }

  private async newLevel(firstSlot: number): Promise<StoreLevel> {
    if (this.levels.length >= this.maxLevels) {
      throw new FerryError('PAGE_STORE_LIMIT', {
        side: 'dest',
        detail: `task ${this.task}: a new page below the last one would make level ${this.levels.length + 1}, the store allows ${this.maxLevels}`,
      });
    }
    const path = join(this.dir, `task-${this.task}.L${this.levels.length}.pages`);
    await this.files.create(path);
    const level: StoreLevel = { path, firstSlot, pages: 0, lastPage: -1, fileBytes: 0 };
    this.levels.push(level);
    return level;
  }

  private rememberSlot(slot: number, page: number): void {
    if (slot >= this.pageOfSlot.length) {
      const grown = new Float64Array(this.pageOfSlot.length * 2);
      grown.set(this.pageOfSlot);
      this.pageOfSlot = grown;
      const writtenGrown = new Uint8Array(grown.length);
      writtenGrown.set(this.written);
      this.written = writtenGrown;
    }
    this.pageOfSlot[slot] = page;
  }

  /**
   * Checks every page of the batch against its hash and against the session's budget, then stores it.
   * Throws PAGE_INTEGRITY on the first mismatch, SESSION_QUOTA_EXCEEDED past the budget, before anything of
   * the batch is stored. A batch whose stream ended (`signal`) while it waited behind others is dropped unstored:
   * a peer that sends and walks away cannot pile up work behind the disk.
   */
  put(batch: DecodedPageBatch, scratchHashes: Buffer, signal?: AbortSignal): Promise<void> {
    const run = this.queue.then(() => {
      if (signal?.aborted) throw new FerryError('CANCELLED', { side: 'dest', phase: 'precopy', detail: `task ${this.task}: the stream of this batch ended before it was stored` });
      return this.putNow(batch, scratchHashes);
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async putNow(batch: DecodedPageBatch, scratchHashes: Buffer): Promise<void> {
    if (this.closed) throw new FerryError('SESSION_CONFLICT', { side: 'dest', detail: `task ${this.task}: the store is closed` });
    verifyBatchHashes(batch, this.pageSize, scratchHashes);
    this.admit(batch);
    // Consecutive slots of one level become one positioned writev; a zero page on a slot never written is skipped.
    // Pages that are also consecutive in the batch's data are one buffer of it (a view, no copy per page).
    let runLevel: StoreLevel | undefined;
    let runSlot = -1;
    let runPages = 0;
    let buffers: Buffer[] = [];
    /** The run's last piece of batch.data not yet in `buffers`: [pieceAt, pieceAt + pieceBytes). */
    let pieceAt = -1;
    let pieceBytes = 0;
    const endPiece = (): void => {
      if (pieceAt >= 0) buffers.push(batch.data.subarray(pieceAt, pieceAt + pieceBytes));
      pieceAt = -1;
      pieceBytes = 0;
    };
    const flush = async (): Promise<void> => {
      endPiece();
      const level = runLevel;
      if (level && runPages > 0) {
        const at = (runSlot - level.firstSlot) * this.pageSize;
        const bufs = buffers;
        await this.useFile(level, (fh) => fh.writev(bufs, at));
        level.fileBytes = Math.max(level.fileBytes, at + runPages * this.pageSize);
      }
      buffers = [];
      runPages = 0;
    };
    let touched: StoreLevel | StoreLevel[] | undefined;
    for (let i = 0; i < batch.count; i++) {
      const page = readPageNumber(batch.pageNumbers, i);
      let slot = this.index.slotOf(page);
      let level: StoreLevel;
      if (slot === undefined) {
        let top = this.levels[this.levels.length - 1];
        if (!top || page <= top.lastPage) {
          await flush();
          runLevel = undefined;
          top = await this.newLevel(this.index.size);
        }
        slot = this.index.set(page, batch.hashes, i * HASH_BYTES);
        this.rememberSlot(slot, page);
        top.pages++;
        top.lastPage = page;
        level = top;
      } else {
        this.index.setAt(slot, batch.hashes, i * HASH_BYTES);
        level = this.levels[this.levelOfSlot(slot)]!;
      }
      // Almost always one level per batch: no Set for it.
      if (touched === undefined) touched = level;
      else if (touched !== level && (!Array.isArray(touched) || !touched.includes(level))) touched = Array.isArray(touched) ? [...touched, level] : [touched, level];
      const off = batch.dataOffsets[i]!;
      if (off < 0 && this.written[slot] === 0) continue; // a hole reads as zeros
      this.written[slot] = 1;
      if (!(level === runLevel && slot === runSlot + runPages && runPages < WRITEV_PAGES)) {
        await flush();
        runLevel = level;
        runSlot = slot;
      }
      runPages++;
      if (off >= 0 && off === pieceAt + pieceBytes) pieceBytes += this.pageSize;
      else {
        endPiece();
        if (off >= 0) {
          pieceAt = off;
          pieceBytes = this.pageSize;
        } else buffers.push(this.zeroPage);
      }
    }
    await flush();
    // A trailing zero page is a hole at the end: the file is extended so that it reads back.
    for (const level of touched === undefined ? [] : Array.isArray(touched) ? touched : [touched]) {
      const length = level.pages * this.pageSize;
      if (level.fileBytes < length) {
        await this.useFile(level, (fh) => fh.truncate(length));
        level.fileBytes = length;
      }
    }
  }

  /**
   * Refuses a batch that would need more levels than allowed (PAGE_STORE_LIMIT), and takes its new slots and
   * the bytes it newly writes to disk from the budget (SESSION_QUOTA_EXCEEDED): both before anything is stored.
   */
  private admit(batch: DecodedPageBatch): void {
    let newSlots = 0;
    let newBytes = 0;
    let levels = this.levels.length;
    let lastPage = this.levels[levels - 1]?.lastPage ?? Infinity;
    /** The highest new page so far: a new page above it cannot have come earlier in this batch (the usual case). */
    let maxNew = -1;
    /** New pages of this batch -> whether their bytes were counted already (a page may come twice); made only then. */
    let fresh: Map<number, boolean> | undefined;
    for (let i = 0; i < batch.count; i++) {
      const page = readPageNumber(batch.pageNumbers, i);
      const slot = this.index.slotOf(page);
      const isData = batch.dataOffsets[i]! >= 0;
      if (slot === undefined) {
        let counted: boolean | undefined;
        if (page <= maxNew) {
          fresh ??= this.newPagesBefore(batch, i);
          counted = fresh.get(page);
        } else maxNew = page;
        if (counted === undefined) {
          newSlots++;
          if (levels === 0 || page <= lastPage) levels++;
          lastPage = page;
        }
        if (isData && counted !== true) newBytes += this.pageSize;
        fresh?.set(page, counted === true || isData);
      } else if (isData && this.written[slot] === 0) {
        newBytes += this.pageSize;
      }
    }
    if (levels > this.maxLevels) {
      throw new FerryError('PAGE_STORE_LIMIT', {
        side: 'dest',
        detail: `task ${this.task}: the batch's new pages below the last ones would make ${levels} levels, the store allows ${this.maxLevels}`,
      });
    }
    this.budget.takePages(newSlots, newBytes, 'precopy');
  }

  /** The new pages among the batch's first `end` (all distinct: they ascended so far) -> whether they carry data. */
  private newPagesBefore(batch: DecodedPageBatch, end: number): Map<number, boolean> {
    const fresh = new Map<number, boolean>();
    for (let i = 0; i < end; i++) {
      const page = readPageNumber(batch.pageNumbers, i);
      if (this.index.slotOf(page) === undefined) fresh.set(page, batch.dataOffsets[i]! >= 0);
    }
    return fresh;
  }

  /**
   * Reads every level back and checks each page against the hash it arrived with: a disk that damaged
   * a page is caught here, before CRIU restores it silently.
   */
  async verify(): Promise<void> {
    const chunk = Buffer.allocUnsafe(VERIFY_CHUNK_PAGES * this.pageSize);
    const hashes = Buffer.allocUnsafe(VERIFY_CHUNK_PAGES * HASH_BYTES);
    for (const level of this.levels) {
      await this.useFile(level, async (file) => {
        for (let done = 0; done < level.pages; ) {
          const n = Math.min(VERIFY_CHUNK_PAGES, level.pages - done);
          const { bytesRead } = await file.read(chunk, 0, n * this.pageSize, done * this.pageSize);
          if (bytesRead !== n * this.pageSize) {
            throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `${level.path}: short read at page ${done}` });
          }
          hashPages(chunk, n, this.pageSize, hashes);
          for (let i = 0; i < n; i++) {
            const slot = level.firstSlot + done + i;
            if (this.index.hashAt(slot).compare(hashes, i * HASH_BYTES, (i + 1) * HASH_BYTES) !== 0) {
              throw new FerryError('REBUILD_HASH_MISMATCH', {
                phase: 'restore',
                side: 'dest',
                detail: `task ${this.task} page ${this.pageOfSlot[slot]}: stored bytes do not match their hash (${level.path})`,
              });
            }
          }
          done += n;
        }
      });
    }
  }

  /** Closes the level files (before they are moved; a later use reopens them at their new path). */
  closeFiles(): Promise<void> {
    const run = this.queue.then(async () => {
      for (const level of this.levels) await this.files.forget(level.path);
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Waits for a put in progress, then closes the files; nothing more is stored. */
  async close(): Promise<void> {
    this.closed = true;
    await this.closeFiles();
  }
}

const zeroHashes = new Map<number, Buffer>();

/** The hash of an all-zero page of this size (zero pages travel as a flag, but their hash is still checked). */
export function zeroPageHash(pageSize: number): Buffer {
  let h = zeroHashes.get(pageSize);
  if (!h) {
    h = Buffer.alloc(HASH_BYTES);
    hashPages(Buffer.alloc(pageSize), 1, pageSize, h);
    zeroHashes.set(pageSize, h);
  }
  return h;
}

/**
 * Every page's hash against its bytes (zero pages against the zero page's hash). Data pages are packed in page
 * order (decodePageBatch), so a run of them is one comparison of the batch's hashes with the computed ones; only a mismatch looks
 * for its page.
 */
function verifyBatchHashes(batch: DecodedPageBatch, pageSize: number, scratch: Buffer): void {
  const dataPages = batch.data.length / pageSize;
  if (scratch.length < dataPages * HASH_BYTES) throw new Error('scratch hash buffer too small');
  if (dataPages > 0) hashPages(batch.data, dataPages, pageSize, scratch);
  const zero = zeroPageHash(pageSize);
  const expected = batch.hashes;
  const refuse = (i: number): never => {
    throw new FerryError('PAGE_INTEGRITY', {
      side: 'dest',
      detail: `page ${readPageNumber(batch.pageNumbers, i)} (#${i} of the batch) does not match its hash`,
    });
  };
  for (let i = 0; i < batch.count; ) {
    const off = batch.dataOffsets[i]!;
    if (off < 0) {
      if (zero.compare(expected, i * HASH_BYTES, (i + 1) * HASH_BYTES) !== 0) refuse(i);
      i++;
      continue;
    }
    let j = i + 1;
    while (j < batch.count && batch.dataOffsets[j] === off + (j - i) * pageSize) j++;
    const d = off / pageSize;
    if (scratch.compare(expected, i * HASH_BYTES, j * HASH_BYTES, d * HASH_BYTES, (d + j - i) * HASH_BYTES) !== 0) {
      for (let k = i; k < j; k++) if (scratch.compare(expected, k * HASH_BYTES, (k + 1) * HASH_BYTES, (d + k - i) * HASH_BYTES, (d + k - i + 1) * HASH_BYTES) !== 0) refuse(k);
    }
    i = j;
  }
}
