/** The wire's page bitmaps (unconfirmed, remote, with_data, FillReady): one bit per page, LSB first. */

/** Bit i (false past the end: an empty bitmap is all zero). */
export function bitAt(bits: Uint8Array | undefined, i: number): boolean {
  return bits !== undefined && i >>> 3 < bits.length && (bits[i >>> 3]! & (1 << (i & 7))) !== 0;
}
