/**
 * The page channel's frames (docs/protocol.md, "Page channels"), both ends side by side. A frame is an 8-byte
 * header (u32 LE body bytes, u8 type, 3 zero bytes) and its body; every integer is little-endian. The body's
 * bound depends on its type and is checked from the header alone, before anything is allocated for it.
 */
import { truncateText } from '../../bounded-text.js';
import { keyForCode } from '../../errors/codes.js';
import { FerryError, type SerializedFerryError } from '../../errors/ferry-error.js';
import { boundedForTrailer } from '../../errors/grpc-status.js';
import { HASH_BYTES } from '../../pages/page-hash-index.js';
import { PAGE_ENTRY_BYTES } from '../page-batch.js';

export const FRAME_HEADER_BYTES = 8;
/** 'FRYP' as a u32 LE: the first bytes of every channel, so that a stray client is told apart at once. */
export const CHANNEL_MAGIC = 0x50595246;
export const CHANNEL_VERSION = 1;
export const CHANNEL_TOKEN_BYTES = 32;

export const FrameType = { HELLO: 1, READY: 2, BATCH: 3, ACK: 4, ERROR: 5, CLOSE: 6 } as const;
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];

/** As the gRPC stream allows (MAX_BATCH_PAGES in dest-agent/request-bounds.ts). */
export const MAX_CHANNEL_BATCH_PAGES = 4096;
/** Page bytes of one batch on the wire (after the codec) and before it (the raw pages): 4 MiB. */
export const MAX_CHANNEL_PAYLOAD_BYTES = 4 * 1024 * 1024;
export const BATCH_FIXED_BYTES = 32;
const HELLO_FIXED_BYTES = 50;
/** A migration id is at most 64 characters of [A-Za-z0-9-]. */
const MAX_MIGRATION_ID_BYTES = 64;
const ACK_BYTES = 32;
const MAX_ERROR_BYTES = 4096;

/** The largest body each type may announce; anything over it is refused before allocation. */
export const MAX_BODY_BYTES: Readonly<Record<FrameTypeCode, number>> = {
  [FrameType.HELLO]: HELLO_FIXED_BYTES + MAX_MIGRATION_ID_BYTES,
  [FrameType.READY]: 0,
  [FrameType.BATCH]: BATCH_FIXED_BYTES + MAX_CHANNEL_BATCH_PAGES * PAGE_ENTRY_BYTES + MAX_CHANNEL_PAYLOAD_BYTES,
  [FrameType.ACK]: ACK_BYTES,
  [FrameType.ERROR]: MAX_ERROR_BYTES,
  [FrameType.CLOSE]: 0,
};

/** Codec of a batch's payload: 0 is the raw page bytes (shared/pages/batch-codec.ts's PAGE_CODEC: what else exists). */
export const CODEC_NONE = 0;

export interface Hello {
  migrationId: string;
  /** u64 as a decimal string, as the gRPC messages carry it. */
  epoch: string;
  token: Buffer;
  channel: number;
}

export interface BatchHeader {
  /** Per stream, across its channels: 1, 2, 3, ... (the dest stores in this order). */
  seq: bigint;
  round: number;
  task: number;
  pages: number;
  codec: number;
  payloadBytes: number;
  rawBytes: number;
}

export interface BatchFrame extends BatchHeader {
  pageNumbers: Buffer;
  hashes: Buffer;
  kinds: Buffer;
  payload: Buffer;
}

export interface Ack {
  /** Every batch of this channel up to this seq is stored. */
  seq: bigint;
  batches: number;
  pages: number;
  bytes: bigint;
  storeMicros: bigint;
}

export function invalidFrame(detail: string, side: 'source' | 'dest' = 'dest'): FerryError {
  return new FerryError('PAGE_CHANNEL_FRAME_INVALID', { side, phase: 'precopy', detail });
}

function header(type: FrameTypeCode, bodyBytes: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32LE(bodyBytes, 0);
  h[4] = type;
  return h;
}

