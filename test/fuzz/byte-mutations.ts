/**
 * Byte-level mutations of an encoded input (an image, a protobuf message): the ones that break framing and
 * varints (bit flips, boundary values, truncation, duplicated and removed ranges, runs of continuation bytes,
 * u32 length fields set to edges). Each mutation is named, so a failing input can be described.
 */
import type { FuzzRandom } from './fuzz-random.js';

export interface Mutated {
  bytes: Buffer;
  /** What was done, in order, e.g. `flip@12.3`, `truncate@40`. */
  ops: string[];
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x08, 0x10, 0x12, 0x1a];
const INTERESTING_U32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x1000, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];

type Op = (rnd: FuzzRandom, b: Buffer) => [Buffer, string];

const at = (rnd: FuzzRandom, b: Buffer): number => rnd.int(Math.max(1, b.length));

const OPS: readonly (readonly [number, Op])[] = [
  [
    6,
    (rnd, b) => {
      if (b.length === 0) return [Buffer.from([rnd.u32() & 0xff]), 'grow1'];
      const i = at(rnd, b);
      const bit = rnd.int(8);
      const out = Buffer.from(b);
      out[i]! ^= 1 << bit;
      return [out, `flip@${i}.${bit}`];
    },
  ],
  [
    4,
    (rnd, b) => {
      if (b.length === 0) return [Buffer.from([rnd.pick(INTERESTING_BYTES)]), 'grow1'];
      const i = at(rnd, b);
      const v = rnd.chance(0.5) ? rnd.pick(INTERESTING_BYTES) : rnd.u32() & 0xff;
      const out = Buffer.from(b);
      out[i] = v;
      return [out, `set@${i}=${v}`];
    },
  ],
  [
    3,
    (rnd, b) => {
      const n = rnd.int(b.length + 1);
      return [b.subarray(0, n), `truncate@${n}`];
    },
  ],
  [
    2,
    (rnd, b) => {
      const extra = rnd.bytes(rnd.range(1, 64));
      return [Buffer.concat([b, extra]), `append${extra.length}`];
    },
  ],
  [
    2,
    (rnd, b) => {
      const i = rnd.int(b.length + 1);
      const extra = rnd.bytes(rnd.range(1, 16));
      return [Buffer.concat([b.subarray(0, i), extra, b.subarray(i)]), `insert@${i}+${extra.length}`];
    },
  ],
  [
    2,
    (rnd, b) => {
      const i = rnd.int(b.length + 1);
      const n = rnd.int(Math.min(64, b.length - i) + 1);
      return [Buffer.concat([b.subarray(0, i), b.subarray(i + n)]), `delete@${i}-${n}`];
    },
  ],
  [
    2,
    (rnd, b) => {
      const i = rnd.int(b.length + 1);
      const n = rnd.int(Math.min(256, b.length - i) + 1);
      const j = rnd.int(b.length + 1);
      return [Buffer.concat([b.subarray(0, j), b.subarray(i, i + n), b.subarray(j)]), `dup@${i}-${n}->${j}`];
    },
  ],
  [
    2,
    (rnd, b) => {
      // A varint that never ends, or one that runs to 10 bytes and beyond.
      const i = rnd.int(b.length + 1);
      const run = Buffer.alloc(rnd.range(2, 12), rnd.chance(0.5) ? 0xff : 0x80);
      return [Buffer.concat([b.subarray(0, i), run, b.subarray(i)]), `varint-run@${i}x${run.length}`];
    },
  ],
  [
    3,
    (rnd, b) => {
      if (b.length < 4) return [Buffer.concat([b, Buffer.alloc(4, 0xff)]), 'grow4'];
      const i = rnd.int(b.length - 3);
      const v = rnd.pick(INTERESTING_U32);
      const out = Buffer.from(b);
      out.writeUInt32LE(v, i);
      return [out, `u32@${i}=${v}`];
    },
  ],
  [
    1,
    (rnd, b) => {
      const i = rnd.int(b.length + 1);
      const j = rnd.int(b.length + 1);
      const [lo, hi] = i < j ? [i, j] : [j, i];
      return [Buffer.concat([b.subarray(hi), b.subarray(lo, hi), b.subarray(0, lo)]), `rotate@${lo}-${hi}`];
    },
  ],
];

/** Applies 1 to `maxOps` random mutations to a copy of `input`. */
export function mutateBytes(rnd: FuzzRandom, input: Buffer, maxOps = 4): Mutated {
  let bytes = input;
  const ops: string[] = [];
  const n = rnd.range(1, maxOps);
  for (let k = 0; k < n; k++) {
    const [out, name] = rnd.weighted(OPS)(rnd, bytes);
    bytes = out;
    ops.push(name);
  }
  return { bytes: Buffer.from(bytes), ops };
}
