/**
 * Page number -> (slot, 128-bit hash). The source keeps one per task for the pages the dest holds; the dest
 * keeps one per task for its page store, where the slot is the page's place in the store file.
 * Page numbers (address / page size) stay below 2^45 on every 64-bit Linux, so they are exact JS numbers.
 *
 * The lookup is an open-addressing table of slots (linear probing, at most half full) over the pages of the
 * slots, not a Map: page numbers of real mappings are beyond small integers, which made a Map's hashing the
 * single largest cost of both agents' page paths (11-15 % of their busy time in round 0). Nothing is ever
 * removed: a page keeps its slot for the index's life, so the table needs no tombstones.
 */
export const HASH_BYTES = 16;

/**
 * Copies one 16-byte hash. A byte loop, not Buffer.copy: that makes a Uint8Array view per call, and the page
 * paths copy a hash per page (the views were most of the dest's JS allocations).
 */
export function copyHashBytes(from: Uint8Array, fromOffset: number, to: Uint8Array, toOffset: number): void {
  for (let k = 0; k < HASH_BYTES; k++) to[toOffset + k] = from[fromOffset + k]!;
}

const INITIAL_SLOTS = 1024;
const TWO_32 = 2 ** 32;

/**
 * The bucket of a page in a table of 2^(32 - shift) buckets: Fibonacci hashing of the page number's two 32-bit
 * halves, so that consecutive pages (a round's usual walk) spread over the whole table. Exported for the tests.
 */
export function pageBucket(page: number, shift: number): number {
  const lo = page >>> 0;
  const hi = (page / TWO_32) >>> 0;
  return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b9) >>> shift;
}

export class PageHashIndex {
  private count = 0;
  private hashes = Buffer.alloc(HASH_BYTES * INITIAL_SLOTS);
  /** The page of each slot: the table's keys, and a walk in page order finds the next page's slot without a lookup. */
  private pageOfSlot = new Float64Array(INITIAL_SLOTS);
  /** Bucket -> slot + 1 (0: empty). Twice the slots' room: at most half full. */
  private table = new Int32Array(2 * INITIAL_SLOTS);
  private shift = 32 - Math.log2(2 * INITIAL_SLOTS);
  /** The highest page held: a page above it is a miss without a lookup (round 0 walks upwards through new pages). */
  private maxPage = -1;
  /** The slot of the last page found or added: the next page of a walk is most often in the next slot. */
  private cursor = -1;

  get size(): number {
    return this.count;
  }

  slotOf(page: number): number | undefined {
    const slot = this.find(page);
    return slot < 0 ? undefined : slot;
  }

  /**
   * slotOf, for a walk in page order: `previous` is the slot of the page looked up before (-1 at first). Slots
   * are handed out in the order pages are first sent, which is address order, so the next page is most often in
   * the next slot; only a miss costs a table lookup.
   */
  slotAfter(page: number, previous: number): number | undefined {
    const guess = previous + 1;
    if (guess > 0 && guess < this.count && this.pageOfSlot[guess] === page) return guess;
    return this.slotOf(page);
  }

  /** True when slots [slot, slot + count) hold exactly the `count` hashes at `hashes[hashOffset..]`. */
  holdsRun(slot: number, count: number, hashes: Buffer, hashOffset: number): boolean {
    if (slot < 0 || slot + count > this.count) return false;
    return this.hashes.compare(hashes, hashOffset, hashOffset + count * HASH_BYTES, slot * HASH_BYTES, (slot + count) * HASH_BYTES) === 0;
  }

  /** True when the index holds this page with exactly this hash. */
  holds(page: number, hashes: Buffer, hashOffset: number): boolean {
    const slot = this.find(page);
    if (slot < 0) return false;
    return this.hashes.compare(hashes, hashOffset, hashOffset + HASH_BYTES, slot * HASH_BYTES, (slot + 1) * HASH_BYTES) === 0;
  }

  /** Records the page's hash; returns its slot (new pages get the next free slot). */
  set(page: number, hashes: Buffer, hashOffset: number): number {
    let slot = this.find(page);
    if (slot < 0) slot = this.add(page);
    copyHashBytes(hashes, hashOffset, this.hashes, slot * HASH_BYTES);
    return slot;
  }

  /** Records a new hash for the page of `slot` (a slot this index handed out): set() without the lookup. */
  setAt(slot: number, hashes: Buffer, hashOffset: number): void {
    if (slot < 0 || slot >= this.count) throw new RangeError(`slot ${slot} of ${this.count}`);
    copyHashBytes(hashes, hashOffset, this.hashes, slot * HASH_BYTES);
  }

  /**
   * Copies the slot's hash to `out` at `outOffset`. No view is made: the final delta does this for every page
   * the dest holds unchanged, inside the freeze, and a view per page costs more than the copy.
   */
  copyHash(slot: number, out: Uint8Array, outOffset: number): void {
    copyHashBytes(this.hashes, slot * HASH_BYTES, out, outOffset);
  }

  /** A view of the slot's hash (valid until the next set()). */
  hashAt(slot: number): Buffer {
    return this.hashes.subarray(slot * HASH_BYTES, (slot + 1) * HASH_BYTES);
  }

  /** The pages held, in slot order (the order they were first set). */
  *pages(): IterableIterator<number> {
    for (let slot = 0; slot < this.count; slot++) yield this.pageOfSlot[slot]!;
  }

  /** The page's slot, or -1. */
  private find(page: number): number {
    if (page > this.maxPage) return -1;
    const c = this.cursor;
    if (c >= 0 && this.pageOfSlot[c] === page) return c; // looked up again (holds, then set)
    if (c + 1 < this.count && this.pageOfSlot[c + 1] === page) return (this.cursor = c + 1);
    const mask = this.table.length - 1;
    for (let b = pageBucket(page, this.shift); ; b = (b + 1) & mask) {
      const s = this.table[b]! - 1;
      if (s < 0) return -1;
      if (this.pageOfSlot[s] === page) return (this.cursor = s);
    }
  }

  /** A page not held yet gets the next slot. */
  private add(page: number): number {
    const slot = this.count;
    if (slot === this.pageOfSlot.length) this.growSlots();
    if (2 * (slot + 1) > this.table.length) this.growTable();
    this.pageOfSlot[slot] = page;
    this.place(page, slot);
    this.count = slot + 1;
    if (page > this.maxPage) this.maxPage = page;
    this.cursor = slot;
    return slot;
  }

  /** Puts `slot` in the first empty bucket of `page`'s probe sequence (the page is known not to be there). */
  private place(page: number, slot: number): void {
    const mask = this.table.length - 1;
    let b = pageBucket(page, this.shift);
    while (this.table[b] !== 0) b = (b + 1) & mask;
    this.table[b] = slot + 1;
  }

  private growSlots(): void {
    const grown = Buffer.alloc(this.hashes.length * 2);
    this.hashes.copy(grown);
    this.hashes = grown;
    const pages = new Float64Array(this.pageOfSlot.length * 2);
    pages.set(this.pageOfSlot);
    this.pageOfSlot = pages;
  }

  /** Twice the buckets, every slot placed again from its page. */
  private growTable(): void {
    this.table = new Int32Array(this.table.length * 2);
    this.shift--;
    for (let s = 0; s < this.count; s++) this.place(this.pageOfSlot[s]!, s);
  }
}
