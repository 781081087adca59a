/**
 * The two ways of asking /proc/PID/pagemap, shared by every reader (presence in pagemap.ts, written pages in
 * pagemap-written.ts, soft-dirty pages in the soft-dirty tracker):
 * - PagemapScanCall: the PAGEMAP_SCAN ioctl (Linux >= 6.7), run-length answers, resumed at walk_end while the
 *   region vector comes back full;
 * - preadPagemap: 8-byte entries read in blocks, handed to a decoder.
 * Constants from uapi linux/fs.h: PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg), sizeof == 96.
 */
import { readSync } from 'node:fs';
import { SystemCallError } from '../errors/ferry-error.js';
import { Errno, addressOf, errnoName, ioctlPointer, systemCallErrorFromNode, type Address } from '../native/libc.js';
import { pageAddressHi, pageAddressLo, pageOfAddress } from './proc-maps.js';

const PAGEMAP_SCAN = 0xc0606610;
const PM_SCAN_ARG_BYTES = 96;
const PAGE_REGION_BYTES = 24; // struct page_region { u64 start, end, categories; }
/** Regions returned per ioctl; a fragmented area takes several calls. */
const SCAN_REGIONS = 4096;
/** pagemap entries per pread: 64 KiB, well above the 4096 entries below which syscall cost dominates. */
const BLOCK_ENTRIES = 8192;

export const PAGE_IS_WPALLOWED = 1 << 0;
export const PAGE_IS_WRITTEN = 1 << 1;
export const PAGE_IS_FILE = 1 << 2;
export const PAGE_IS_PRESENT = 1 << 3;
export const PAGE_IS_SWAPPED = 1 << 4;
export const PAGE_IS_PFNZERO = 1 << 5;
export const PAGE_IS_HUGE = 1 << 6;
export const PAGE_IS_SOFT_DIRTY = 1 << 7;
export const PAGE_IS_GUARD = 1 << 8; // Linux >= 6.15; older kernels reject unknown categories with EINVAL
export const PM_SCAN_WP_MATCHING = 1;
export const PM_SCAN_CHECK_WPASYNC = 2;

/** The pm_scan_arg fields a caller chooses (all category masks are PAGE_IS_* bits). */
export interface ScanQuery {
  flags?: number;
  categoryInverted?: number;
  categoryMask?: number;
  categoryAnyofMask?: number;
  returnMask: number;
}

function writeU32Pair(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value % 2 ** 32, true);
  view.setUint32(offset + 4, Math.floor(value / 2 ** 32), true);
}

function writePageAddress(view: DataView, offset: number, page: number): void {
  view.setUint32(offset, pageAddressLo(page), true);
  view.setUint32(offset + 4, pageAddressHi(page), true);
}

function readPageAddress(view: DataView, offset: number): number {
  return pageOfAddress(view.getUint32(offset, true), view.getUint32(offset + 4, true));
}

/** One pagemap fd's PAGEMAP_SCAN buffers (the argument and the region vector), reused across calls. */
export class PagemapScanCall {
  private readonly arg = Buffer.alloc(PM_SCAN_ARG_BYTES);
  private readonly vec = Buffer.alloc(SCAN_REGIONS * PAGE_REGION_BYTES);
  private readonly vecAddress: Address = addressOf(this.vec);
  /** ioctl calls made (tests and stats). */
  calls = 0;

  constructor(
    private readonly fd: number,
    private readonly pid: number,
    private readonly what: string,
  ) {}

  /** Reports each matching region of pages [start, end) in address order, with its returned categories. Throws SystemCallError. */
  scan(start: number, end: number, q: ScanQuery, onRegion: (firstPage: number, endPage: number, categories: number) => void): void {
    const arg = new DataView(this.arg.buffer, this.arg.byteOffset, PM_SCAN_ARG_BYTES);
    const vec = new DataView(this.vec.buffer, this.vec.byteOffset, this.vec.byteLength);
    let cursor = start;
    while (cursor < end) {
      this.arg.fill(0);
      writeU32Pair(arg, 0, PM_SCAN_ARG_BYTES); // size
      writeU32Pair(arg, 8, q.flags ?? 0); // flags
      writePageAddress(arg, 16, cursor); // start
      writePageAddress(arg, 24, end); // end; walk_end (32) is set by the kernel
      arg.setUint32(40, this.vecAddress.lo, true); // vec
      arg.setUint32(44, this.vecAddress.hi, true);
      writeU32Pair(arg, 48, SCAN_REGIONS); // vec_len; max_pages (56) = 0: no limit
      writeU32Pair(arg, 64, q.categoryInverted ?? 0);
      writeU32Pair(arg, 72, q.categoryMask ?? 0);
      writeU32Pair(arg, 80, q.categoryAnyofMask ?? 0);
      writeU32Pair(arg, 88, q.returnMask);
      const regions = ioctlPointer(this.fd, PAGEMAP_SCAN, this.arg, `PAGEMAP_SCAN(${this.what}) /proc/${this.pid}/pagemap`);
      this.calls++;
      for (let i = 0; i < regions; i++) {
        const at = i * PAGE_REGION_BYTES;
        onRegion(readPageAddress(vec, at), readPageAddress(vec, at + 8), vec.getUint32(at + 16, true)); // every PAGE_IS_* bit is below 2^32
      }
      const walkEnd = readPageAddress(arg, 32);
      // The walk stops early only when vec fills up, which always moves walk_end forward.
      if (walkEnd <= cursor) throw new Error(`PAGEMAP_SCAN made no progress at page ${cursor} of pid ${this.pid}`);
      cursor = walkEnd;
    }
  }
}

/** Reads the entries of pages [start, end) in blocks and hands each block to `decode` with its first page. */
export function preadPagemap(fd: number, pid: number, block: Buffer, start: number, end: number, decode: (entries: Buffer, firstPage: number) => void): void {
  const blockEntries = Math.min(BLOCK_ENTRIES, Math.floor(block.length / 8));
  for (let page = start; page < end; ) {
    const entries = Math.min(blockEntries, end - page);
    let got: number;
    try {
      // Offsets are page * 8 < 2^48: exact as a number.
      got = readSync(fd, block, 0, entries * 8, page * 8);
    } catch (e) {
      throw systemCallErrorFromNode('pread', e, `/proc/${pid}/pagemap`) ?? e;
    }
    // pagemap reports holes as zero entries, so a short read only happens once the task's mm is gone.
    if (got < 8) throw new SystemCallError('pread', Errno.ESRCH, errnoName(Errno.ESRCH), `/proc/${pid}/pagemap: task exited`);
    const decoded = Math.floor(got / 8);
    decode(block.subarray(0, decoded * 8), page);
    page += decoded;
  }
}

export function pagemapBlock(): Buffer {
  return Buffer.alloc(BLOCK_ENTRIES * 8);
}
