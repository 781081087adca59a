/**
 * The page-batch wire layout (see PageBatch in ferry.proto): page numbers as u64 LE, 16-byte hashes, one kind
 * byte per page, and the bytes of the non-zero pages back to back. Encoding never goes through BigInt.
 */
import { FerryError } from '../errors/ferry-error.js';
import { HASH_BYTES } from '../pages/page-hash-index.js';

export const PAGE_KIND_DATA = 0;
export const PAGE_KIND_ZERO = 1;

/** 5-level paging caps user addresses at 2^57; with 4 KiB pages no valid page number reaches 2^45. */
const MAX_PAGE_NUMBER_HI_WORD = 2 ** 13;
const TWO_32 = 2 ** 32;

export function writePageNumber(buf: Buffer, index: number, page: number): void {
  buf.writeUInt32LE(page % TWO_32, index * 8);
  buf.writeUInt32LE(Math.floor(page / TWO_32), index * 8 + 4);
}

export function readPageNumber(buf: Buffer, index: number): number {
  return buf.readUInt32LE(index * 8 + 4) * TWO_32 + buf.readUInt32LE(index * 8);
}

export interface DecodedPages {
  count: number;
  pageNumbers: Buffer;
  hashes: Buffer;
  kinds: Buffer;
  data: Buffer;
  /** Offset in `data` of each page, or -1 for a zero page. */
  dataOffsets: Int32Array;
}

/** Validates a received batch's layout; a malformed batch is rejected whole (IMAGE_INVALID is for images). */
export function decodePages(
  b: { pageNumbers: Buffer; hashes: Buffer; kinds: Buffer; data: Buffer },
  pageSize: number,
): DecodedPages {
  const fail = (why: string): never => {
    throw new FerryError('PAGE_INTEGRITY', { message: `Malformed page batch: ${why}`, phase: 'precopy', side: 'dest' });
  };
  if (b.pageNumbers.length % 8 !== 0) fail('page_numbers is not a multiple of 8 bytes');
  const count = b.pageNumbers.length / 8;
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
