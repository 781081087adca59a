/**
 * Page number -> (slot, 128-bit hash). The source keeps one per task for the pages the dest holds; the dest
 * keeps one per task for its page store, where the slot is the page's place in the store file.
 * Page numbers (address / page size) stay below 2^45 on every 64-bit Linux, so they are exact JS numbers.
 */
export const HASH_BYTES = 16;

export class PageHashIndex {
  private readonly slots = new Map<number, number>();
  private hashes = Buffer.alloc(HASH_BYTES * 1024);
  /** The page of each slot: a walk in page order finds the next page's slot without a Map lookup. */
  private pageOfSlot = new Float64Array(1024);

  get size(): number {
    return this.slots.size;
  }

  slotOf(page: number): number | undefined {
    return this.slots.get(page);
  }

  /**
   * slotOf, for a walk in page order: `previous` is the slot of the page looked up before (-1 at first). Slots
   * are handed out in the order pages are first sent, which is address order, so the next page is most often in
   * the next slot; only a miss costs a Map lookup (page numbers are beyond small integers: slow keys).
   */
  slotAfter(page: number, previous: number): number | undefined {
    const guess = previous + 1;
    if (guess > 0 && guess < this.slots.size && this.pageOfSlot[guess] === page) return guess;
    return this.slots.get(page);
  }

  /** True when slots [slot, slot + count) hold exactly the `count` hashes at `hashes[hashOffset..]`. */
  holdsRun(slot: number, count: number, hashes: Buffer, hashOffset: number): boolean {
    if (slot < 0 || slot + count > this.slots.size) return false;
    return this.hashes.compare(hashes, hashOffset, hashOffset + count * HASH_BYTES, slot * HASH_BYTES, (slot + count) * HASH_BYTES) === 0;
  }

  /** True when the index holds this page with exactly this hash. */
  holds(page: number, hashes: Buffer, hashOffset: number): boolean {
    const slot = this.slots.get(page);
    if (slot === undefined) return false;
    return this.hashes.compare(hashes, hashOffset, hashOffset + HASH_BYTES, slot * HASH_BYTES, (slot + 1) * HASH_BYTES) === 0;
  }

  /** Records the page's hash; returns its slot (new pages get the next free slot). */
  set(page: number, hashes: Buffer, hashOffset: number): number {
    let slot = this.slots.get(page);
    if (slot === undefined) {
      slot = this.slots.size;
      this.slots.set(page, slot);
      if ((slot + 1) * HASH_BYTES > this.hashes.length) {
        const grown = Buffer.alloc(this.hashes.length * 2);
        this.hashes.copy(grown);
        this.hashes = grown;
        const pages = new Float64Array(this.pageOfSlot.length * 2);
        pages.set(this.pageOfSlot);
        this.pageOfSlot = pages;
      }
      this.pageOfSlot[slot] = page;
    }
    hashes.copy(this.hashes, slot * HASH_BYTES, hashOffset, hashOffset + HASH_BYTES);
    return slot;
  }

  /**
   * Copies the slot's hash to `out` at `outOffset`. No view is made: the final delta does this for every page
   * the dest holds unchanged, inside the freeze, and a view per page costs more than the copy.
   */
  copyHash(slot: number, out: Uint8Array, outOffset: number): void {
    const h = this.hashes;
    const s = slot * HASH_BYTES;
    for (let k = 0; k < HASH_BYTES; k++) out[outOffset + k] = h[s + k]!;
  }

  /** A view of the slot's hash (valid until the next set()). */
  hashAt(slot: number): Buffer {
    return this.hashes.subarray(slot * HASH_BYTES, (slot + 1) * HASH_BYTES);
  }

  pages(): IterableIterator<number> {
    return this.slots.keys();
  }
}
