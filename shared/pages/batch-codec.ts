/**
 * The codec of a page batch's payload (the bytes of its non-zero pages; zero pages carry no bytes whatever the
 * codec), both ends side by side, independent of the transport: the gRPC PageBatch carries `codec` and
 * `raw_bytes` beside `data`, a page channel's frame the same two in its header. The source encodes
 * (BatchPayloadEncoder), the dest decodes (BatchPayloadDecoder) before it checks any page's hash, bounded by
 * the batch's own page count: a decoded payload is never more than pages x page size, checked before anything
 * is allocated.
 */
import { FerryError } from '../errors/ferry-error.js';
import { PAGE_KIND_DATA } from '../transport/page-batch.js';
import { ZstdCompressor, ZstdDecompressor, zstdCompressBound, zstdProblem } from '../native/zstd.js';

/** The wire ids (a byte in a frame, a uint32 in the proto). */
export const PAGE_CODEC = { none: 0, zstd: 1 } as const;
export type PageCodecName = keyof typeof PAGE_CODEC;

/** Codecs besides `none` (which every peer speaks), in the order a source prefers them. */
export const COMPRESSING_CODECS: readonly PageCodecName[] = ['zstd'];

export function pageCodecName(id: number): PageCodecName | undefined {
  return id === PAGE_CODEC.none ? 'none' : id === PAGE_CODEC.zstd ? 'zstd' : undefined;
}

/** The compressing codecs this host can encode and decode (zstd when libzstd.so.1 loads). */
export function localPageCodecs(): PageCodecName[] {
  return zstdProblem() === undefined ? ['zstd'] : [];
}

/** What a dest answers a source's offer with (Negotiate): the offered codecs it decodes too. */
export function acceptedPageCodecs(offered: readonly string[]): PageCodecName[] {
  return localPageCodecs().filter((c) => offered.includes(c));
}

/**
 * A compressed payload must save at least this share to be sent compressed: below it the dest's decode costs
 * more than the bytes saved, and incompressible pages travel as they are (never bigger than raw).
 */
const MIN_SAVING = 1 / 32;

export interface EncodedPayload {
  codec: PageCodecName;
  /** `data` itself (none), or a view of the encoder's buffer that its next encode() overwrites (zstd). */
  payload: Buffer;
  /** The payload's decoded length: `data.length`. */
  rawBytes: number;
  /** Time spent compressing (0 for none), for the compression choice. */
  compressMs: number;
  /** The zstd frame's length, also when it was dropped for saving too little; undefined if nothing was compressed. */
  frameBytes?: number | undefined;
}

/**
 * One stream's encoder: one zstd context and output buffer, reused batch after batch. koffi -> libzstd rather
 * than node:zlib's zstd (Node 22.15+): on the same 1 MiB heap-like batches it measured 1.1-2x faster under Node
 * 22 and 24 here (5-8x on incompressible ones, which libzstd gives up on sooner), and it works on Node 20.
 */
export class BatchPayloadEncoder {
  private zstd: ZstdCompressor | undefined;

  constructor(private readonly level = 1) {}

  /**
   * `data` under `codec`; a zstd frame that does not save MIN_SAVING is dropped and the batch goes as none
   * (its compressMs still counted: the time was spent).
   */
  encode(data: Buffer, codec: PageCodecName): EncodedPayload {
    if (codec === 'none' || data.length === 0) return { codec: 'none', payload: data, rawBytes: data.length, compressMs: 0 };
    this.zstd ??= new ZstdCompressor(this.level);
    const t0 = performance.now();
    const frame = this.zstd.compress(data);
    const compressMs = performance.now() - t0;
    const frameBytes = frame.length;
    if (frameBytes > data.length * (1 - MIN_SAVING)) return { codec: 'none', payload: data, rawBytes: data.length, compressMs, frameBytes };
    return { codec: 'zstd', payload: frame, rawBytes: data.length, compressMs, frameBytes };
  }
}

/** What arrived: the codec's wire id, the payload and the raw length the sender claims. */
export interface CodedPayload {
  codec: number;
  payload: Buffer;
  /** 0 with codec none: not given (a source before compression); the payload's length then. */
  rawBytes: number;
}

/** One stream's decoder: accepts only the codecs this dest announced. */
export class BatchPayloadDecoder {
  private zstd: ZstdDecompressor | undefined;

  constructor(private readonly accepted: ReadonlySet<PageCodecName> = new Set(localPageCodecs())) {}

  /**
   * The batch's raw payload. `kinds` holds one byte per page (`pages` of them): only kind-0 pages have bytes,
   * so the raw length must be exactly their number x `pageSize`, which is checked before any allocation.
   */
  decode(p: CodedPayload, kinds: Buffer, pages: number, pageSize: number): Buffer {
    const fail = (why: string, cause?: unknown): never => {
      throw new FerryError('PAGE_PAYLOAD_INVALID', { message: `Undecodable page batch payload: ${why}`, phase: 'precopy', side: 'dest', cause });
    };
    const codec = pageCodecName(p.codec);
    if (codec === undefined) return fail(`unknown codec ${p.codec}`);
    if (codec === 'none') {
      if (p.rawBytes !== 0 && p.rawBytes !== p.payload.length) fail(`raw length ${p.rawBytes} for ${p.payload.length} uncompressed bytes`);
      return p.payload; // its layout is decodePageBatch's to check
    }
    if (!this.accepted.has(codec)) fail(`codec ${codec} is not accepted here`);
    if (kinds.length !== pages) fail(`${kinds.length} kinds for ${pages} pages`);
    const expected = dataPages(kinds) * pageSize;
    if (p.rawBytes !== expected) fail(`raw length ${p.rawBytes}, the batch's data pages make ${expected}`);
    if (p.payload.length > zstdCompressBound(expected)) fail(`${p.payload.length} compressed bytes for ${expected} raw`);
    this.zstd ??= new ZstdDecompressor();
    // Fresh: the store may still hold the previous batch's buffer while this one is decoded.
    const out = Buffer.allocUnsafe(expected);
    try {
      this.zstd.decompressExactly(p.payload, out);
    } catch (e) {
      fail(e instanceof FerryError ? (e.detail ?? e.message) : String(e), e);
    }
    return out;
  }
}

/** Pages whose bytes are in the payload. */
function dataPages(kinds: Buffer): number {
  let n = 0;
  for (let i = 0; i < kinds.length; i++) if (kinds[i] === PAGE_KIND_DATA) n++;
  return n;
}
