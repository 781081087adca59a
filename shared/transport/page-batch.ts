/**
 * The page batch and its codec, both ends side by side (see PageBatch in ferry.proto): page numbers as u64 LE,
 * 16-byte hashes, one kind byte per page, and the bytes of the non-zero pages back to back. The source encodes
 * (PageBatchEncoder), the dest decodes (decodePageBatch). Encoding never goes through BigInt.
 */
import { FerryError } from '../errors/ferry-error.js';
import { copyHashBytes, HASH_BYTES } from '../pages/page-hash-index.js';

export const PAGE_KIND_DATA = 0;
export const PAGE_KIND_ZERO = 1;

/** Pages per batch: with 4 KiB pages about 1 MiB of data, well under the max message size. */
export const BATCH_PAGES = 256;

type BatchBuffers = Record<'pageNumbers' | 'hashes' | 'kinds' | 'data', Buffer>;

/** Given-back batch buffers an encoder keeps for reuse (PageBatch.release). */
const MAX_SPARE_BATCHES = 8;

/** Wire bytes each page costs besides its data: page number, hash, kind. */
export const PAGE_ENTRY_BYTES = 8 + HASH_BYTES + 1;

/**
 * Bytes kept free in front of each batch's data, in the same buffer: room for a transport to lay the page entries
 * and its own header of the batch right before the data, so that the batch goes out as one buffer (a TLS socket
 * copies the buffers of one write into one before it encrypts them: a second pass over every page byte).
 */
export const BATCH_HEADROOM = 64 + BATCH_PAGES * PAGE_ENTRY_BYTES;

/** 5-level paging caps user addresses at 2^57; with 4 KiB pages no valid page number reaches 2^45. */
const MAX_PAGE_NUMBER_HI_WORD = 2 ** 13;
const TWO_32 = 2 ** 32;

/** One task's pages as they travel: the page fields of the PageBatch message. */
export interface PageBatch {
  pageNumbers: Buffer;
  hashes: Buffer;
  kinds: Buffer;
  data: Buffer;
  /**
   * Set by PageBatchEncoder: the stream calls it once nothing reads the batch's buffers any more (its bytes are
   * written out), and the encoder fills them again for a later batch. A stream that never calls it costs fresh
   * buffers per batch, as before.
   */
  release?: (() => void) | undefined;
  /**
   * Set by PageBatchEncoder: bytes in front of `data` in its ArrayBuffer that nothing else uses, for the transport
   * to write its header into until it releases the batch (BATCH_HEADROOM).
   */
  headroom?: number | undefined;
}

/** A batch whose layout was checked on arrival. */
export interface DecodedPageBatch extends PageBatch {
  count: number;
  /** Offset in `data` of each page, or -1 for a zero page. */
  dataOffsets: Int32Array;
}

export function writePageNumber(buf: Buffer, index: number, page: number): void {
  buf.writeUInt32LE(page % TWO_32, index * 8);
  buf.writeUInt32LE(Math.floor(page / TWO_32), index * 8 + 4);
}

export function readPageNumber(buf: Buffer, index: number): number {
  return buf.readUInt32LE(index * 8 + 4) * TWO_32 + buf.readUInt32LE(index * 8);
}

/** Pages in a batch (one page number of 8 bytes each). */
export function batchPageCount(batch: PageBatch): number {
  return batch.pageNumbers.length / 8;
}

/**
 * Collects one task's pages into batches of at most BATCH_PAGES and hands each full batch to `emit`; flush()
 * emits the rest. Zero pages travel as a flag without their bytes.
 */
export class PageBatchEncoder {
  private pageNumbers: Buffer = Buffer.allocUnsafe(BATCH_PAGES * 8);
  private hashes: Buffer = Buffer.allocUnsafe(BATCH_PAGES * HASH_BYTES);
  private kinds: Buffer = Buffer.allocUnsafe(BATCH_PAGES);
  private data: Buffer;
  /** Buffers of sent batches their stream gave back (PageBatch.release). */
  private readonly spare: BatchBuffers[] = [];
  private count = 0;
  private dataBytes = 0;
  /** Pages added (emitted or pending), the zero ones among them, and the data bytes emitted. */
  pages = 0;
  zeroPages = 0;
  bytes = 0;

  constructor(
    private readonly pageSize: number,
    private readonly emit: (batch: PageBatch) => Promise<void>,
  ) {
    this.data = this.dataBuffer();
  }

