/**
 * The pages the dest has received for one task of one migration: a slot file (one page per slot, a page that
 * is sent again overwrites its slot) plus the page -> (slot, hash) index. Every page's hash was checked on
 * arrival; rebuild checks it again on the way out, so a damaged store is caught before CRIU sees it.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { hashPages } from '../shared/native/addon.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { PageHashIndex, HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { readPageNumber, type DecodedPages } from '../shared/transport/page-batch.js';

export class TaskPageStore {
  readonly index = new PageHashIndex();
  private readonly zeroPage: Buffer;

  private constructor(
    readonly task: number,
    readonly path: string,
    private readonly file: FileHandle,
    private readonly pageSize: number,
  ) {
    this.zeroPage = Buffer.alloc(pageSize);
  }

  static async open(dir: string, task: number, pageSize: number): Promise<TaskPageStore> {
    const path = join(dir, `task-${task}.pages`);
    return new TaskPageStore(task, path, await open(path, 'w+'), pageSize);
  }

  /**
   * Checks every page of the batch against its hash, then stores it. Throws PAGE_INTEGRITY on the first
   * mismatch, before anything of the batch is stored.
   */
  async put(batch: DecodedPages, scratchHashes: Buffer): Promise<void> {
    verifyBatchHashes(batch, this.pageSize, scratchHashes);
    // Consecutive slots become one positioned writev: new pages take consecutive slots.
    let runSlot = -1;
    let buffers: Buffer[] = [];
    const flush = async (): Promise<void> => {
      if (buffers.length > 0) await this.file.writev(buffers, runSlot * this.pageSize);
      buffers = [];
    };
    for (let i = 0; i < batch.count; i++) {
      const page = readPageNumber(batch.pageNumbers, i);
      const slot = this.index.set(page, batch.hashes, i * HASH_BYTES);
      const off = batch.dataOffsets[i]!;
      const bytes = off < 0 ? this.zeroPage : batch.data.subarray(off, off + this.pageSize);
      if (buffers.length > 0 && slot === runSlot + buffers.length && buffers.length < 1024) {
        buffers.push(bytes);
      } else {
        await flush();
        runSlot = slot;
        buffers = [bytes];
      }
    }
    await flush();
  }

  /** Reads `count` stored slots starting at `slot` into `into` (they must be consecutive slots). */
  async readSlots(slot: number, count: number, into: Buffer, offset: number): Promise<void> {
    const want = count * this.pageSize;
    const { bytesRead } = await this.file.read(into, offset, want, slot * this.pageSize);
    if (bytesRead !== want) {
      throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `${this.path}: short read at slot ${slot}` });
    }
  }

  async close(): Promise<void> {
    await this.file.close();
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

function verifyBatchHashes(batch: DecodedPages, pageSize: number, scratch: Buffer): void {
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
