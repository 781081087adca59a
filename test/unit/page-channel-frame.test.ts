/**
 * The page channel's framing (shared/transport/page-channel/): every frame round-trips, whatever chunks the
 * bytes arrive in; a header over its type's bound, of an unexpected type or with reserved bits set is refused
 * from the header alone (nothing allocated for the body); a BATCH whose layout does not add up is refused.
 */
import { describe, expect, it, vi } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { FrameReader, type Frame } from '../../shared/transport/page-channel/frame-reader.js';
import {
  decodeAck,
  decodeBatch,
  decodeError,
  decodeHello,
  encodeAck,
  encodeBatch,
  encodeEmpty,
  encodeError,
  encodeHello,
  FRAME_HEADER_BYTES,
  FrameType,
  MAX_BODY_BYTES,
  type FrameTypeCode,
} from '../../shared/transport/page-channel/page-channel-frame.js';
import { BatchPayloadDecoder } from '../../shared/pages/batch-codec.js';
import { BATCH_HEADROOM, PageBatchEncoder, type PageBatch } from '../../shared/transport/page-batch.js';
import { expectFerryError } from '../support/ferry-error-expect.js';
import { handBatch } from '../support/dest-grpc.js';

const ALL = new Set<FrameTypeCode>(Object.values(FrameType));

/** The dest's decode of a BATCH frame's payload (the one seam of --compress, shared with StreamPages). */
const decodePayload = (b: { codec: number; payload: Buffer; rawBytes: number; kinds: Buffer; pages: number }): Buffer =>
  new BatchPayloadDecoder().decode({ codec: b.codec, payload: b.payload, rawBytes: b.rawBytes }, b.kinds, b.pages, 4096);
const TOKEN = Buffer.alloc(32, 7);

function framesOf(bytes: Buffer, chunkBytes: number, accepts: ReadonlySet<FrameTypeCode> = ALL): Frame[] {
  const r = new FrameReader(accepts, 'dest');
  const out: Frame[] = [];
  for (let o = 0; o < bytes.length; o += chunkBytes) {
    r.push(bytes.subarray(o, o + chunkBytes));
    for (let f = r.next(); f; f = r.next()) out.push(f);
  }
  expect(r.pendingBytes).toBe(0);
  return out;
}

function header(type: number, bodyBytes: number, reserved = 0): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32LE(bodyBytes, 0);
  h[4] = type;
  h[5] = reserved;
  return h;
}

const batchFrame = (seq: bigint, pages: number[]): Buffer => {
  const b = handBatch(pages, { zero: new Set([pages[1]!]) });
  return Buffer.concat(encodeBatch({ seq, round: 2, task: 77, pages: pages.length, codec: 0, payloadBytes: b.data.length, rawBytes: b.data.length, ...b, payload: b.data }));
};