export function encodeHello(h: Hello): Buffer {
  const id = Buffer.from(h.migrationId, 'utf8');
  if (id.length > MAX_MIGRATION_ID_BYTES) throw invalidFrame(`migration id of ${id.length} bytes`, 'source');
  if (h.token.length !== CHANNEL_TOKEN_BYTES) throw invalidFrame(`token of ${h.token.length} bytes`, 'source');
  const body = Buffer.alloc(HELLO_FIXED_BYTES + id.length);
  body.writeUInt32LE(CHANNEL_MAGIC, 0);
  body.writeUInt16LE(CHANNEL_VERSION, 4);
  body.writeUInt16LE(h.channel, 6);
  body.writeBigUInt64LE(BigInt(h.epoch), 8);
  h.token.copy(body, 16);
  body.writeUInt16LE(id.length, 48);
  id.copy(body, 50);
  return Buffer.concat([header(FrameType.HELLO, body.length), body]);
}

export function decodeHello(body: Buffer): Hello {
  if (body.length < HELLO_FIXED_BYTES) throw invalidFrame(`HELLO of ${body.length} bytes`);
  if (body.readUInt32LE(0) !== CHANNEL_MAGIC) throw invalidFrame('HELLO without the channel magic');
  const version = body.readUInt16LE(4);
  if (version !== CHANNEL_VERSION) throw new FerryError('PROTOCOL_MISMATCH', { side: 'dest', phase: 'precopy', detail: `page channel version ${version} is not spoken here` });
  const idBytes = body.readUInt16LE(48);
  if (body.length !== HELLO_FIXED_BYTES + idBytes) throw invalidFrame(`HELLO of ${body.length} bytes names a migration id of ${idBytes}`);
  return {
    channel: body.readUInt16LE(6),
    epoch: body.readBigUInt64LE(8).toString(),
    token: Buffer.from(body.subarray(16, 48)),
    migrationId: body.subarray(50).toString('utf8'),
  };
}

export function encodeEmpty(type: typeof FrameType.READY | typeof FrameType.CLOSE): Buffer {
  return header(type, 0);
}

/**
 * The frame of one batch as a list of buffers for one corked write: the header with the page entries, then
 * the payload as it is (never copied here). `headroom`: bytes in front of the payload, in its ArrayBuffer, that
 * the caller owns (PageBatch.headroom); when the header and entries fit there, they are written there and the
 * frame is one buffer (a TLS socket would copy two into one).
 */
export function encodeBatch(b: BatchFrame, headroom = 0): Buffer[] {
  const n = b.pages;
  const headBytes = FRAME_HEADER_BYTES + BATCH_FIXED_BYTES + n * PAGE_ENTRY_BYTES;
  const inPlace = headroom >= headBytes && b.payload.length > 0;
  const head = inPlace ? Buffer.from(b.payload.buffer, b.payload.byteOffset - headBytes, headBytes + b.payload.length) : Buffer.allocUnsafe(headBytes);
  head.writeUInt32LE(BATCH_FIXED_BYTES + n * PAGE_ENTRY_BYTES + b.payload.length, 0);
  head.writeUInt32LE(FrameType.BATCH, 4); // type, then the 3 zero bytes
  let o = FRAME_HEADER_BYTES;
  head.writeBigUInt64LE(b.seq, o);
  head.writeUInt32LE(b.round, o + 8);
  head.writeUInt32LE(b.task, o + 12);
  head.writeUInt32LE(n, o + 16);
  head.writeUInt32LE(b.codec, o + 20); // codec, then 3 zero bytes
  head.writeUInt32LE(b.payload.length, o + 24);
  head.writeUInt32LE(b.rawBytes, o + 28);
  o += BATCH_FIXED_BYTES;
  o += b.pageNumbers.copy(head, o);
  o += b.hashes.copy(head, o);
  b.kinds.copy(head, o);
  if (inPlace) return [head];
  return b.payload.length > 0 ? [head, b.payload] : [head];
}

