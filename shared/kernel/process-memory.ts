/**
 * Reads pages of another task with process_vm_readv, chunk by chunk into one reused buffer; the pages it refuses
 * are read again through /proc/PID/mem.
 *
 * Shape (perf-lab §1): adjacent pages are coalesced into one remote iovec, a chunk is at most `chunkPages`
 * pages (default 256 = 1 MiB, the cache-friendly size) and at most IOV_MAX iovecs, and the destination is one
 * contiguous buffer that stays warm in the cache.
 *
 * The task keeps running while it is read, so a page found by the pagemap scan may be unmapped (or
 * mprotect'ed) before it is read. Such pages are reported in `unreadable` and the rest of the chunk is still
 * read; only errors about the task as a whole (ESRCH: gone, EPERM: not allowed) are thrown, as SystemCallError.
 *
 * Why /proc/PID/mem: process_vm_readv honours the area's protection, so it fails (EFAULT) on the pages of a
 * PROT_NONE area that CRIU dumps all the same (its parasite mprotects them readable; maps04 is such a task).
 * A pread of /proc/PID/mem at the page's address walks the pages with FOLL_FORCE, which lifts the protection
 * check for any area that may be made readable (VM_MAYREAD). Facts checked on Debian 12's build of 6.18
 * (CONFIG_PROC_MEM_ALWAYS_FORCE=y, no proc_mem.force_override on the command line), as root, not a tracer:
 * process_vm_readv of a written-then-PROT_NONE area fails with EFAULT; pread of it returns its bytes; pread
 * of an unmapped address fails with EIO; a pread over pages of which only the first ones are readable returns
 * those (a short read, like process_vm_readv). With CONFIG_PROC_MEM_FORCE_PTRACE (or force_override=ptrace)
 * only a tracer gets FOLL_FORCE, and with NO_FORCE nobody: the pages then stay unreadable. Opening the file
 * takes the same ptrace-attach check as process_vm_readv, so it adds no access the reader did not have.
 * The file is opened at the first refused page of a chunks() walk and closed when the walk ends: a task whose
 * memory process_vm_readv reads whole never costs a descriptor.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { SystemCallError } from '../errors/ferry-error.js';
import { Errno, IOVEC_BYTES, IOV_MAX, addressOf, processVmReadv, systemCallErrorFromNode, type Address } from '../native/libc.js';
import type { PageRuns } from './pagemap.js';
import { PAGE_SIZE } from './page-size.js';
import { pageAddressHi, pageAddressLo } from './proc-maps.js';

export interface PageChunk {
  /**
   * The pages read, back to back: page k of the chunk at k * PAGE_SIZE. A view of the reader's buffer,
   * overwritten by the next chunk: hash, compare or copy it before the loop moves on.
   */
  readonly data: Buffer;
  /** Page number of each page in `data`, ascending. */
  readonly pages: Float64Array;
  /** Pages this chunk covered that could not be read; they are not in `data`. */
  readonly unreadable: readonly number[];
}

export interface ProcessMemoryReaderOptions {
  /** Pages per chunk; default 256 (1 MiB). */
  chunkPages?: number;
}

const DEFAULT_CHUNK_PAGES = 256;
/** Keeps each iovec length below 2^32 (it is written as one 32-bit word). */
const MAX_CHUNK_PAGES = 65536;
const TWO_32 = 2 ** 32;

/** `0x7f3a1c2d4000, 0x...` for the first `max` pages (and how many more): page numbers as the addresses a reader of a message knows. */
export function describePageAddresses(pages: readonly number[], max = 5): string {
  const shown = pages.slice(0, max).map((p) => `0x${(p * PAGE_SIZE).toString(16)}`).join(', ');
  return pages.length > max ? `${shown} (and ${pages.length - max} more)` : shown;
}

/** The open /proc/PID/mem of one chunks() walk, opened at its first refused page. */
interface MemFile {
  fd?: number;
}

/** One reader per agent is enough; it holds a chunk buffer and the iovec arrays, and a descriptor only during a walk that needs one. */
export class ProcessMemoryReader {
  readonly chunkPages: number;
  private readonly buffer: Buffer;
  private readonly bufferAddress: Address;
  private readonly pages: Float64Array;
  private readonly localIov = Buffer.alloc(IOVEC_BYTES);
  private readonly localWords: Uint32Array;
  private readonly remoteIov = Buffer.alloc(IOV_MAX * IOVEC_BYTES);
  private readonly remoteWords: Uint32Array;

  constructor(options: ProcessMemoryReaderOptions = {}) {
    const chunkPages = options.chunkPages ?? DEFAULT_CHUNK_PAGES;
    if (!Number.isInteger(chunkPages) || chunkPages < 1 || chunkPages > MAX_CHUNK_PAGES) {
      throw new RangeError(`chunkPages must be an integer in 1..${MAX_CHUNK_PAGES}, got ${chunkPages}`);
    }
    this.chunkPages = chunkPages;
    // allocUnsafeSlow: a backing store of its own, never a pool slice; its address is taken once and stays valid.
    this.buffer = Buffer.allocUnsafeSlow(chunkPages * PAGE_SIZE);
    this.bufferAddress = addressOf(this.buffer);
    this.pages = new Float64Array(chunkPages);
    this.localWords = new Uint32Array(this.localIov.buffer, this.localIov.byteOffset, 4);
    this.remoteWords = new Uint32Array(this.remoteIov.buffer, this.remoteIov.byteOffset, IOV_MAX * 4);
  }

