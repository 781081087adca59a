/**
 * A minimal protobuf wire-format reader and writer for the few CRIU image messages Ferry touches.
 * No schema, no reflection: each image codec walks its fields by number (the numbers are facts from
 * CRIU's `images/*.proto`, checked on real dumps). Only what CRIU's images use is supported: varints
 * (unsigned), length-delimited fields, and fixed32/fixed64, which are skipped.
 *
 * Errors are plain `WireError`s that name the offset; image codecs wrap them into IMAGE_INVALID.
 */

export const WireType = {
  VARINT: 0,
  FIXED64: 1,
  LEN: 2,
  FIXED32: 5,
} as const;
export type WireType = (typeof WireType)[keyof typeof WireType];

const TWO_POW_53 = 2n ** 53n;
const MAX_UINT64 = 2n ** 64n - 1n;
const MAX_UINT32 = 0xffff_ffff;

export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

export interface WireTag {
  field: number;
  wireType: WireType;
}

/** Reads one message's fields in order. Every read checks the bounds of the buffer. */
export class WireReader {
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  get offset(): number {
    return this.pos;
  }

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** The next field's number and wire type. Wire types 3/4 (groups) are refused: CRIU never writes them. */
  tag(): WireTag {
    const at = this.pos;
    const key = this.varint();
    if (typeof key === 'bigint' || key > MAX_UINT32) throw new WireError(`field key too large at offset ${at}`);
    const wireType = key & 7;
    const field = Math.floor(key / 8);
    if (field === 0) throw new WireError(`field number 0 at offset ${at}`);
    if (wireType !== WireType.VARINT && wireType !== WireType.FIXED64 && wireType !== WireType.LEN && wireType !== WireType.FIXED32) {
      throw new WireError(`unsupported wire type ${wireType} for field ${field} at offset ${at}`);
    }
    return { field, wireType };
  }

  /** An unsigned varint (at most 64 bits): a number when below 2^53, a bigint otherwise. */
  varint(): number | bigint {
    const start = this.pos;
    let small = 0; // exact while fewer than 7 bytes (49 bits) were read
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.buf[this.pos];
      if (b === undefined) throw new WireError(`truncated varint at offset ${start}`);
      this.pos++;
      if (i < 7) {
        small += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) return small;
      } else if ((b & 0x80) === 0) {
        if (i === 9 && b > 1) throw new WireError(`varint above 2^64 at offset ${start}`);
        return this.slowVarint(start, i + 1);
      }
    }
    throw new WireError(`varint longer than 10 bytes at offset ${start}`);
  }

  /** Re-decodes a long varint exactly with bigint. */
  private slowVarint(start: number, length: number): number | bigint {
    let v = 0n;
    for (let i = length - 1; i >= 0; i--) v = (v << 7n) | BigInt((this.buf[start + i] ?? 0) & 0x7f);
    return v < TWO_POW_53 ? Number(v) : v;
  }

  /** A uint64 field that must stay exact whatever its size (addresses). */
  uint64Big(wireType: WireType): bigint {
    return BigInt(this.varintOf(wireType));
  }

  /** A uint64 field used as a count: refused when it does not fit a JS number exactly. */
  uint64(wireType: WireType): number {
    const at = this.pos;
    const v = this.varintOf(wireType);
    if (typeof v === 'bigint') throw new WireError(`value ${v} at offset ${at} is too large for a count`);
    return v;
  }

  uint32(wireType: WireType): number {
    const at = this.pos;
    const v = this.varintOf(wireType);
    if (typeof v === 'bigint' || v > MAX_UINT32) throw new WireError(`value ${v} at offset ${at} exceeds uint32`);
    return v;
  }

  bool(wireType: WireType): boolean {
    return this.varintOf(wireType) !== 0;
  }

  /** A length-delimited field: a view into the buffer (not a copy). */
  bytes(wireType: WireType): Uint8Array {
    this.expect(wireType, WireType.LEN);
    const at = this.pos;
    const len = this.varint();
    if (typeof len === 'bigint' || len > this.buf.length - this.pos) {
      throw new WireError(`length ${len} at offset ${at} runs past the end (${this.buf.length - this.pos} bytes left)`);
    }
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** Skips a field this codec does not use (unknown fields are allowed: CRIU adds fields over time). */
  skip(wireType: WireType): void {
    switch (wireType) {
      case WireType.VARINT:
        this.varint();
        return;
      case WireType.LEN:
        this.bytes(wireType);
        return;
      case WireType.FIXED64:
        this.advance(8);
        return;
      case WireType.FIXED32:
        this.advance(4);
        return;
    }
  }

  private advance(n: number): void {
    if (n > this.buf.length - this.pos) throw new WireError(`fixed field at offset ${this.pos} runs past the end`);
    this.pos += n;
  }

  private varintOf(wireType: WireType): number | bigint {
    this.expect(wireType, WireType.VARINT);
    return this.varint();
  }

  private expect(got: WireType, want: WireType): void {
    if (got !== want) throw new WireError(`wire type ${got} where ${want} was expected, before offset ${this.pos}`);
  }
}

/** Builds one message. Fields are written in call order, which is how CRIU (protobuf-c) orders them: by number. */
export class WireWriter {
  private readonly chunks: Uint8Array[] = [];
  private scratch: number[] = [];

  /** An unsigned varint field (uint32, uint64, bool, enum). */
  uint(field: number, value: number | bigint): this {
    this.key(field, WireType.VARINT);
    this.pushVarint(value);
    return this;
  }

  bool(field: number, value: boolean): this {
    return this.uint(field, value ? 1 : 0);
  }

  /** A length-delimited field: bytes, a string's UTF-8, or an embedded message. */
  bytes(field: number, value: Uint8Array): this {
    this.key(field, WireType.LEN);
    this.pushVarint(value.length);
    this.flush();
    this.chunks.push(value);
    return this;
  }

  finish(): Buffer {
    this.flush();
    return Buffer.concat(this.chunks);
  }

  private key(field: number, wireType: WireType): void {
    if (!Number.isInteger(field) || field < 1 || field > 0x1fff_ffff) throw new WireError(`invalid field number ${field}`);
    this.pushVarint(field * 8 + wireType);
  }

  private pushVarint(value: number | bigint): void {
    if (typeof value === 'number') {
      if (!Number.isSafeInteger(value) || value < 0) throw new WireError(`cannot encode ${value} as an unsigned varint`);
      while (value >= 0x80) {
        this.scratch.push((value % 0x80) | 0x80);
        value = Math.floor(value / 0x80);
      }
      this.scratch.push(value);
      return;
    }
    if (value < 0n || value > MAX_UINT64) throw new WireError(`cannot encode ${value} as an unsigned 64-bit varint`);
    while (value >= 0x80n) {
      this.scratch.push(Number(value & 0x7fn) | 0x80);
      value >>= 7n;
    }
    this.scratch.push(Number(value));
  }

  private flush(): void {
    if (this.scratch.length === 0) return;
    this.chunks.push(Uint8Array.from(this.scratch));
    this.scratch = [];
  }
}
