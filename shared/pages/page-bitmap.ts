/** The wire's page bitmaps (unconfirmed, remote, with_data, FillReady): one bit per page, LSB first. */

/** Bit i (false past the end: an empty bitmap is all zero). */
export function bitAt(bits: Uint8Array | undefined, i: number): boolean {
  return bits !== undefined && i >>> 3 < bits.length && (bits[i >>> 3]! & (1 << (i & 7))) !== 0;
}

/** Sets bits [first, first + count), a byte at a time where it can. */
export function setBits(bits: Uint8Array, first: number, count: number): void {
  let i = first;
  const end = first + count;
  for (; i < end && (i & 7) !== 0; i++) bits[i >> 3]! |= 1 << (i & 7);
  for (; i + 8 <= end; i += 8) bits[i >> 3] = 0xff;
  for (; i < end; i++) bits[i >> 3]! |= 1 << (i & 7);
}
