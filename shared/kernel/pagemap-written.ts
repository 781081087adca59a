/**
 * PAGEMAP_SCAN in write-protect mode: "which pages of this uffd-WP-registered range were written since the last
 * scan", re-protecting them in the same atomic step (PM_SCAN_WP_MATCHING). With PM_SCAN_CHECK_WPASYNC the
 * kernel answers EPERM when part of the range is not registered with an async-WP uffd (e.g. a MAP_FIXED
 * replaced it), instead of skipping it silently: callers scan one VMA at a time and re-register on EPERM.
 *
 * The first scan of a newly registered range reports every page that has a PTE without the WP bit (all its
 * present pages, plus empty PTEs inside existing page tables) and arms them: that is the "send it whole" a new
 * VMA needs (uffd-lab §2.4). The ioctl itself is pagemap-scan.ts's.
 */
import { closeSync, openSync } from 'node:fs';
import { systemCallErrorFromNode } from '../native/libc.js';
import { PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING, PagemapScanCall } from './pagemap-scan.js';
import { appendRun, emptyRuns, type PageRuns } from './pagemap.js';

export { PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING } from './pagemap-scan.js';

/** An open /proc/PID/pagemap used for write-protecting scans. close() when done. */
export class WrittenPagesScanner {
  private fd: number;
  private readonly call: PagemapScanCall;

  constructor(
    readonly pid: number,
    path = `/proc/${pid}/pagemap`,
  ) {
    try {
      this.fd = openSync(path, 'r');
    } catch (e) {
      throw systemCallErrorFromNode('open', e, path) ?? e;
    }
    this.call = new PagemapScanCall(this.fd, pid, 'WP');
  }

  /**
   * Appends the written pages of [startPage, endPage) to `out` (in order) and write-protects them again.
   * Throws SystemCallError EPERM when part of the range is not registered for async WP.
   */
  scan(startPage: number, endPage: number, out: PageRuns): void {
    if (this.fd < 0) throw new Error('WrittenPagesScanner is closed');
    this.call.scan(
      startPage,
      endPage,
      { flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, categoryMask: PAGE_IS_WRITTEN, returnMask: PAGE_IS_WRITTEN },
      (first, stop) => appendRun(out, first, stop - first),
    );
  }

  /** ioctl calls made by this scanner (tests and stats). */
  get calls(): number {
    return this.call.calls;
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
