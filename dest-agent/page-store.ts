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
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { hashPages } from '../shared/native/addon.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { PageHashIndex, HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { readPageNumber, type DecodedPageBatch } from '../shared/transport/page-batch.js';

export interface StoreLevel {
  path: string;
  file: FileHandle;
  /** Slots [firstSlot, firstSlot + pages) live in this level, at (slot - firstSlot) * pageSize. */
  firstSlot: number;
  pages: number;
  /** Highest page number in the level: a new page must be above it to join. */
  lastPage: number;
}

const VERIFY_CHUNK_PAGES = 256;

export class TaskPageStore {
  readonly index = new PageHashIndex();
  readonly levels: StoreLevel[] = [];
  /** Page number of every slot (the inverse of the index), for verify() and the chain's pagemaps. */
  private pageOfSlot = new Float64Array(1024);
  private readonly zeroPage: Buffer;

  private constructor(
    readonly task: number,
    private readonly dir: string,
    private readonly pageSize: number,
  ) {
    this.zeroPage = Buffer.alloc(pageSize);
  }

  static open(dir: string, task: number, pageSize: number): Promise<TaskPageStore> {
    return Promise.resolve(new TaskPageStore(task, dir, pageSize));
  }

  slotPage(slot: number): number {
    return this.pageOfSlot[slot]!;
  }

  levelOfSlot(slot: number): number {
    let k = this.levels.length - 1;
    while (k > 0 && this.levels[k]!.firstSlot > slot) k--;
    return k;
  }

  private async newLevel(firstSlot: number): Promise<StoreLevel> {
    const path = join(this.dir, `task-${this.task}.L${this.levels.length}.pages`);
    const level: StoreLevel = { path, file: await open(path, 'w+'), firstSlot, pages: 0, lastPage: -1 };
    this.levels.push(level);
    return level;
  }

  private rememberSlot(slot: number, page: number): void {
    if (slot >= this.pageOfSlot.length) {
      const grown = new Float64Array(this.pageOfSlot.length * 2);
      grown.set(this.pageOfSlot);
      this.pageOfSlot = grown;
    }
    this.pageOfSlot[slot] = page;
  }

  /**
   * Checks every page of the batch against its hash, then stores it. Throws PAGE_INTEGRITY on the first
   * mismatch, before anything of the batch is stored.
   */
  async put(batch: DecodedPageBatch, scratchHashes: Buffer): Promise<void> {
    verifyBatchHashes(batch, this.pageSize, scratchHashes);
    // Consecutive slots of one level become one positioned writev.
    let runLevel: StoreLevel | undefined;
    let runSlot = -1;
    let buffers: Buffer[] = [];
    const flush = async (): Promise<void> => {
      if (runLevel && buffers.length > 0) await runLevel.file.writev(buffers, (runSlot - runLevel.firstSlot) * this.pageSize);
      buffers = [];
    };
    for (let i = 0; i < batch.count; i++) {
      const page = readPageNumber(batch.pageNumbers, i);
      let slot = this.index.slotOf(page);
      let level: StoreLevel;
      if (slot === undefined) {
        let top = this.levels[this.levels.length - 1];
        if (!top || page <= top.lastPage) top = await this.newLevel(this.index.size);
        slot = this.index.set(page, batch.hashes, i * HASH_BYTES);
        this.rememberSlot(slot, page);
        top.pages++;
        top.lastPage = page;
        level = top;
      } else {
        this.index.set(page, batch.hashes, i * HASH_BYTES);
        level = this.levels[this.levelOfSlot(slot)]!;
      }
      const off = batch.dataOffsets[i]!;
      const bytes = off < 0 ? this.zeroPage : batch.data.subarray(off, off + this.pageSize);
      if (level === runLevel && slot === runSlot + buffers.length && buffers.length < 1024) {
        buffers.push(bytes);
      } else {
        await flush();
        runLevel = level;
        runSlot = slot;
        buffers = [bytes];
      }
    }
    await flush();
  }

  /**
   * Reads every level back and checks each page against the hash it arrived with: a disk that damaged
   * a page is caught here, before CRIU restores it silently.
   */
  async verify(): Promise<void> {
    const chunk = Buffer.allocUnsafe(VERIFY_CHUNK_PAGES * this.pageSize);
    const hashes = Buffer.allocUnsafe(VERIFY_CHUNK_PAGES * HASH_BYTES);
    for (const level of this.levels) {
      for (let done = 0; done < level.pages; ) {
        const n = Math.min(VERIFY_CHUNK_PAGES, level.pages - done);
        const { bytesRead } = await level.file.read(chunk, 0, n * this.pageSize, done * this.pageSize);
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
    }
  }

  async close(): Promise<void> {
    for (const level of this.levels) await level.file.close().catch(() => undefined);
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

function verifyBatchHashes(batch: DecodedPageBatch, pageSize: number, scratch: Buffer): void {
  const dataPages = batch.data.length / pageSize;
  if (scratch.length < dataPages * HASH_BYTES) throw new Error('scratch hash buffer too small');
  if (dataPages > 0) hashPages(batch.data, dataPages, pageSize, scratch);
  const zero = zeroPageHash(pageSize);
  for (let i = 0; i < batch.count; i++) {
    const off = batch.dataOffsets[i]!;
    const expected = batch.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
    const actual = off < 0 ? zero : scratch.subarray((off / pageSize) * HASH_BYTES, (off / pageSize + 1) * HASH_BYTES);
    if (!expected.equals(actual)) {
      throw new FerryError('PAGE_INTEGRITY', {
        side: 'dest',
        detail: `page ${readPageNumber(batch.pageNumbers, i)} (#${i} of the batch) does not match its hash`,
      });
    }
  }
}
