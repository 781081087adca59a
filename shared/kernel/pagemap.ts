/**
 * /proc/PID/pagemap: which pages of a task hold data that CRIU would dump.
 *
 * A page counts when it is present in RAM or swapped out, is not a page-cache page of a file (never
 * copied-on-write: CRIU restores it by mapping the file), is not a guard region (MADV_GUARD_INSTALL markers
 * look like swap entries), is not the shared zero page (CRIU's zero-pfn test: a page only read holds no data)
 * and is not a uffd-wp pte marker. The uffd-wp tracker's first write-protecting scan puts a marker in every
 * untouched pte of a registered area; PAGEMAP_SCAN reports markers as PAGE_IS_SWAPPED and pagemap as PM_SWAP, and
 * counting them made the tracker read (mapping the zero page) and send every page of ZDTM maps03's 10 GiB sparse
 * area, past the dest's budget (FERRY-3008). A marker is a swap entry of type 31 (SWP_PTE_MARKER, above every
 * real swap file's type), visible where pagemap shows pfns and swap offsets (zero-page.ts); there the scan
 * method re-reads its swapped regions' entries to drop markers, and both methods apply the zero-pfn test.
 * Where pfns are hidden, zero pages and markers count (the scan still drops zero pages: PAGE_IS_PFNZERO).
 *
 * Two methods, same answer:
 * - 'scan': the PAGEMAP_SCAN ioctl (Linux >= 6.7), run-length encoded by the kernel (perf-lab §2: ~3.6 ms/GiB);
 * - 'pread': 8-byte entries read in blocks (pagemap-scan.ts) and decoded from the high 32-bit words only.
 * Support for 'scan' is probed on first use and remembered for the process.
 */
import { closeSync, openSync } from 'node:fs';
import { SystemCallError } from '../errors/ferry-error.js';
import { Errno, errnoName, systemCallErrorFromNode } from '../native/libc.js';
import { PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PagemapScanCall, pagemapBlock, preadPagemap } from './pagemap-scan.js';
import type { Vma } from './proc-maps.js';
import { zeroPagePfn } from './zero-page.js';

/**
 * Runs of pages, ascending and non-overlapping: run i is pages [starts[i], starts[i] + counts[i]).
 * Adjacent runs are merged, so consecutive runs always have a gap between them.
 */
export interface PageRuns {
  starts: number[];
  counts: number[];
}

export type PagemapMethod = 'scan' | 'pread';

export function emptyRuns(): PageRuns {
  return { starts: [], counts: [] };
}

/** Appends pages [start, start + count) after the last run, merging when they touch. Runs must come in order. */
export function appendRun(runs: PageRuns, start: number, count: number): void {
  if (count <= 0) return;
  const last = runs.starts.length - 1;
  if (last >= 0 && (runs.starts[last] ?? 0) + (runs.counts[last] ?? 0) === start) {
    runs.counts[last] = (runs.counts[last] ?? 0) + count;
    return;
  }
  runs.starts.push(start);
  runs.counts.push(count);
}

export function runsPageCount(runs: PageRuns): number {
  let n = 0;
  for (const c of runs.counts) n += c;
  return n;
}

// pagemap entry bits, as seen in the high 32-bit word of each 64-bit entry.
const PM_PRESENT_HI = 1 << 31; // bit 63
const PM_SWAP_HI = 1 << 30; // bit 62
const PM_FILE_HI = 1 << 29; // bit 61: page-cache page (or shared anonymous)
const PM_GUARD_HI = 1 << 26; // bit 58: guard region marker (Linux >= 6.15)

const PFN_HI_MASK = 0x7fffff; // bits 32-54: the pfn's high part
// A swap entry's type is bits 0-4 (0 where pfns are hidden); 31 is the kernel's pte-marker type (uffd-wp, guard).
const SWAP_TYPE_MASK = 0x1f;
const SWP_PTE_MARKER = 31;
const TWO_32 = 2 ** 32;

/** CRIU's page rule (file comment) for one entry given as its two 32-bit words; `zeroPfn` when known. */
export function entryCounts(lo: number, hi: number, zeroPfn: number | undefined): boolean {
  if ((hi & (PM_PRESENT_HI | PM_SWAP_HI)) === 0 || (hi & (PM_FILE_HI | PM_GUARD_HI)) !== 0) return false;
  if ((hi & PM_PRESENT_HI) === 0) return (lo & SWAP_TYPE_MASK) !== SWP_PTE_MARKER;
  return zeroPfn === undefined || lo + (hi & PFN_HI_MASK) * TWO_32 !== zeroPfn;
}

/**
 * Decodes pagemap entries (8 bytes each, the first for page `firstPage`) and appends the runs of pages that
 * count (see the file comment) to `out`. Flags come from the high word of each entry; the pfn (both words) is
 * compared only with `zeroPfn`, when known: no BigInt.
 */
export function decodePagemapEntries(buf: Uint8Array, firstPage: number, out: PageRuns, zeroPfn?: number): void {
  const n = Math.floor(buf.byteLength / 8);
  // A Uint32Array view needs 4-byte alignment, which a Buffer sliced from Node's pool may lack: then copy
  // (new Uint8Array(view) copies; Buffer#slice would not).
  const bytes = buf.byteOffset % 4 === 0 ? buf : new Uint8Array(buf.subarray(0, n * 8));
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n * 2);
  let runStart = -1;
  for (let i = 0; i < n; i++) {
    const hi = words[2 * i + 1] ?? 0;
    if (entryCounts(words[2 * i] ?? 0, hi, zeroPfn)) {
      if (runStart < 0) runStart = i;
    } else if (runStart >= 0) {
      appendRun(out, firstPage + runStart, i - runStart);
      runStart = -1;
    }
  }
  if (runStart >= 0) appendRun(out, firstPage + runStart, n - runStart);
}

