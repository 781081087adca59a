/** Page batches: the wire layout, its validation, the page -> hash index, and the source's encoder. */
import { describe, expect, it } from 'vitest';
import { HASH_BYTES, PageHashIndex } from '../../shared/pages/page-hash-index.js';
import {
  BATCH_PAGES,
  batchPageCount,
  decodePageBatch,
  PAGE_KIND_DATA,
  PAGE_KIND_ZERO,
  PageBatchEncoder,
  readPageNumber,
  writePageNumber,
  type PageBatch,
} from '../../shared/transport/page-batch.js';
import { expectFerryError } from '../support/ferry-error-expect.js';
import { fakeHash } from '../support/fake-hash.js';

const PAGE = 4096;


/** A page whose bytes name the page number and version. */
function pageBytes(page: number, version = 0): Buffer {
  const b = Buffer.alloc(PAGE, (page + version) & 0xff);
  b.writeDoubleLE(page, 0);
  b.writeUInt32LE(version, 8);
  return b;
}

interface RawBatch {
  pageNumbers: Buffer;
  hashes: Buffer;
  kinds: Buffer;
  data: Buffer;
}

/** A well-formed batch of `pages`; the ones listed in `zero` travel as zero pages. */
function rawBatch(pages: readonly number[], zero: ReadonlySet<number> = new Set()): RawBatch {
  const pageNumbers = Buffer.alloc(pages.length * 8);
  pages.forEach((p, i) => writePageNumber(pageNumbers, i, p));
  return {
    pageNumbers,
    hashes: Buffer.concat(pages.map((p) => fakeHash(p))),
    kinds: Buffer.from(pages.map((p) => (zero.has(p) ? PAGE_KIND_ZERO : PAGE_KIND_DATA))),
    data: Buffer.concat(pages.filter((p) => !zero.has(p)).map((p) => pageBytes(p))),
  };
}

describe('page numbers on the wire', () => {
  const values = [0, 1, 0xffff_ffff, 2 ** 32, 2 ** 32 + 1, 0x7ff_ffff_ffff /* top of a 47-bit address space */, 2 ** 44, 2 ** 44 + 12345, 2 ** 45 - 1];

  it.each(values)('%d round trips exactly as a u64 LE', (page) => {
    const buf = Buffer.alloc(3 * 8, 0xaa);
    writePageNumber(buf, 1, page);
    expect(readPageNumber(buf, 1)).toBe(page);
    expect(buf.readBigUInt64LE(8)).toBe(BigInt(page));
    // The neighbours are untouched.
    expect(buf.readBigUInt64LE(0)).toBe(0xaaaa_aaaa_aaaa_aaaan);
    expect(buf.readBigUInt64LE(16)).toBe(0xaaaa_aaaa_aaaa_aaaan);
  });

  it('reads what a u64 writer wrote', () => {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(2n ** 44n + 7n);
    expect(readPageNumber(buf, 0)).toBe(2 ** 44 + 7);
  });
});