describe('page channel frames', () => {
  it('round-trips HELLO, READY, BATCH, ACK, ERROR and CLOSE in one byte stream cut at any chunk size', () => {
    const hello = encodeHello({ migrationId: 'mig-0123456789', epoch: '18446744073709551615', token: TOKEN, channel: 3 });
    const batch = batchFrame(5n, [10, 11, 12, 40]);
    const ack = encodeAck({ seq: 5n, batches: 2, pages: 300, bytes: 1_228_800n, storeMicros: 4_321n });
    const err = encodeError(new FerryError('PAGE_CHANNEL_TOKEN_INVALID', { side: 'dest', phase: 'precopy', detail: 'migration x' }));
    const stream = Buffer.concat([hello, encodeEmpty(FrameType.READY), batch, ack, err, encodeEmpty(FrameType.CLOSE)]);
    for (const chunk of [1, 3, 7, 8, 9, 100, 4096, stream.length]) {
      const frames = framesOf(stream, chunk);
      expect(frames.map((f) => f.type)).toEqual([FrameType.HELLO, FrameType.READY, FrameType.BATCH, FrameType.ACK, FrameType.ERROR, FrameType.CLOSE]);
      expect(decodeHello(frames[0]!.body)).toEqual({ migrationId: 'mig-0123456789', epoch: '18446744073709551615', token: TOKEN, channel: 3 });
      const b = decodeBatch(frames[2]!.body);
      const want = handBatch([10, 11, 12, 40], { zero: new Set([11]) });
      expect({ seq: b.seq, round: b.round, task: b.task, pages: b.pages, codec: b.codec }).toEqual({ seq: 5n, round: 2, task: 77, pages: 4, codec: 0 });
      expect(b.pageNumbers.equals(want.pageNumbers) && b.hashes.equals(want.hashes) && b.kinds.equals(want.kinds)).toBe(true);
      expect(decodePayload(b).equals(want.data)).toBe(true);
      expect(decodeAck(frames[3]!.body)).toEqual({ seq: 5n, batches: 2, pages: 300, bytes: 1_228_800n, storeMicros: 4_321n });
      const e = decodeError(frames[4]!.body);
      expect([e.key, e.detail]).toEqual(['PAGE_CHANNEL_TOKEN_INVALID', 'migration x']);
    }
  });

  it('writes a raw batch\'s header into the encoder\'s headroom: one buffer, the same bytes as two, the data not copied', async () => {
    const batches: PageBatch[] = [];
    const enc = new PageBatchEncoder(4096, (b) => {
      batches.push(b);
      return Promise.resolve();
    });
    const page = Buffer.alloc(4096, 0x5a);
    const hash = Buffer.alloc(16, 3);
    for (let p = 0; p < 300; p++) await enc.add(0x7f0000000 + p, hash, 0, page, 0, p % 7 === 0);
    await enc.flush();
    expect(batches.map((b) => b.headroom)).toEqual([BATCH_HEADROOM, BATCH_HEADROOM]);
    for (const b of batches) {
      const pages = b.pageNumbers.length / 8;
      const f = { seq: 9n, round: 1, task: 77, pages, codec: 0, payloadBytes: b.data.length, rawBytes: b.data.length, ...b, payload: b.data };
      const two = encodeBatch(f);
      const one = encodeBatch(f, b.headroom);
      expect([two.length, one.length]).toEqual([2, 1]);
      expect(one[0]!.equals(Buffer.concat(two))).toBe(true);
      expect(one[0]!.buffer).toBe(b.data.buffer); // a view of the batch's own buffer
      expect(one[0]!.byteOffset + one[0]!.length).toBe(b.data.byteOffset + b.data.length);
    }
    // Too little room (a payload that is not the encoder's): the header is a buffer of its own.
    const b = batches[0]!;
    const f = { seq: 9n, round: 1, task: 77, pages: b.pageNumbers.length / 8, codec: 0, payloadBytes: b.data.length, rawBytes: b.data.length, ...b, payload: b.data };
    expect(encodeBatch(f, 100).length).toBe(2);
  });

  it('keeps a body that arrived in one chunk as a view of it (no copy)', () => {
    const bytes = batchFrame(1n, [1, 2, 3]);
    const r = new FrameReader(ALL, 'dest');
    r.push(bytes);
    const f = r.next()!;
    expect(f.body.buffer).toBe(bytes.buffer);
  });

  it('refuses a frame over its bound from the header alone, before allocating its body', () => {
    for (const [type, bytes] of [
      [FrameType.BATCH, MAX_BODY_BYTES[FrameType.BATCH] + 1],
      [FrameType.BATCH, 0xffffffff],
      [FrameType.HELLO, 4096],
      [FrameType.ACK, 33],
      [FrameType.READY, 1],
      [FrameType.ERROR, 1 << 20],
    ] as const) {
      const r = new FrameReader(ALL, 'dest');
      r.push(header(type, bytes));
      const alloc = vi.spyOn(Buffer, 'allocUnsafe');
      try {
        expectFerryError(() => r.next(), 'PAGE_CHANNEL_FRAME_INVALID');
        expect(alloc).not.toHaveBeenCalled();
      } finally {
        alloc.mockRestore();
      }
    }
  });

  it('refuses a frame type not expected now (a BATCH before HELLO), an unknown type and set reserved bytes', () => {
    const beforeHello = new FrameReader(new Set([FrameType.HELLO]), 'dest');
    beforeHello.push(batchFrame(1n, [1, 2]));
    expectFerryError(() => beforeHello.next(), 'PAGE_CHANNEL_FRAME_INVALID');
    const unknown = new FrameReader(ALL, 'dest');
    unknown.push(header(9, 0));
    expectFerryError(() => unknown.next(), 'PAGE_CHANNEL_FRAME_INVALID');
    const reserved = new FrameReader(ALL, 'dest');
    reserved.push(header(FrameType.CLOSE, 0, 1));
    expectFerryError(() => reserved.next(), 'PAGE_CHANNEL_FRAME_INVALID');
  });

  it('refuses a BATCH whose sizes do not add up, with no pages, or over the page bound; a HELLO without the magic or of another version', () => {
    const body = batchFrame(1n, [1, 2, 3]).subarray(FRAME_HEADER_BYTES);
    const mutate = (f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(body);
      f(b);
      return b;
    };
    expectFerryError(() => decodeBatch(body.subarray(0, body.length - 1)), 'PAGE_CHANNEL_FRAME_INVALID');
    expectFerryError(() => decodeBatch(mutate((b) => b.writeUInt32LE(0, 16))), 'PAGE_CHANNEL_FRAME_INVALID');
    expectFerryError(() => decodeBatch(mutate((b) => b.writeUInt32LE(4097, 16))), 'PAGE_CHANNEL_FRAME_INVALID');
    expectFerryError(() => decodeBatch(mutate((b) => b.writeUInt32LE(b.readUInt32LE(24) + 1, 24))), 'PAGE_CHANNEL_FRAME_INVALID');
    expectFerryError(() => decodeBatch(mutate((b) => (b[21] = 1))), 'PAGE_CHANNEL_FRAME_INVALID');
    // The raw length must be the payload's without a codec, and a codec not known here is refused.
    const b = decodeBatch(body);
    expectFerryError(() => decodePayload({ ...b, rawBytes: b.rawBytes + 1 }), 'PAGE_PAYLOAD_INVALID');
    expectFerryError(() => decodePayload({ ...b, codec: 9 }), 'PAGE_PAYLOAD_INVALID');
    const hello = encodeHello({ migrationId: 'mig-0123456789', epoch: '1', token: TOKEN, channel: 0 }).subarray(FRAME_HEADER_BYTES);
    const h = (f: (x: Buffer) => void): Buffer => {
      const x = Buffer.from(hello);
      f(x);
      return x;
    };
    expectFerryError(() => decodeHello(h((x) => x.writeUInt32LE(0, 0))), 'PAGE_CHANNEL_FRAME_INVALID');
    expectFerryError(() => decodeHello(h((x) => x.writeUInt16LE(2, 4))), 'PROTOCOL_MISMATCH');
    expectFerryError(() => decodeHello(h((x) => x.writeUInt16LE(99, 48))), 'PAGE_CHANNEL_FRAME_INVALID');
  });
});
