/** The page batch payload's codec (issue 15): zstd through libzstd, bounded on the dest before any allocation. */
import { describe, expect, it } from 'vitest';
import { BatchPayloadDecoder, BatchPayloadEncoder, PAGE_CODEC, acceptedPageCodecs, localPageCodecs } from '../../shared/pages/batch-codec.js';
import { ZstdCompressor, zstdProblem } from '../../shared/native/zstd.js';
import { PAGE_KIND_DATA, PAGE_KIND_ZERO } from '../../shared/transport/page-batch.js';
import { heapLikePages, randomPages } from '../../testbed/page-contents.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const PAGE = 4096;
const problem = zstdProblem();
if (problem) console.log(`batch-codec: skipped, ${problem}`);

const kindsOf = (dataPages: number, zeroPages = 0): Buffer => Buffer.from([...Array<number>(dataPages).fill(PAGE_KIND_DATA), ...Array<number>(zeroPages).fill(PAGE_KIND_ZERO)]);

describe.skipIf(problem !== undefined)('batch payload codec', () => {
  it('this host offers zstd, and accepts only what was offered', () => {
    expect(localPageCodecs()).toEqual(['zstd']);
    expect(acceptedPageCodecs(['zstd', 'lz4'])).toEqual(['zstd']);
    expect(acceptedPageCodecs([])).toEqual([]);
  });

  it('round-trips heap-like pages compressed, several times smaller', () => {
    const data = heapLikePages(256);
    const enc = new BatchPayloadEncoder().encode(data, 'zstd');
    expect(enc.codec).toBe('zstd');
    expect(enc.rawBytes).toBe(data.length);
    expect(data.length / enc.payload.length).toBeGreaterThan(3);
    const out = new BatchPayloadDecoder().decode({ codec: PAGE_CODEC.zstd, payload: Buffer.from(enc.payload), rawBytes: enc.rawBytes }, kindsOf(256, 10), 266, PAGE);
    expect(out.equals(data)).toBe(true);
  });

  it('reuses its context and buffer: the next encode overwrites the last payload view', () => {
    const encoder = new BatchPayloadEncoder();
    const a = encoder.encode(heapLikePages(8, PAGE, 1), 'zstd');
    const first = Buffer.from(a.payload);
    const b = encoder.encode(heapLikePages(8, PAGE, 2), 'zstd');
    expect(b.payload.buffer).toBe(a.payload.buffer);
    expect(first.equals(b.payload)).toBe(false);
  });

  it('sends incompressible pages as they are (never bigger than raw), and says what the frame would have been', () => {
    const data = randomPages(64);
    const enc = new BatchPayloadEncoder().encode(data, 'zstd');
    expect(enc.codec).toBe('none');
    expect(enc.payload).toBe(data);
    expect(enc.frameBytes).toBeGreaterThanOrEqual(data.length * 0.99);
    expect(new BatchPayloadDecoder().decode({ codec: PAGE_CODEC.none, payload: enc.payload, rawBytes: enc.rawBytes }, kindsOf(64), 64, PAGE)).toBe(data);
  });

  it('codec none with no raw length is a batch from a source before compression', () => {
    const data = randomPages(2);
    expect(new BatchPayloadDecoder().decode({ codec: PAGE_CODEC.none, payload: data, rawBytes: 0 }, kindsOf(2), 2, PAGE)).toBe(data);
    expectFerryError(() => new BatchPayloadDecoder().decode({ codec: PAGE_CODEC.none, payload: data, rawBytes: 3 * PAGE }, kindsOf(2), 2, PAGE), 'PAGE_PAYLOAD_INVALID');
  });

  it('refuses a corrupt compressed payload with a code', () => {
    const data = heapLikePages(16);
    const frame = Buffer.from(new BatchPayloadEncoder().encode(data, 'zstd').payload);
    const decode = (payload: Buffer): Buffer => new BatchPayloadDecoder().decode({ codec: PAGE_CODEC.zstd, payload, rawBytes: data.length }, kindsOf(16), 16, PAGE);
    const flipped = Buffer.from(frame);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    // A flipped byte either breaks the frame (zstd's checks) or decodes to other bytes: then the page hashes fail.
    try {
      expect(decode(flipped).equals(data)).toBe(false);
    } catch (e) {
      expectFerryError(() => {
        throw e;
      }, 'PAGE_PAYLOAD_INVALID');
    }
    expectFerryError(() => decode(frame.subarray(0, frame.length - 5)), 'PAGE_PAYLOAD_INVALID');
    expectFerryError(() => decode(Buffer.from('not a zstd frame at all')), 'PAGE_PAYLOAD_INVALID');
    expectFerryError(() => decode(Buffer.alloc(0)), 'PAGE_PAYLOAD_INVALID');
  });

  it('refuses a raw length that does not match the batch pages before it allocates anything', () => {
    const data = heapLikePages(4);
    const frame = Buffer.from(new BatchPayloadEncoder().encode(data, 'zstd').payload);
    const d = new BatchPayloadDecoder();
    // 2^31 bytes claimed for 4 pages: refused from the kinds alone (no 2 GiB buffer is ever asked for).
    expectFerryError(() => d.decode({ codec: PAGE_CODEC.zstd, payload: frame, rawBytes: 2 ** 31 }, kindsOf(4), 4, PAGE), 'PAGE_PAYLOAD_INVALID');
    // One page short: the frame holds more than the batch's pages.
    expectFerryError(() => d.decode({ codec: PAGE_CODEC.zstd, payload: frame, rawBytes: 3 * PAGE }, kindsOf(3, 1), 4, PAGE), 'PAGE_PAYLOAD_INVALID');
    // Kinds that do not match the page count.
    expectFerryError(() => d.decode({ codec: PAGE_CODEC.zstd, payload: frame, rawBytes: 4 * PAGE }, kindsOf(4), 5, PAGE), 'PAGE_PAYLOAD_INVALID');
    // A frame that declares its size as larger than the raw length: refused from its header.
    const big = Buffer.from(new ZstdCompressor().compress(heapLikePages(8)));
    expectFerryError(() => d.decode({ codec: PAGE_CODEC.zstd, payload: big, rawBytes: 4 * PAGE }, kindsOf(4), 4, PAGE), 'PAGE_PAYLOAD_INVALID');
    // A payload longer than any zstd frame of the raw length.
    expectFerryError(() => d.decode({ codec: PAGE_CODEC.zstd, payload: Buffer.alloc(8 * PAGE), rawBytes: 4 * PAGE }, kindsOf(4), 4, PAGE), 'PAGE_PAYLOAD_INVALID');
  });

  it('refuses an unknown codec, and zstd where it was not accepted', () => {
    const data = heapLikePages(1);
    expectFerryError(() => new BatchPayloadDecoder().decode({ codec: 7, payload: data, rawBytes: PAGE }, kindsOf(1), 1, PAGE), 'PAGE_PAYLOAD_INVALID');
    const frame = Buffer.from(new BatchPayloadEncoder().encode(data, 'zstd').payload);
    expectFerryError(() => new BatchPayloadDecoder(new Set()).decode({ codec: PAGE_CODEC.zstd, payload: frame, rawBytes: PAGE }, kindsOf(1), 1, PAGE), 'PAGE_PAYLOAD_INVALID');
  });

  it('zero pages carry no bytes under either codec', () => {
    const enc = new BatchPayloadEncoder().encode(Buffer.alloc(0), 'zstd');
    expect(enc).toMatchObject({ codec: 'none', rawBytes: 0 });
    expect(new BatchPayloadDecoder().decode({ codec: PAGE_CODEC.none, payload: enc.payload, rawBytes: 0 }, kindsOf(0, 5), 5, PAGE).length).toBe(0);
  });
});
