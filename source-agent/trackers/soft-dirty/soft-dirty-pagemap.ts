/**
 * Soft-dirty in /proc/PID/pagemap: bit 55 of an entry is set when the page was written (or faulted in, moved by
 * mremap, or lies in an area created or grown) since the last `echo 4 > /proc/PID/clear_refs`. A swapped-out
 * page keeps its bit in the swap entry, and a written transparent huge page marks all its 4 KiB entries.
 *
 * Two methods, same answer, as in shared/kernel/pagemap.ts (whose PAGEMAP_SCAN reader is fixed to the presence
 * query, hence this file's own ioctl):
 * - 'scan': PAGEMAP_SCAN (Linux >= 6.7) asking for PAGE_IS_SOFT_DIRTY pages that are present or swapped;
 * - 'pread': 8-byte entries decoded from the high 32-bit words, giving presence and soft-dirty in one pass.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { SystemCallError } from '../../../shared/errors/ferry-error.js';
import { Errno, errnoName, systemCallErrorFromNode } from '../../../shared/native/libc.js';
import { PagemapReader, appendRun, emptyRuns, entryCounts, vmaSpans, type PageRuns, type PagemapMethod } from '../../../shared/kernel/pagemap.js';
import { zeroPagePfn } from '../../../shared/kernel/zero-page.js';
import {
  PAGE_IS_FILE,
  PAGE_IS_PFNZERO,
  PAGE_IS_PRESENT,
  PAGE_IS_SOFT_DIRTY,
  PAGE_IS_SWAPPED,
  PagemapScanCall,
  pagemapBlock,
  preadPagemap,
} from '../../../shared/kernel/pagemap-scan.js';
import type { Vma } from '../../../shared/kernel/proc-maps.js';

// pagemap entry bit, as seen in the high 32-bit word of each 64-bit entry.
export const PM_SOFT_DIRTY_HI = 1 << 23; // bit 55

/**
 * Decodes pagemap entries (8 bytes each, the first for page `firstPage`): appends to `present` the pages that hold
 * dumpable data and to `dirty` those of them that are soft-dirty. Only the high words are read: no BigInt.
 */
export function decodeSoftDirtyEntries(buf: Uint8Array, firstPage: number, present: PageRuns, dirty: PageRuns, zeroPfn?: number): void {
  const n = Math.floor(buf.byteLength / 8);
  // A Uint32Array view needs 4-byte alignment; an unaligned Buffer is copied first.
  const bytes = buf.byteOffset % 4 === 0 ? buf : new Uint8Array(buf.subarray(0, n * 8));
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n * 2);
  let presentStart = -1;
  let dirtyStart = -1;
  for (let i = 0; i < n; i++) {
    const hi = words[2 * i + 1] ?? 0;
    // Presence is CRIU's page rule, as pagemap.ts applies it.
    const isPresent = entryCounts(words[2 * i] ?? 0, hi, zeroPfn);
    const isDirty = isPresent && (hi & PM_SOFT_DIRTY_HI) !== 0;
    if (isPresent) {
      if (presentStart < 0) presentStart = i;
    } else if (presentStart >= 0) {
      appendRun(present, firstPage + presentStart, i - presentStart);
      presentStart = -1;
    }
    if (isDirty) {
      if (dirtyStart < 0) dirtyStart = i;
    } else if (dirtyStart >= 0) {
      appendRun(dirty, firstPage + dirtyStart, i - dirtyStart);
      dirtyStart = -1;
    }
  }
  if (presentStart >= 0) appendRun(present, firstPage + presentStart, n - presentStart);
  if (dirtyStart >= 0) appendRun(dirty, firstPage + dirtyStart, n - dirtyStart);
}

/** The pages in `a` that are not in `b` (both ascending, non-overlapping), as runs. */
export function subtractRuns(a: PageRuns, b: PageRuns): PageRuns {
  const out = emptyRuns();
  let j = 0;
  for (let i = 0; i < a.starts.length; i++) {
    let start = a.starts[i]!;
    const end = start + a.counts[i]!;
    while (j < b.starts.length && b.starts[j]! + b.counts[j]! <= start) j++;
    let k = j;
    while (start < end && k < b.starts.length && b.starts[k]! < end) {
      const bStart = b.starts[k]!;
      const bEnd = bStart + b.counts[k]!;
      if (bStart > start) appendRun(out, start, bStart - start);
      start = Math.max(start, bEnd);
      k++;
    }
    if (start < end) appendRun(out, start, end - start);
  }
  return out;
}

/** The page ranges of `vmas` as runs (adjacent areas merged). */
export function vmaRuns(vmas: readonly Vma[]): PageRuns {
  const out = emptyRuns();
  for (const v of vmas) appendRun(out, v.startPage, v.endPage - v.startPage);
  return out;
}


