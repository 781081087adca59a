/**
 * Frames out of a byte stream, bounded: a header announcing a body over its type's bound (or of an unknown
 * type, or of a type the reader does not accept now) is refused before anything is allocated for it. A body
 * that arrived in one chunk is a view of it; one spread over chunks is copied once into its own buffer.
 */
import { FRAME_HEADER_BYTES, invalidFrame, MAX_BODY_BYTES, type FrameTypeCode } from './page-channel-frame.js';

export interface Frame {
  type: FrameTypeCode;
  body: Buffer;
}

export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private body: { type: FrameTypeCode; buf: Buffer; filled: number } | undefined;

  /** `accepts`: the frame types allowed from the peer now (a dest accepts only HELLO until it has one). */
  constructor(
    private accepts: ReadonlySet<FrameTypeCode>,
    private readonly side: 'source' | 'dest',
    private readonly alloc: (n: number) => Buffer = (n) => Buffer.allocUnsafe(n),
  ) {}

  expect(types: ReadonlySet<FrameTypeCode>): void {
    this.accepts = types;
  }

  /** Bytes held that are not a whole frame yet. */
  get pendingBytes(): number {
    return this.buffered + (this.body?.filled ?? 0);
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next whole frame, or undefined until more bytes arrive. */
  next(): Frame | undefined {
    if (!this.body) {
      if (this.buffered < FRAME_HEADER_BYTES) return undefined;
      const h = this.take(FRAME_HEADER_BYTES);
      const bytes = h.readUInt32LE(0);
      const type = h[4] as FrameTypeCode;
      if (!this.accepts.has(type)) throw invalidFrame(`a frame of type ${type} is not expected here`, this.side);
      if (h[5] !== 0 || h[6] !== 0 || h[7] !== 0) throw invalidFrame('reserved bytes of a frame header are set', this.side);
      const max = MAX_BODY_BYTES[type];
      if (bytes > max) throw invalidFrame(`a frame of type ${type} announces ${bytes} bytes (at most ${max})`, this.side);
      if (bytes === 0) return { type, body: Buffer.alloc(0) };
      // Within the first chunk: a view, no copy.
      const first = this.chunks[0];
      if (first && first.length >= bytes) return { type, body: this.take(bytes) };
      this.body = { type, buf: this.alloc(bytes), filled: 0 };
    }
    const b = this.body;
    while (b.filled < b.buf.length && this.chunks.length > 0) {
      const c = this.chunks[0]!;
      const n = Math.min(c.length, b.buf.length - b.filled);
      c.copy(b.buf, b.filled, 0, n);
      b.filled += n;
      this.consume(n);
    }
    if (b.filled < b.buf.length) return undefined;
    this.body = undefined;
    return { type: b.type, body: b.buf };
  }

  private consume(n: number): void {
    const c = this.chunks[0]!;
    if (n === c.length) this.chunks.shift();
    else this.chunks[0] = c.subarray(n);
    this.buffered -= n;
  }

  /** `n` bytes from the front (n <= buffered): a view when the first chunk holds them. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      this.consume(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      this.consume(k);
    }
    return out;
  }
}