describe('decodePageBatch', () => {
  it('accepts a well-formed batch and locates each page in the data', () => {
    const pages = [5, 2 ** 44, 7, 9];
    const raw = rawBatch(pages, new Set([7]));
    const d = decodePageBatch(raw, PAGE);
    expect(d.count).toBe(4);
    expect([...d.dataOffsets]).toEqual([0, PAGE, -1, 2 * PAGE]);
    expect(pages.map((_, i) => readPageNumber(d.pageNumbers, i))).toEqual(pages);
    expect(d.data.subarray(2 * PAGE, 3 * PAGE).equals(pageBytes(9))).toBe(true);
  });

  it('accepts an empty batch', () => {
    const d = decodePageBatch(rawBatch([]), PAGE);
    expect(d.count).toBe(0);
  });

  it('accepts a batch of zero pages only, with no data', () => {
    const d = decodePageBatch(rawBatch([1, 2], new Set([1, 2])), PAGE);
    expect([...d.dataOffsets]).toEqual([-1, -1]);
    expect(d.data.length).toBe(0);
  });

  const good = (): RawBatch => rawBatch([10, 11, 12], new Set([11]));
  const malformed: { name: string; damage: (b: RawBatch) => RawBatch }[] = [
    { name: 'page numbers not a multiple of 8 bytes', damage: (b) => ({ ...b, pageNumbers: b.pageNumbers.subarray(0, 23) }) },
    { name: 'a hash too short', damage: (b) => ({ ...b, hashes: b.hashes.subarray(0, 3 * HASH_BYTES - 1) }) },
    { name: 'a hash too many', damage: (b) => ({ ...b, hashes: Buffer.concat([b.hashes, fakeHash(1)]) }) },
    { name: 'a kind missing', damage: (b) => ({ ...b, kinds: b.kinds.subarray(0, 2) }) },
    { name: 'a kind too many', damage: (b) => ({ ...b, kinds: Buffer.concat([b.kinds, Buffer.from([0])]) }) },
    { name: 'an unknown kind', damage: (b) => ({ ...b, kinds: Buffer.from([0, 2, 0]) }) },
    { name: 'data one page short', damage: (b) => ({ ...b, data: b.data.subarray(0, PAGE) }) },
    { name: 'data one byte short', damage: (b) => ({ ...b, data: b.data.subarray(0, 2 * PAGE - 1) }) },
    { name: 'data one page too long', damage: (b) => ({ ...b, data: Buffer.concat([b.data, pageBytes(1)]) }) },
    { name: 'bytes sent for a zero page', damage: (b) => ({ ...b, kinds: Buffer.from([0, 0, 0]) }) },
    {
      name: 'a page number of 2^45 (beyond any user address)',
      damage: (b) => {
        const pn = Buffer.from(b.pageNumbers);
        writePageNumber(pn, 2, 2 ** 45);
        return { ...b, pageNumbers: pn };
      },
    },
    {
      name: 'a page number with the top bit set',
      damage: (b) => {
        const pn = Buffer.from(b.pageNumbers);
        pn.writeBigUInt64LE(2n ** 63n + 1n, 8);
        return { ...b, pageNumbers: pn };
      },
    },
  ];

  it.each(malformed)('rejects $name with PAGE_INTEGRITY', ({ damage }) => {
    expect(() => decodePageBatch(good(), PAGE)).not.toThrow();
    const e = expectFerryError(() => decodePageBatch(damage(good()), PAGE), 'PAGE_INTEGRITY');
    expect(e.side).toBe('dest');
  });

  it('accepts the highest page number, 2^45 - 1', () => {
    expect(readPageNumber(decodePageBatch(rawBatch([2 ** 45 - 1]), PAGE).pageNumbers, 0)).toBe(2 ** 45 - 1);
  });

  it('honours the page size it is given', () => {
    const raw = rawBatch([1, 2]);
    expect(decodePageBatch({ ...raw, data: raw.data.subarray(0, PAGE) }, PAGE / 2).dataOffsets[1]).toBe(PAGE / 2);
    expectFerryError(() => decodePageBatch(raw, 2 * PAGE), 'PAGE_INTEGRITY');
  });
});

describe('PageHashIndex', () => {
  it('slotAfter finds the same slot as slotOf, in page order or not, across growth; copyHash copies that slot\'s hash', () => {
    const idx = new PageHashIndex();
    const h = Buffer.alloc(HASH_BYTES);
    const base = 0x7f0000000; // a real mmap area's page numbers: beyond small integers
    const pages = [...Array.from({ length: 3000 }, (_, i) => base + i), base + 5000, base - 7, base + 4000];
    for (const [i, p] of pages.entries()) {
      h.writeUInt32LE(i, 0);
      idx.set(p, h, 0);
    }
    let prev = -1;
    for (const p of [...pages, base + 1, base + 99_999, base + 2]) {
      const slot = idx.slotAfter(p, prev);
      expect(slot).toBe(idx.slotOf(p));
      if (slot !== undefined) {
        const out = Buffer.alloc(HASH_BYTES + 3);
        idx.copyHash(slot, out, 3);
        expect(out.subarray(3).equals(idx.hashAt(slot))).toBe(true);
      }
      prev = slot ?? -1;
    }
  });

  it('holds nothing when empty', () => {
    const idx = new PageHashIndex();
    expect(idx.size).toBe(0);
    expect(idx.slotOf(1)).toBeUndefined();
    expect(idx.holds(1, fakeHash(1), 0)).toBe(false);
    expect([...idx.pages()]).toEqual([]);
  });

  it('gives new pages consecutive slots and holds exactly the hash it was given', () => {
    const idx = new PageHashIndex();
    const hashes = Buffer.concat([fakeHash(100), fakeHash(2 ** 44), fakeHash(3)]);
    expect(idx.set(100, hashes, 0)).toBe(0);
    expect(idx.set(2 ** 44, hashes, HASH_BYTES)).toBe(1);
    expect(idx.set(3, hashes, 2 * HASH_BYTES)).toBe(2);
    expect(idx.size).toBe(3);
    expect(idx.slotOf(2 ** 44)).toBe(1);
    expect(idx.holds(2 ** 44, hashes, HASH_BYTES)).toBe(true);
    expect(idx.holds(2 ** 44, fakeHash(2 ** 44), 0)).toBe(true);
    expect(idx.holds(2 ** 44, hashes, 0)).toBe(false);
    expect(idx.holds(2 ** 44, fakeHash(2 ** 44, 1), 0)).toBe(false);
    expect(idx.hashAt(2).equals(fakeHash(3))).toBe(true);
    expect([...idx.pages()]).toEqual([100, 2 ** 44, 3]);
  });

  it('reuses the slot of a page set again and replaces its hash', () => {
    const idx = new PageHashIndex();
    idx.set(7, fakeHash(7, 0), 0);
    idx.set(8, fakeHash(8, 0), 0);
    expect(idx.set(7, fakeHash(7, 1), 0)).toBe(0);
    expect(idx.size).toBe(2);
    expect(idx.holds(7, fakeHash(7, 0), 0)).toBe(false);
    expect(idx.holds(7, fakeHash(7, 1), 0)).toBe(true);
    expect(idx.holds(8, fakeHash(8, 0), 0)).toBe(true);
  });

  it('copies the hash, so that the caller may reuse its buffer', () => {
    const idx = new PageHashIndex();
    const scratch = fakeHash(1);
    idx.set(1, scratch, 0);
    scratch.fill(0);
    expect(idx.holds(1, fakeHash(1), 0)).toBe(true);
  });

  it('grows past 1024 entries and keeps every hash', () => {
    const idx = new PageHashIndex();
    const n = 5000;
    for (let p = 0; p < n; p++) expect(idx.set(p * 3, fakeHash(p * 3), 0)).toBe(p);
    expect(idx.size).toBe(n);
    for (let p = 0; p < n; p++) {
      expect(idx.holds(p * 3, fakeHash(p * 3), 0)).toBe(true);
      expect(idx.hashAt(p).equals(fakeHash(p * 3))).toBe(true);
    }
    // Overwriting after growth hits the right slot.
    idx.set(3 * 1500, fakeHash(1, 9), 0);
    expect(idx.holds(3 * 1500, fakeHash(1, 9), 0)).toBe(true);
    expect(idx.holds(3 * 1499, fakeHash(3 * 1499), 0)).toBe(true);
    expect(idx.holds(3 * 1501, fakeHash(3 * 1501), 0)).toBe(true);
  });
});

