/**
 * Reads pages of another task with process_vm_readv, chunk by chunk into one reused buffer.
 *
 * Shape (perf-lab §1): adjacent pages are coalesced into one remote iovec, a chunk is at most `chunkPages`
 * pages (default 256 = 1 MiB, the cache-friendly size) and at most IOV_MAX iovecs, and the destination is one
 * contiguous buffer that stays warm in the cache.
 *
 * The task keeps running while it is read, so a page found by the pagemap scan may be unmapped (or
 * mprotect'ed) before it is read. Such pages are reported in `unreadable` and the rest of the chunk is still
 * read; only errors about the task as a whole (ESRCH: gone, EPERM: not allowed) are thrown, as SystemCallError.
 */
import { SystemCallError } from '../errors/ferry-error.js';
import { Errno, IOVEC_BYTES, IOV_MAX, addressOf, processVmReadv, type Address } from '../native/libc.js';
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

/** One reader per agent is enough; it holds a chunk buffer and the iovec arrays, no file descriptors. */
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
      const read = this.readPlanned(pid, planned, unreadable);
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
  private readPlanned(pid: number, planned: number, unreadable: number[]): number {
    let src = 0; // next planned page to read
    let dst = 0; // pages filled in the buffer
    while (src < planned) {
      const got = this.readSpan(pid, src, planned, dst);
      if (got > 0) {
        // A short read stops before the first page that failed; the next read starts there.
        if (dst !== src) this.pages.copyWithin(dst, src, src + got);
        src += got;
        dst += got;
      } else {
        // Nothing read from a span that starts at this page: this page is what fails.
        unreadable.push(this.pages[src] ?? 0);
        src++;
      }
    }
    return dst;
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