  /**
   * Reads the pages of `runs` from task `pid`, one chunk per iteration. The caller drives the pace (it may
   * await between chunks); `signal` is checked before each chunk and throws its reason when aborted.
   */
  *chunks(pid: number, runs: PageRuns, signal?: AbortSignal): Generator<PageChunk, void, undefined> {
    const { starts, counts } = runs;
    const mem: MemFile = {};
    try {
      yield* this.walk(pid, starts, counts, mem, signal);
    } finally {
      if (mem.fd !== undefined) closeSync(mem.fd);
    }
  }

  private *walk(pid: number, starts: PageRuns['starts'], counts: PageRuns['counts'], mem: MemFile, signal?: AbortSignal): Generator<PageChunk, void, undefined> {
    let run = 0;
    let offset = 0; // pages of starts[run] already planned
    while (run < starts.length) {
      signal?.throwIfAborted();
      // Plan the chunk: page numbers in order, at most chunkPages of them in at most IOV_MAX ranges.
      let planned = 0;
      let ranges = 0;
      while (run < starts.length && planned < this.chunkPages && ranges < IOV_MAX) {
        const start = (starts[run] ?? 0) + offset;
        const take = Math.min((counts[run] ?? 0) - offset, this.chunkPages - planned);
        for (let k = 0; k < take; k++) this.pages[planned + k] = start + k;
        planned += take;
        ranges++;
        offset += take;
        if (offset >= (counts[run] ?? 0)) {
          run++;
          offset = 0;
        }
      }
      const unreadable: number[] = [];
      const read = this.readPlanned(pid, planned, unreadable, mem);
      yield {
        data: this.buffer.subarray(0, read * PAGE_SIZE),
        pages: this.pages.subarray(0, read),
        unreadable,
      };
    }
  }

  /**
   * Reads pages[0..planned) into the buffer. Pages that fail are dropped from `pages` (the read ones are moved
   * down to stay aligned with the data) and listed in `unreadable`. Returns the number of pages read.
   */
  private readPlanned(pid: number, planned: number, unreadable: number[], mem: MemFile): number {
    let src = 0; // next planned page to read
    let dst = 0; // pages filled in the buffer
    while (src < planned) {
      let got = this.readSpan(pid, src, planned, dst);
      if (got === 0) got = this.readForced(pid, src, planned, dst, mem);
      if (got > 0) {
        // A short read stops before the first page that failed; the next read starts there.
        if (dst !== src) this.pages.copyWithin(dst, src, src + got);
        src += got;
        dst += got;
      } else {
        // Neither call read a page of a span that starts at this page: this page is what fails.
        unreadable.push(this.pages[src] ?? 0);
        src++;
      }
    }
    return dst;
  }

  /**
   * One pread of /proc/PID/mem over the adjacent pages from pages[from] on (at most to - from) into the buffer at
   * page `dst`: the pages process_vm_readv refused. Returns whole pages read; 0 when the first one fails (EIO).
   */
  private readForced(pid: number, from: number, to: number, dst: number, mem: MemFile): number {
    const first = this.pages[from] ?? 0;
    let n = 1;
    while (from + n < to && this.pages[from + n] === first + n) n++;
    if (mem.fd === undefined) {
      try {
        mem.fd = openSync(`/proc/${pid}/mem`, 'r');
      } catch (e) {
        throw systemCallErrorFromNode('open', e, `/proc/${pid}/mem`) ?? e;
      }
    }
    try {
      return Math.floor(readSync(mem.fd, this.buffer, dst * PAGE_SIZE, n * PAGE_SIZE, first * PAGE_SIZE) / PAGE_SIZE);
    } catch (e) {
      // EIO: the first page is not there for the kernel either (unmapped meanwhile, or no FOLL_FORCE here).
      if ((e as { code?: unknown }).code === 'EIO') return 0;
      throw systemCallErrorFromNode('pread', e, `/proc/${pid}/mem`) ?? e;
    }
  }

  /** One process_vm_readv of pages[from..to) into the buffer at page `dst`. Returns whole pages read. */
  private readSpan(pid: number, from: number, to: number, dst: number): number {
    const remote = this.remoteWords;
    let iovs = 0;
    for (let i = from; i < to; ) {
      const first = this.pages[i] ?? 0;
      let n = 1;
      while (i + n < to && this.pages[i + n] === first + n) n++;
      remote[4 * iovs] = pageAddressLo(first);
      remote[4 * iovs + 1] = pageAddressHi(first);
      remote[4 * iovs + 2] = n * PAGE_SIZE;
      remote[4 * iovs + 3] = 0;
      iovs++;
      i += n;
    }
    const lo = this.bufferAddress.lo + dst * PAGE_SIZE;
    this.localWords[0] = lo % TWO_32;
    this.localWords[1] = this.bufferAddress.hi + Math.floor(lo / TWO_32);
    this.localWords[2] = (to - from) * PAGE_SIZE;
    this.localWords[3] = 0;
    let bytes: number;
    try {
      bytes = processVmReadv(pid, this.localIov, 1, this.remoteIov, iovs);
    } catch (e) {
      // EFAULT: the first remote page could not be read (nothing was copied); everything else is about the task.
      if (e instanceof SystemCallError && e.errno === Errno.EFAULT) return 0;
      throw e;
    }
    return Math.floor(bytes / PAGE_SIZE);
  }
}
