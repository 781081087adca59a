/**
 * Frame bodies reused instead of allocated per batch: a 1 MiB Buffer per batch is external memory V8 learns of
 * only through its GC, which then ran for ~0.4 s per GiB on each side. A body given back is handed out again
 * for the next frame that fits; only buffers this pool made are taken back (a view of a socket's chunk is not).
 */
const GRANULE = 64 * 1024;

export class BodyPool {
  private readonly free: Buffer[] = [];
  private readonly mine = new WeakSet<ArrayBuffer>();

  constructor(private readonly keep = 4) {}

  /** `n` bytes, not zeroed. */
  take(n: number): Buffer {
    const i = this.free.findIndex((b) => b.length >= n);
    if (i >= 0) return this.free.splice(i, 1)[0]!.subarray(0, n);
    const b = Buffer.allocUnsafeSlow(Math.ceil(n / GRANULE) * GRANULE);
    this.mine.add(b.buffer);
    return b.subarray(0, n);
  }

  /** Back to the pool once nothing reads `body` any more; anything the pool did not make is left to the GC. */
  give(body: Buffer): void {
    const ab = body.buffer as ArrayBuffer;
    if (!this.mine.has(ab) || this.free.length >= this.keep || this.free.some((b) => b.buffer === ab)) return;
    this.free.push(Buffer.from(ab, 0, ab.byteLength));
  }
}
