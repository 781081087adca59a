/**
 * PAGEMAP_SCAN in write-protect mode: "which pages of this uffd-WP-registered range were written since the last
 * scan", re-protecting them in the same atomic step (PM_SCAN_WP_MATCHING). With PM_SCAN_CHECK_WPASYNC the
 * kernel answers EPERM when part of the range is not registered with an async-WP uffd (e.g. a MAP_FIXED
 * replaced it), instead of skipping it silently: callers scan one VMA at a time and re-register on EPERM.
 *
 * The first scan of a newly registered range reports every page that has a PTE without the WP bit (all its
 * present pages, plus empty PTEs inside existing page tables) and arms them: that is the "send it whole" a new
 * VMA needs (uffd-lab §2.4). pagemap.ts holds the report-only scan; the pm_scan_arg layout is the same.
 */
import { closeSync, openSync } from 'node:fs';
import { addressOf, ioctlPointer, systemCallErrorFromNode, type Address } from '../native/libc.js';
import { appendRun, emptyRuns, type PageRuns } from './pagemap.js';
import { pageAddressHi, pageAddressLo, pageOfAddress } from './proc-maps.js';

const PAGEMAP_SCAN = 0xc0606610; // _IOWR('f', 16, struct pm_scan_arg), 96 bytes
const PM_SCAN_ARG_BYTES = 96;
const PAGE_REGION_BYTES = 24;
export const PM_SCAN_WP_MATCHING = 1;
export const PM_SCAN_CHECK_WPASYNC = 2;
export const PAGE_IS_WRITTEN = 2;
/** Regions per ioctl; the walk resumes at walk_end while the vector comes back full. */
const SCAN_REGIONS = 4096;

/** An open /proc/PID/pagemap used for write-protecting scans. close() when done. */
export class WrittenPagesScanner {
  private fd: number;
  private readonly arg = Buffer.alloc(PM_SCAN_ARG_BYTES);
  private readonly vec = Buffer.alloc(SCAN_REGIONS * PAGE_REGION_BYTES);
  private readonly vecAddress: Address;
  /** ioctl calls made by this scanner (tests and stats). */
  calls = 0;

  constructor(
    readonly pid: number,
    path = `/proc/${pid}/pagemap`,
  ) {
    try {
      this.fd = openSync(path, 'r');
    } catch (e) {
      throw systemCallErrorFromNode('open', e, path) ?? e;
    }
    this.vecAddress = addressOf(this.vec);
  }

  /**
   * Appends the written pages of [startPage, endPage) to `out` (in order) and write-protects them again.
   * Throws SystemCallError EPERM when part of the range is not registered for async WP.
   */
  scan(startPage: number, endPage: number, out: PageRuns): void {
    if (this.fd < 0) throw new Error('WrittenPagesScanner is closed');
    const arg = new DataView(this.arg.buffer, this.arg.byteOffset, PM_SCAN_ARG_BYTES);
    const vec = new DataView(this.vec.buffer, this.vec.byteOffset, this.vec.byteLength);
    let cursor = startPage;
    while (cursor < endPage) {
      this.arg.fill(0);
      arg.setUint32(0, PM_SCAN_ARG_BYTES, true); // size
      arg.setUint32(8, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, true); // flags
      arg.setUint32(16, pageAddressLo(cursor), true); // start
      arg.setUint32(20, pageAddressHi(cursor), true);
      arg.setUint32(24, pageAddressLo(endPage), true); // end
      arg.setUint32(28, pageAddressHi(endPage), true);
      arg.setUint32(40, this.vecAddress.lo, true); // vec
      arg.setUint32(44, this.vecAddress.hi, true);
      arg.setUint32(48, SCAN_REGIONS, true); // vec_len
      arg.setUint32(72, PAGE_IS_WRITTEN, true); // category_mask
      arg.setUint32(88, PAGE_IS_WRITTEN, true); // return_mask
      const regions = ioctlPointer(this.fd, PAGEMAP_SCAN, this.arg, `PAGEMAP_SCAN(WP) /proc/${this.pid}/pagemap`);
      this.calls++;
      for (let i = 0; i < regions; i++) {
        const o = i * PAGE_REGION_BYTES;
        const first = pageOfAddress(vec.getUint32(o, true), vec.getUint32(o + 4, true));
        const end = pageOfAddress(vec.getUint32(o + 8, true), vec.getUint32(o + 12, true));
        appendRun(out, first, end - first);
      }
      const walkEnd = pageOfAddress(arg.getUint32(32, true), arg.getUint32(36, true));
      if (walkEnd <= cursor) throw new Error(`PAGEMAP_SCAN made no progress at page ${cursor} of pid ${this.pid}`);
      cursor = walkEnd;
    }
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** The pages in both `a` and `b` (each ascending and non-overlapping), as runs. */
export function intersectRuns(a: PageRuns, b: PageRuns): PageRuns {
  const out = emptyRuns();
  let i = 0;
  let j = 0;
  while (i < a.starts.length && j < b.starts.length) {
    const aStart = a.starts[i]!;
    const aEnd = aStart + a.counts[i]!;
    const bStart = b.starts[j]!;
    const bEnd = bStart + b.counts[j]!;
    const start = Math.max(aStart, bStart);
    const end = Math.min(aEnd, bEnd);
    if (end > start) appendRun(out, start, end - start);
    if (aEnd <= bEnd) i++;
    else j++;
  }
  return out;
}

/** Union of two run lists (each ascending, non-overlapping). */
export function unionRuns(a: PageRuns, b: PageRuns): PageRuns {
  if (b.starts.length === 0) return a;
  if (a.starts.length === 0) return b;
  const all: [number, number][] = [];
  for (let i = 0; i < a.starts.length; i++) all.push([a.starts[i]!, a.starts[i]! + a.counts[i]!]);
  for (let i = 0; i < b.starts.length; i++) all.push([b.starts[i]!, b.starts[i]! + b.counts[i]!]);
  all.sort((x, y) => x[0] - y[0]);
  const out = emptyRuns();
  let [curStart, curEnd] = all[0]!;
  for (const [s, e] of all.slice(1)) {
    if (s <= curEnd) curEnd = Math.max(curEnd, e);
    else {
      appendRun(out, curStart, curEnd - curStart);
      [curStart, curEnd] = [s, e];
    }
  }
  appendRun(out, curStart, curEnd - curStart);
  return out;
}