/** Which method this process uses when none is forced: decided by the first scan. */
let scanWorks: boolean | undefined;

export interface SoftDirtyScan {
  /** Pages holding dumpable data (present or swapped, not page cache). */
  present: PageRuns;
  /** The soft-dirty ones among them. */
  dirty: PageRuns;
  method: PagemapMethod;
}

/** An open /proc/PID/pagemap for soft-dirty queries. close() when done. */
export class SoftDirtyPagemap {
  private fd: number;
  private readonly presence: PagemapReader | undefined;
  private scanner: PagemapScanCall | undefined;
  private block: Buffer | undefined;

  constructor(
    readonly pid: number,
    private readonly forced?: PagemapMethod,
    path = `/proc/${pid}/pagemap`,
  ) {
    try {
      this.fd = openSync(path, 'r');
    } catch (e) {
      throw systemCallErrorFromNode('open', e, path) ?? e;
    }
    // The presence query of the scan method is pagemap.ts's own; with pread one pass gives both.
    if (forced !== 'pread' && scanWorks !== false) this.presence = new PagemapReader(pid, forced ? { method: forced } : {});
  }

  /** Presence and soft-dirty of `vmas` (sorted as maps lists them). */
  scan(vmas: readonly Vma[]): SoftDirtyScan {
    if (this.fd < 0) throw new Error('SoftDirtyPagemap is closed');
    const dirty = emptyRuns();
    if (this.presence && this.forced !== 'pread' && scanWorks !== false) {
      if (this.scanAll(vmas, dirty)) return { present: this.presence.presentRuns(vmas), dirty, method: 'scan' };
      if (this.forced === 'scan') throw new SystemCallError('ioctl', Errno.ENOTTY, errnoName(Errno.ENOTTY), 'this kernel has no PAGEMAP_SCAN');
    }
    const present = emptyRuns();
    for (const [start, end] of vmaSpans(vmas)) this.preadSpan(start, end, present, dirty);
    return { present, dirty, method: 'pread' };
  }

  close(): void {
    this.presence?.close();
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }

  /** PAGEMAP_SCAN for soft-dirty pages; false (and `dirty` empty) when the kernel has no such ioctl. */
  private scanAll(vmas: readonly Vma[], dirty: PageRuns): boolean {
    for (const [start, end] of vmaSpans(vmas)) {
      try {
        this.scanSpan(start, end, dirty);
        scanWorks = true;
      } catch (e) {
        const unsupported = e instanceof SystemCallError && (e.errno === Errno.ENOTTY || e.errno === Errno.EINVAL);
        if (!unsupported || scanWorks === true) throw e;
        scanWorks = false;
        dirty.starts.length = 0;
        dirty.counts.length = 0;
        return false;
      }
    }
    return true;
  }

  private scanSpan(start: number, end: number, out: PageRuns): void {
    this.scanner ??= new PagemapScanCall(this.fd, this.pid, 'soft-dirty');
    // Not a page-cache page nor the zero page, soft-dirty, and present or swapped.
    const excluded = PAGE_IS_FILE | PAGE_IS_PFNZERO;
    this.scanner.scan(
      start,
      end,
      { categoryInverted: excluded, categoryMask: excluded | PAGE_IS_SOFT_DIRTY, categoryAnyofMask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED, returnMask: PAGE_IS_SOFT_DIRTY },
      (first, stop) => appendRun(out, first, stop - first),
    );
  }

  private preadSpan(start: number, end: number, present: PageRuns, dirty: PageRuns): void {
    const zeroPfn = zeroPagePfn();
    preadPagemap(this.fd, this.pid, (this.block ??= pagemapBlock()), start, end, (entries, first) => decodeSoftDirtyEntries(entries, first, present, dirty, zeroPfn));
  }

}


/**
 * Starts a new soft-dirty period for a process: `echo 4 > /proc/PID/clear_refs`. False when the process is gone.
 */
export function clearSoftDirty(pid: number | 'self'): boolean {
  const path = `/proc/${pid}/clear_refs`;
  let fd: number;
  try {
    fd = openSync(path, 'w');
  } catch (e) {
    const err = systemCallErrorFromNode('open', e, path);
    if (err?.errnoName === 'ENOENT' || err?.errnoName === 'ESRCH') return false;
    throw err ?? e;
  }
  try {
    writeSync(fd, '4');
    return true;
  } catch (e) {
    const err = systemCallErrorFromNode('write', e, path);
    if (err?.errnoName === 'ESRCH') return false;
    throw err ?? e;
  } finally {
    closeSync(fd);
  }
}
