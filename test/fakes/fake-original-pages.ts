/**
 * The frozen original's memory as a lazy restore's fill reads it (an OriginalPageReader), without a process:
 * page p holds the byte p & 0xff throughout; and the hashes a manifest holds for such pages.
 */
import { hashPages } from '../../shared/native/addon.js';

export const PAGE = 4096;

export function originalPages(_pid: number, first: number, count: number): { data: Buffer; pages: Float64Array; unreadable: number[] }[] {
  const data = Buffer.alloc(count * PAGE);
  const pages = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    data.fill((first + i) & 0xff, i * PAGE, (i + 1) * PAGE);
    pages[i] = first + i;
  }
  return [{ data, pages, unreadable: [] }];
}

/** XXH3-128 of `count` pages from `first` of originalPages. */
export function originalHashes(first: number, count: number): Buffer {
  const hashes = Buffer.alloc(count * 16);
  hashPages(originalPages(0, first, count)[0]!.data, count, PAGE, hashes);
  return hashes;
}
