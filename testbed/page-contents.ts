/**
 * Page contents for the codec's tests and benchmark: heap-like pages (the layout memtest --heap-like writes:
 * 64-byte objects of a header, a pointer, small integers and zero padding) and random ones (memtest's default,
 * incompressible).
 */
import { randomFillSync } from 'node:crypto';

/** `pages` heap-like pages of `pageSize` bytes; `seed` varies the header and pointers. */
export function heapLikePages(pages: number, pageSize = 4096, seed = 1): Buffer {
  const b = Buffer.alloc(pages * pageSize);
  let x = BigInt(seed) * 0x9e3779b97f4a7c15n;
  const next = (): bigint => {
    x = (x ^ (x >> 12n) ^ (x << 25n)) & 0xffffffffffffffffn;
    x ^= x >> 27n;
    return (x * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn;
  };
  for (let p = 0; p < pages; p++) {
    const key = next();
    for (let o = 0; o + 64 <= pageSize; o += 64) {
      const r = next();
      const at = p * pageSize + o;
      b.writeBigUInt64LE(key, at);
      b.writeBigUInt64LE(0x00007f3a00000000n | (r & 0xfffff0n), at + 8);
      b.writeBigUInt64LE(r >> 56n, at + 16);
      b.writeBigUInt64LE((r >> 20n) & 0xffffn, at + 24);
      b.writeBigUInt64LE(BigInt((o / 64) * 24), at + 32);
    }
  }
  return b;
}

/** `pages` pages of random bytes. */
export function randomPages(pages: number, pageSize = 4096): Buffer {
  return randomFillSync(Buffer.allocUnsafe(pages * pageSize));
}