  /** A batch's data buffer, with BATCH_HEADROOM free bytes in front of it (a buffer of its own, not the pool's). */
  private dataBuffer(): Buffer {
    return Buffer.allocUnsafeSlow(BATCH_HEADROOM + BATCH_PAGES * this.pageSize).subarray(BATCH_HEADROOM);
  }

  /**
   * Copies the page (hash and, unless zero, bytes) in: the caller may reuse its buffers once this returns. When the
   * page fills the batch, the batch is emitted and its promise returned (await it before the next add); else
   * undefined.
   */
  add(page: number, hashes: Buffer, hashOffset: number, src: Buffer, srcOffset: number, isZero: boolean): Promise<void> | undefined {
    writePageNumber(this.pageNumbers, this.count, page);
    copyHashBytes(hashes, hashOffset, this.hashes, this.count * HASH_BYTES);
    if (isZero) {
      this.kinds[this.count] = PAGE_KIND_ZERO;
      this.zeroPages++;
    } else {
      this.kinds[this.count] = PAGE_KIND_DATA;
      src.copy(this.data, this.dataBytes, srcOffset, srcOffset + this.pageSize);
      this.dataBytes += this.pageSize;
    }
    this.count++;
    this.pages++;
    return this.count === BATCH_PAGES ? this.flush() : undefined;
  }

  async flush(): Promise<void> {
    if (this.count === 0) return;
    const sent = { pageNumbers: this.pageNumbers, hashes: this.hashes, kinds: this.kinds, data: this.data };
    let released = false;
    const batch: PageBatch = {
      pageNumbers: this.pageNumbers.subarray(0, this.count * 8),
      hashes: this.hashes.subarray(0, this.count * HASH_BYTES),
      kinds: this.kinds.subarray(0, this.count),
      data: this.data.subarray(0, this.dataBytes),
      headroom: BATCH_HEADROOM,
      release: () => {
        if (released) return;
        released = true;
        if (this.spare.length < MAX_SPARE_BATCHES) this.spare.push(sent);
      },
    };
    this.bytes += this.dataBytes;
    // The sent buffers belong to the stream from now on: the next batch gets given-back or fresh ones.
    const next = this.spare.pop();
    this.pageNumbers = next?.pageNumbers ?? Buffer.allocUnsafe(BATCH_PAGES * 8);
    this.hashes = next?.hashes ?? Buffer.allocUnsafe(BATCH_PAGES * HASH_BYTES);
    this.kinds = next?.kinds ?? Buffer.allocUnsafe(BATCH_PAGES);
    this.data = next?.data ?? this.dataBuffer();
    this.count = 0;
    this.dataBytes = 0;
    await this.emit(batch);
  }
}

/** Validates a received batch's layout; a malformed batch is rejected whole (IMAGE_INVALID is for images). */
export function decodePageBatch(b: PageBatch, pageSize: number): DecodedPageBatch {
  const fail = (why: string): never => {
    throw new FerryError('PAGE_INTEGRITY', { message: `Malformed page batch: ${why}`, phase: 'precopy', side: 'dest' });
  };
  if (b.pageNumbers.length % 8 !== 0) fail('page_numbers is not a multiple of 8 bytes');
  const count = batchPageCount(b);
  if (b.hashes.length !== count * HASH_BYTES) fail(`${b.hashes.length} hash bytes for ${count} pages`);
  if (b.kinds.length !== count) fail(`${b.kinds.length} kinds for ${count} pages`);
  const dataOffsets = new Int32Array(count);
  let offset = 0;
  for (let i = 0; i < count; i++) {
    if (b.pageNumbers.readUInt32LE(i * 8 + 4) >= MAX_PAGE_NUMBER_HI_WORD) fail(`page number out of range at ${i}`);
    const kind = b.kinds[i];
    if (kind === PAGE_KIND_DATA) {
      dataOffsets[i] = offset;
      offset += pageSize;
    } else if (kind === PAGE_KIND_ZERO) {
      dataOffsets[i] = -1;
    } else {
      fail(`unknown page kind ${kind}`);
    }
  }
  if (b.data.length !== offset) fail(`${b.data.length} data bytes, expected ${offset}`);
  return { count, pageNumbers: b.pageNumbers, hashes: b.hashes, kinds: b.kinds, data: b.data, dataOffsets };
}
