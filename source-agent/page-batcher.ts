/**
 * Collects pages into wire batches (<= 256 pages, about 1 MiB of data) for one task and hands each full batch
 * to the sender. Zero pages travel as a flag without their bytes.
 */
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { PAGE_KIND_DATA, PAGE_KIND_ZERO, writePageNumber } from '../shared/transport/page-batch.js';
import type { OutgoingPages } from './page-sender.js';

export const BATCH_PAGES = 256;

export class PageBatcher {
  private pageNumbers = Buffer.allocUnsafe(BATCH_PAGES * 8);
  private hashes = Buffer.allocUnsafe(BATCH_PAGES * HASH_BYTES);
  private kinds = Buffer.allocUnsafe(BATCH_PAGES);
  private data: Buffer;
  private count = 0;
  private dataBytes = 0;
  pages = 0;
  zeroPages = 0;
  bytes = 0;

  constructor(
    private readonly pageSize: number,
    private readonly emit: (pages: OutgoingPages) => Promise<void>,
  ) {
    this.data = Buffer.allocUnsafe(BATCH_PAGES * pageSize);
  }

  async add(page: number, hashes: Buffer, hashOffset: number, src: Buffer, srcOffset: number, isZero: boolean): Promise<void> {
    writePageNumber(this.pageNumbers, this.count, page);
    hashes.copy(this.hashes, this.count * HASH_BYTES, hashOffset, hashOffset + HASH_BYTES);
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
    if (this.count === BATCH_PAGES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.count === 0) return;
    const batch: OutgoingPages = {
      count: this.count,
      pageNumbers: this.pageNumbers.subarray(0, this.count * 8),
      hashes: this.hashes.subarray(0, this.count * HASH_BYTES),
      kinds: this.kinds.subarray(0, this.count),
      data: this.data.subarray(0, this.dataBytes),
    };
    this.bytes += this.dataBytes;
    // The sent buffers belong to the stream from now on: the next batch gets fresh ones.
    this.pageNumbers = Buffer.allocUnsafe(BATCH_PAGES * 8);
    this.hashes = Buffer.allocUnsafe(BATCH_PAGES * HASH_BYTES);
    this.kinds = Buffer.allocUnsafe(BATCH_PAGES);
    this.data = Buffer.allocUnsafe(BATCH_PAGES * this.pageSize);
    this.count = 0;
    this.dataBytes = 0;
    await this.emit(batch);
  }
}