describe('PageBatchEncoder', () => {
  /** Adds pages 0..n-1 (every `zeroEvery`-th a zero page) and records what was emitted, copied at emit time. */
  async function batchPages(n: number, zeroEvery = 0): Promise<{ encoder: PageBatchEncoder; emitted: PageBatch[]; copies: PageBatch[] }> {
    const emitted: PageBatch[] = [];
    const copies: PageBatch[] = [];
    const encoder = new PageBatchEncoder(PAGE, (b) => {
      emitted.push(b);
      copies.push({ ...b, pageNumbers: Buffer.from(b.pageNumbers), hashes: Buffer.from(b.hashes), kinds: Buffer.from(b.kinds), data: Buffer.from(b.data) });
      return Promise.resolve();
    });
    // The source hands pages as views into a larger read buffer: use an offset.
    const src = Buffer.alloc(3 * PAGE);
    const hashes = Buffer.alloc(4 * HASH_BYTES);
    for (let p = 0; p < n; p++) {
      const isZero = zeroEvery > 0 && p % zeroEvery === 0;
      pageBytes(p).copy(src, PAGE);
      fakeHash(p).copy(hashes, 2 * HASH_BYTES);
      await encoder.add(p, hashes, 2 * HASH_BYTES, src, PAGE, isZero);
    }
    return { encoder, emitted, copies };
  }

  function check(b: PageBatch, first: number, zeroEvery: number): void {
    const d = decodePageBatch(b, PAGE);
    expect(d.count).toBe(batchPageCount(b));
    for (let i = 0; i < batchPageCount(b); i++) {
      const p = first + i;
      expect(readPageNumber(b.pageNumbers, i)).toBe(p);
      expect(b.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES).equals(fakeHash(p))).toBe(true);
      const isZero = zeroEvery > 0 && p % zeroEvery === 0;
      expect(b.kinds[i]).toBe(isZero ? PAGE_KIND_ZERO : PAGE_KIND_DATA);
      const off = d.dataOffsets[i]!;
      if (isZero) expect(off).toBe(-1);
      else expect(b.data.subarray(off, off + PAGE).equals(pageBytes(p))).toBe(true);
    }
  }

  it('emits full batches of 256 pages as they fill, and the rest on flush', async () => {
    const { encoder, emitted } = await batchPages(600);
    expect(BATCH_PAGES).toBe(256);
    expect(emitted.map((b) => batchPageCount(b))).toEqual([256, 256]);
    await encoder.flush();
    expect(emitted.map((b) => batchPageCount(b))).toEqual([256, 256, 88]);
    let first = 0;
    for (const b of emitted) {
      expect(batchPageCount(b)).toBeLessThanOrEqual(BATCH_PAGES);
      expect(b.data.length).toBe(batchPageCount(b) * PAGE);
      check(b, first, 0);
      first += batchPageCount(b);
    }
    expect(encoder.pages).toBe(600);
    expect(encoder.zeroPages).toBe(0);
    expect(encoder.bytes).toBe(600 * PAGE);
  });

  it('sends zero pages as a flag without their bytes', async () => {
    const { encoder, emitted } = await batchPages(300, 3);
    await encoder.flush();
    expect(emitted.map((b) => batchPageCount(b))).toEqual([256, 44]);
    const zeros = Math.ceil(300 / 3);
    expect(encoder.zeroPages).toBe(zeros);
    expect(encoder.bytes).toBe((300 - zeros) * PAGE);
    expect(emitted.reduce((n, b) => n + b.data.length, 0)).toBe((300 - zeros) * PAGE);
    check(emitted[0]!, 0, 3);
    check(emitted[1]!, 256, 3);
  });

  it('emits nothing on flush when empty, and nothing twice', async () => {
    const { encoder, emitted } = await batchPages(256);
    expect(emitted).toHaveLength(1);
    await encoder.flush();
    await encoder.flush();
    expect(emitted).toHaveLength(1);
  });

  it('never overwrites the buffers of a batch it emitted', async () => {
    const { encoder, emitted, copies } = await batchPages(1000, 5);
    await encoder.flush();
    expect(emitted).toHaveLength(4);
    emitted.forEach((b, i) => {
      const c = copies[i]!;
      expect(batchPageCount(b)).toBe(batchPageCount(c));
      expect(b.pageNumbers.equals(c.pageNumbers)).toBe(true);
      expect(b.hashes.equals(c.hashes)).toBe(true);
      expect(b.kinds.equals(c.kinds)).toBe(true);
      expect(b.data.equals(c.data)).toBe(true);
    });
  });

  it('waits for the sender before taking more pages (back-pressure)', async () => {
    let release!: () => void;
    let emits = 0;
    const encoder = new PageBatchEncoder(PAGE, () => {
      emits++;
      return new Promise<void>((resolve) => (release = resolve));
    });
    const src = pageBytes(1);
    const hash = fakeHash(1);
    // Below a full batch, add() returns nothing to wait for; the page that fills it returns the send's promise.
    for (let p = 0; p < BATCH_PAGES - 1; p++) expect(encoder.add(p, hash, 0, src, 0, false)).toBeUndefined();
    let done = false;
    const full = encoder.add(BATCH_PAGES - 1, hash, 0, src, 0, false);
    expect(full).toBeInstanceOf(Promise);
    const last = full!.then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(emits).toBe(1);
    expect(done).toBe(false);
    release();
    await last;
    expect(done).toBe(true);
  });
});