/** A BATCH body's layout, checked; the page fields are views of `body` (no copy). */
export function decodeBatch(body: Buffer): BatchFrame {
  if (body.length < BATCH_FIXED_BYTES) throw invalidFrame(`BATCH of ${body.length} bytes`);
  const pages = body.readUInt32LE(16);
  const payloadBytes = body.readUInt32LE(24);
  const rawBytes = body.readUInt32LE(28);
  if (pages === 0 || pages > MAX_CHANNEL_BATCH_PAGES) throw invalidFrame(`a batch of ${pages} pages (1 to ${MAX_CHANNEL_BATCH_PAGES})`);
  if (rawBytes > MAX_CHANNEL_PAYLOAD_BYTES || payloadBytes > MAX_CHANNEL_PAYLOAD_BYTES) throw invalidFrame(`a batch of ${rawBytes} raw and ${payloadBytes} payload bytes`);
  if (body.readUInt8(21) !== 0 || body.readUInt16LE(22) !== 0) throw invalidFrame('reserved bytes of a BATCH are set');
  const entries = BATCH_FIXED_BYTES + pages * PAGE_ENTRY_BYTES;
  if (body.length !== entries + payloadBytes) throw invalidFrame(`BATCH of ${body.length} bytes for ${pages} pages and ${payloadBytes} payload bytes`);
  let o = BATCH_FIXED_BYTES;
  const pageNumbers = body.subarray(o, (o += pages * 8));
  const hashes = body.subarray(o, (o += pages * HASH_BYTES));
  const kinds = body.subarray(o, (o += pages));
  return {
    seq: body.readBigUInt64LE(0),
    round: body.readUInt32LE(8),
    task: body.readUInt32LE(12),
    pages,
    codec: body[20]!,
    payloadBytes,
    rawBytes,
    pageNumbers,
    hashes,
    kinds,
    payload: body.subarray(o),
  };
}

export function encodeAck(a: Ack): Buffer {
  const f = header(FrameType.ACK, ACK_BYTES);
  const b = Buffer.alloc(ACK_BYTES);
  b.writeBigUInt64LE(a.seq, 0);
  b.writeUInt32LE(a.batches, 8);
  b.writeUInt32LE(a.pages, 12);
  b.writeBigUInt64LE(a.bytes, 16);
  b.writeBigUInt64LE(a.storeMicros, 24);
  return Buffer.concat([f, b]);
}

export function decodeAck(body: Buffer): Ack {
  if (body.length !== ACK_BYTES) throw invalidFrame(`ACK of ${body.length} bytes`, 'source');
  return { seq: body.readBigUInt64LE(0), batches: body.readUInt32LE(8), pages: body.readUInt32LE(12), bytes: body.readBigUInt64LE(16), storeMicros: body.readBigUInt64LE(24) };
}

/** The error as the gRPC trailer carries it (bounded the same way), so that the other side rebuilds it whole. */
export function encodeError(e: FerryError): Buffer {
  let json = Buffer.from(JSON.stringify(boundedForTrailer(e.toJSON())), 'utf8');
  if (json.length > MAX_ERROR_BYTES) json = Buffer.from(JSON.stringify({ code: e.code, key: e.key, message: truncateText(e.message, 256), hint: '', retryable: e.retryable }), 'utf8');
  return Buffer.concat([header(FrameType.ERROR, json.length), json]);
}

/** The peer's error; a malformed one is PAGE_STREAM_FAILED with what could be read. */
export function decodeError(body: Buffer): FerryError {
  try {
    const s = JSON.parse(body.toString('utf8')) as SerializedFerryError;
    const key = keyForCode(s.code);
    if (key) return new FerryError(key, { message: s.message, hint: s.hint, phase: s.phase, side: s.side, sourceState: s.sourceState, detail: s.detail });
  } catch {
    /* below */
  }
  return new FerryError('PAGE_STREAM_FAILED', { side: 'dest', phase: 'precopy', detail: `the dest ended the channel with an unreadable error (${body.length} bytes)` });
}
