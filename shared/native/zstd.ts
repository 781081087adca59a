/**
 * zstd through koffi -> Debian's libzstd.so.1 (perf-lab §6: 1.2-3.4 GB/s at level 1 on heap-like pages; the
 * lz4 binding leaks on incompressible input). Like libc.ts, this is the only file that sees koffi for zstd:
 * callers get typed functions that throw a FerryError with ZSTD_getErrorName's words.
 *
 * Buffers are passed as `void *`: koffi hands over the view's own bytes (offset included), no copy.
 */
import koffi from 'koffi';
import { FerryError } from '../errors/ferry-error.js';

interface ZstdLib {
  compressBound: (n: number) => number;
  compressCCtx: (cctx: unknown, dst: Buffer, cap: number, src: Buffer, n: number, level: number) => number | bigint;
  decompressDCtx: (dctx: unknown, dst: Buffer, cap: number, src: Buffer, n: number) => number | bigint;
  getFrameContentSize: (src: Buffer, n: number) => number | bigint;
  isError: (code: number | bigint) => number;
  getErrorName: (code: number | bigint) => string;
  createCCtx: () => unknown;
  createDCtx: () => unknown;
}

let lib: ZstdLib | undefined;
let loadProblem: string | undefined;

function load(): ZstdLib | undefined {
  if (lib || loadProblem !== undefined) return lib;
  try {
    const z = koffi.load('libzstd.so.1');
    koffi.opaque('ZSTD_CCtx');
    koffi.opaque('ZSTD_DCtx');
    lib = {
      compressBound: z.func('size_t ZSTD_compressBound(size_t srcSize)'),
      compressCCtx: z.func('size_t ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t cap, const void *src, size_t n, int level)'),
      decompressDCtx: z.func('size_t ZSTD_decompressDCtx(ZSTD_DCtx *dctx, void *dst, size_t cap, const void *src, size_t n)'),
      getFrameContentSize: z.func('unsigned long long ZSTD_getFrameContentSize(const void *src, size_t n)'),
      isError: z.func('unsigned int ZSTD_isError(size_t code)'),
      getErrorName: z.func('const char *ZSTD_getErrorName(size_t code)'),
      createCCtx: z.func('ZSTD_CCtx *ZSTD_createCCtx(void)'),
      createDCtx: z.func('ZSTD_DCtx *ZSTD_createDCtx(void)'),
    };
  } catch (e) {
    loadProblem = `libzstd.so.1 could not be loaded: ${(e as Error).message}`;
  }
  return lib;
}

/** undefined when zstd works here; else why not (the host offers no zstd codec then). */
export function zstdProblem(): string | undefined {
  load();
  return loadProblem;
}

function need(): ZstdLib {
  const z = load();
  if (!z) throw new FerryError('PAGE_CODEC_FAILED', { detail: loadProblem });
  return z;
}

/** A size_t result: sizes come back as numbers, error codes ((size_t)-N) as BigInt past 2^53. */
function checked(z: ZstdLib, call: string, r: number | bigint): number {
  if (typeof r === 'bigint' || z.isError(r) !== 0) throw new FerryError('PAGE_CODEC_FAILED', { detail: `${call}: ${z.getErrorName(r)}` });
  return r;
}

/** ZSTD_CONTENTSIZE_UNKNOWN and _ERROR: (0ULL - 1) and (0ULL - 2). */
const CONTENT_SIZE_UNKNOWN = 2n ** 64n - 1n;
const CONTENT_SIZE_ERROR = 2n ** 64n - 2n;

/**
 * One compression context and output buffer, reused for every call (a context costs ~1 MiB to set up). Not
 * shareable between concurrent users: each stream owns one.
 */
export class ZstdCompressor {
  private readonly z = need();
  private readonly cctx = this.z.createCCtx();
  private out = Buffer.alloc(0);

  constructor(readonly level = 1) {
    if (!this.cctx) throw new FerryError('PAGE_CODEC_FAILED', { detail: 'ZSTD_createCCtx returned NULL' });
  }

  /** The compressed frame of `src`, a view of this compressor's buffer that the next call overwrites. */
  compress(src: Buffer): Buffer {
    const bound = this.z.compressBound(src.length);
    if (this.out.length < bound) this.out = Buffer.allocUnsafe(bound);
    const n = checked(this.z, 'ZSTD_compressCCtx', this.z.compressCCtx(this.cctx, this.out, bound, src, src.length, this.level));
    return this.out.subarray(0, n);
  }
}

/** Decompression with a reused context; the output never exceeds the size the caller allows. */
export class ZstdDecompressor {
  private readonly z = need();
  private readonly dctx = this.z.createDCtx();

  constructor() {
    if (!this.dctx) throw new FerryError('PAGE_CODEC_FAILED', { detail: 'ZSTD_createDCtx returned NULL' });
  }

  /**
   * Decompresses the one frame in `src` into `dst`, which it must fill exactly: a frame that declares another
   * size, or decodes to more or fewer bytes, throws before or while decoding (zstd stops at dst's end).
   */
  decompressExactly(src: Buffer, dst: Buffer): void {
    const declared = BigInt(this.z.getFrameContentSize(src, src.length));
    if (declared === CONTENT_SIZE_ERROR) throw new FerryError('PAGE_CODEC_FAILED', { detail: 'not a zstd frame' });
    if (declared !== CONTENT_SIZE_UNKNOWN && declared !== BigInt(dst.length)) {
      throw new FerryError('PAGE_CODEC_FAILED', { detail: `the zstd frame declares ${declared} bytes, expected ${dst.length}` });
    }
    const n = checked(this.z, 'ZSTD_decompressDCtx', this.z.decompressDCtx(this.dctx, dst, dst.length, src, src.length));
    if (n !== dst.length) throw new FerryError('PAGE_CODEC_FAILED', { detail: `the zstd frame decoded to ${n} bytes, expected ${dst.length}` });
  }
}

/** The worst-case compressed size of `n` bytes (a payload larger than this is no zstd frame of them). */
export function zstdCompressBound(n: number): number {
  return need().compressBound(n);
}