describe('PageBatchEncoder buffer reuse (issue 15)', () => {
  const PS = 4096;
  const page = Buffer.alloc(PS, 7);
  const hash = Buffer.alloc(HASH_BYTES, 1);
  async function twoBatches(release: boolean): Promise<PageBatch[]> {
    const out: PageBatch[] = [];
    const enc = new PageBatchEncoder(PS, (b) => {
      out.push({ ...b, data: Buffer.from(b.data) });
      if (release) b.release?.();
      return Promise.resolve();
    });
    for (let k = 0; k < 2; k++) {
      for (let i = 0; i < 3; i++) await enc.add(k * 10 + i, hash, 0, page, 0, false);
      await enc.flush();
    }
    return out;
  }
  it('hands a released batch buffers to a later batch, and fresh ones when the stream never releases', async () => {
    const seen: Buffer[] = [];
    const enc = new PageBatchEncoder(PS, (b) => {
      seen.push(b.data);
      b.release?.();
      b.release?.(); // twice is once
      return Promise.resolve();
    });
    for (let k = 0; k < 3; k++) {
      await enc.add(k, hash, 0, page, 0, false);
      await enc.flush();
    }
    expect(seen[2]!.buffer).toBe(seen[0]!.buffer);
    const kept: Buffer[] = [];
    const fresh = new PageBatchEncoder(PS, (b) => {
      kept.push(b.data);
      return Promise.resolve();
    });
    for (let k = 0; k < 3; k++) {
      await fresh.add(k, hash, 0, page, 0, false);
      await fresh.flush();
    }
    expect(new Set(kept.map((b) => b.buffer)).size).toBe(3);
    // Reuse never changes what was sent.
    const [a, b] = [await twoBatches(true), await twoBatches(false)];
    expect(a.map((x) => x.data.equals(b[a.indexOf(x)]!.data))).toEqual([true, true]);
  });
});
