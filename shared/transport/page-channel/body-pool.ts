/**
 * Frame bodies reused instead of allocated per batch: a 1 MiB Buffer per batch is external memory V8 learns of
 * only through its GC, which then ran for ~0.4 s per GiB on each side. A body given back is handed out again
 * for the next frame that fits; only buffers this pool made are taken back (a view of a socket's chunk is not).
 * The pool keeps up to `keepBytes`: as much as its channel may hold at once, so that a dest behind its source
 * (frames queued up to the channel's bound) still takes every body from the pool. A fresh body then (the pool
 * kept 4 before) lived long enough to be promoted, and the old generation's garbage cost a major GC every few
 * dozen MiB.
 */
const GRANULE = 64 * 1024;

export class BodyPool {
  private readonly free: Buffer[] = [];
  private freeBytes = 0;
  private readonly mine = new WeakSet<ArrayBuffer>();

  constructor(private readonly keepBytes = 4 * 1024 * 1024) {}

  /** `n` bytes, not zeroed. */
  take(n: number): Buffer {
    const i = this.free.findIndex((b) => b.length >= n);
    if (i >= 0) {
      const b = this.free.splice(i, 1)[0]!;
      this.freeBytes -= b.length;
      return b.subarray(0, n);
    }
    const b = Buffer.allocUnsafeSlow(Math.ceil(n / GRANULE) * GRANULE);
    this.mine.add(b.buffer);
    return b.subarray(0, n);
  }

  /** Back to the pool once nothing reads `body` any more; anything the pool did not make is left to the GC. */
  give(body: Buffer): void {
    const ab = body.buffer as ArrayBuffer;
    if (!this.mine.has(ab) || this.freeBytes + ab.byteLength > this.keepBytes || this.free.some((b) => b.buffer === ab)) return;
    this.free.push(Buffer.from(ab, 0, ab.byteLength));
    this.freeBytes += ab.byteLength;
  }

  /** Bytes kept for reuse (tests). */
  get keptBytes(): number {
    return this.freeBytes;
  }
}