/** What PAGEMAP_SCAN support looks like on this kernel; undefined until the first scan. */
type ScanSupport = 'full' | 'no-guard' | 'none';
let scanSupport: ScanSupport | undefined;

/** The method this process uses when none is forced: undefined until a PagemapReader has scanned once. */
export function detectedPagemapMethod(): PagemapMethod | undefined {
  if (scanSupport === undefined) return undefined;
  return scanSupport === 'none' ? 'pread' : 'scan';
}

export interface PagemapReaderOptions {
  /** Force a method (tests compare both); by default 'scan' when the kernel has it, else 'pread'. */
  method?: PagemapMethod;
}

/** An open /proc/PID/pagemap. One per task; close() when done. */
export class PagemapReader {
  private fd: number;
  private readonly forced: PagemapMethod | undefined;
  private scanner: PagemapScanCall | undefined;
  private block: Buffer | undefined;
  /** The method the last presentRuns() used. */
  lastMethod: PagemapMethod | undefined;

  constructor(
    readonly pid: number,
    options: PagemapReaderOptions = {},
  ) {
    this.forced = options.method;
    try {
      this.fd = openSync(`/proc/${pid}/pagemap`, 'r');
    } catch (e) {
      throw systemCallErrorFromNode('open', e, `/proc/${pid}/pagemap`) ?? e;
    }
  }

  /** Runs of pages of `vmas` that hold dumpable data (file comment). `vmas` must be sorted, as maps lists them. */
  presentRuns(vmas: readonly Vma[]): PageRuns {
    if (this.fd < 0) throw new Error('PagemapReader is closed');
    const out = emptyRuns();
    const method = this.forced ?? (scanSupport === 'none' ? 'pread' : 'scan');
    if (method === 'scan') {
      if (this.scanAll(vmaSpans(vmas), out)) {
        this.lastMethod = 'scan';
        return out;
      }
      if (this.forced === 'scan') {
        throw new SystemCallError('ioctl', Errno.ENOTTY, errnoName(Errno.ENOTTY), 'this kernel has no PAGEMAP_SCAN');
      }
    }
    for (const [start, end] of vmaSpans(vmas)) this.preadSpan(start, end, out);
    this.lastMethod = 'pread';
    return out;
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }

  /** Scans every span with PAGEMAP_SCAN; false (and `out` empty) when the kernel turns out not to have it. */
  private scanAll(spanList: [number, number][], out: PageRuns): boolean {
    for (const [start, end] of spanList) {
      if (scanSupport === 'none') return false;
      if (scanSupport === undefined) {
        // Probe with a real span: whatever the kernel lacks shows up as ENOTTY or EINVAL here.
        if (!this.probeScan(start, end, out)) return false;
      } else {
        this.scanSpan(start, end, out, scanSupport === 'full');
      }
    }
    return true;
  }

  /** Runs the first scan, recording what the kernel supports. Returns false when it has no PAGEMAP_SCAN. */
  private probeScan(start: number, end: number, out: PageRuns): boolean {
    for (const withGuard of [true, false]) {
      try {
        this.scanSpan(start, end, out, withGuard);
        scanSupport = withGuard ? 'full' : 'no-guard';
        return true;
      } catch (e) {
        if (!(e instanceof SystemCallError) || (e.errno !== Errno.ENOTTY && e.errno !== Errno.EINVAL)) throw e;
        // The probe is the first span of the first scan, so `out` holds nothing else.
        out.starts.length = 0;
        out.counts.length = 0;
      }
    }
    scanSupport = 'none';
    return false;
  }

  private scanSpan(start: number, end: number, out: PageRuns, withGuard: boolean): void {
    this.scanner ??= new PagemapScanCall(this.fd, this.pid, 'presence');
    // Page-cache pages, zero pages (and guard markers, which look like swap) are absent from every reported page.
    const excluded = PAGE_IS_FILE | PAGE_IS_PFNZERO | (withGuard ? PAGE_IS_GUARD : 0);
    const wanted = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
    // Swapped regions may be uffd-wp markers: their entries tell, where pagemap shows swap types.
    const checkSwapped = zeroPagePfn() !== undefined;
    this.scanner.scan(start, end, { categoryInverted: excluded, categoryMask: excluded, categoryAnyofMask: wanted, returnMask: wanted }, (first, stop, categories) => {
      if (checkSwapped && (categories & PAGE_IS_PRESENT) === 0) this.preadSpan(first, stop, out);
      else appendRun(out, first, stop - first);
    });
  }

  private preadSpan(start: number, end: number, out: PageRuns): void {
    const zeroPfn = zeroPagePfn();
    preadPagemap(this.fd, this.pid, (this.block ??= pagemapBlock()), start, end, (entries, first) => decodePagemapEntries(entries, first, out, zeroPfn));
  }

}

/** Merges areas that touch (one ioctl or pread loop for a whole stretch of adjacent areas). */
export function vmaSpans(vmas: readonly Vma[]): [number, number][] {
  const result: [number, number][] = [];
  for (const v of vmas) {
    const last = result[result.length - 1];
    if (last && last[1] === v.startPage) last[1] = v.endPage;
    else if (v.endPage > v.startPage) result.push([v.startPage, v.endPage]);
  }
  return result;
}

/** One-shot form of PagemapReader.presentRuns: opens, scans, closes. */
export function presentRuns(pid: number, vmas: readonly Vma[], options: PagemapReaderOptions = {}): PageRuns {
  const reader = new PagemapReader(pid, options);
  try {
    return reader.presentRuns(vmas);
  } finally {
    reader.close();
  }
}
