/**
 * Soft-dirty pagemap decoding on real bytes captured in a guest whose kernel has soft-dirty
 * (test/fixtures/soft-dirty/, written by test/vm/pagemap-capture.c through deploy/ci/two-vm.sh), and on
 * synthetic entries for the bits one capture cannot show (swap, page cache, guard, unaligned buffers).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { emptyRuns, type PageRuns } from '../../shared/kernel/pagemap.js';
import { decodeSoftDirtyEntries, subtractRuns, vmaRuns } from '../../source-agent/trackers/soft-dirty/soft-dirty-pagemap.js';
import type { Vma } from '../../shared/kernel/proc-maps.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/soft-dirty/', import.meta.url));

interface Fixture {
  case: string;
  kernel: string;
  firstPage: number;
  pages: number;
  thp: boolean;
  present: number[];
  softDirty: number[];
  bit55?: number[];
}

function pagesOf(runs: PageRuns): number[] {
  const out: number[] = [];
  runs.starts.forEach((s, i) => {
    for (let p = 0; p < runs.counts[i]!; p++) out.push(s + p);
  });
  return out;
}

function decode(buf: Uint8Array, first: number): { present: number[]; dirty: number[] } {
  const present = emptyRuns();
  const dirty = emptyRuns();
  decodeSoftDirtyEntries(buf, first, present, dirty);
  return { present: pagesOf(present), dirty: pagesOf(dirty) };
}

/** One 8-byte entry from its high word (the low word holds the pfn or swap offset, which decoding ignores). */
function entries(highWords: number[]): Buffer {
  const b = Buffer.alloc(highWords.length * 8);
  highWords.forEach((hi, i) => {
    b.writeUInt32LE(0x1234, i * 8);
    b.writeUInt32LE(hi >>> 0, i * 8 + 4);
  });
  return b;
}

const PRESENT = 2 ** 31;
const SWAP = 2 ** 30;
const FILE = 2 ** 29;
const GUARD = 2 ** 26;
const SOFT_DIRTY = 2 ** 23;
const EXCLUSIVE = 2 ** 24; // bit 56, ignored

const fixtures = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(readFileSync(FIXTURES + f, 'utf8')) as Fixture);

describe('soft-dirty decoding of captured pagemap bytes', () => {
  it('has fixtures from a soft-dirty kernel', () => {
    expect(fixtures.map((f) => f.case).sort()).toEqual(['basic', 'holes', 'new-vma', 'thp']);
  });

  for (const f of fixtures) {
    it(`${f.case} (${f.kernel}${f.thp ? ', THP' : ''})`, () => {
      const raw = readFileSync(`${FIXTURES}${f.case}.pagemap`);
      expect(raw.byteLength).toBe(f.pages * 8);
      const got = decode(raw, f.firstPage);
      expect(got.present).toEqual(f.present.map((p) => f.firstPage + p));
      expect(got.dirty).toEqual(f.softDirty.map((p) => f.firstPage + p));
      if (f.bit55) {
        const bits: number[] = [];
        for (let i = 0; i < f.pages; i++) if ((raw.readUInt32LE(i * 8 + 4) & SOFT_DIRTY) !== 0) bits.push(i);
        expect(bits).toEqual(f.bit55); // an area mapped after the clear: every entry, present or not
      }
    });
  }

  it('a written huge page marks all its 512 entries', () => {
    const thp = fixtures.find((f) => f.case === 'thp');
    if (!thp?.thp) {
      console.warn('SKIP THP fixture check: the capture did not get a huge page');
      return;
    }
    expect(thp.softDirty).toEqual(Array.from({ length: 512 }, (_, i) => i));
  });
});

describe('soft-dirty decoding of synthetic entries', () => {
  it('counts present and swapped pages, and soft-dirty only among them', () => {
    const got = decode(entries([PRESENT | SOFT_DIRTY, PRESENT, SWAP | SOFT_DIRTY, SWAP, SOFT_DIRTY, 0, PRESENT | SOFT_DIRTY | EXCLUSIVE]), 100);
    expect(got.present).toEqual([100, 101, 102, 103, 106]);
    expect(got.dirty).toEqual([100, 102, 106]);
  });

  it('leaves out page-cache pages and guard markers, soft-dirty or not', () => {
    const got = decode(entries([PRESENT | FILE | SOFT_DIRTY, SWAP | GUARD | SOFT_DIRTY, PRESENT | SOFT_DIRTY]), 7);
    expect(got.present).toEqual([9]);
    expect(got.dirty).toEqual([9]);
  });

  it('merges runs and handles an unaligned buffer', () => {
    const b = entries([PRESENT | SOFT_DIRTY, PRESENT | SOFT_DIRTY, PRESENT, PRESENT | SOFT_DIRTY]);
    const unaligned = Buffer.alloc(b.length + 1).subarray(1);
    b.copy(unaligned);
    const present = emptyRuns();
    const dirty = emptyRuns();
    decodeSoftDirtyEntries(unaligned, 2 ** 40, present, dirty);
    expect(present).toEqual({ starts: [2 ** 40], counts: [4] });
    expect(dirty).toEqual({ starts: [2 ** 40, 2 ** 40 + 3], counts: [2, 1] });
  });

  it('continues runs across blocks (the pread loop decodes block by block)', () => {
    const present = emptyRuns();
    const dirty = emptyRuns();
    decodeSoftDirtyEntries(entries([PRESENT | SOFT_DIRTY, PRESENT | SOFT_DIRTY]), 10, present, dirty);
    decodeSoftDirtyEntries(entries([PRESENT | SOFT_DIRTY, 0]), 12, present, dirty);
    expect(dirty).toEqual({ starts: [10], counts: [3] });
  });
});

describe('run arithmetic for area changes', () => {
  const vma = (startPage: number, endPage: number): Vma => ({ startPage, endPage, perms: 'rw-p', offset: 0, dev: '00:00', inode: 0, path: '' });

  it('finds the pages of areas that appeared or grew', () => {
    const before = vmaRuns([vma(10, 20), vma(30, 40)]);
    const after = vmaRuns([vma(10, 25), vma(30, 35), vma(50, 52)]); // grew, shrank, appeared
    expect(subtractRuns(after, before)).toEqual({ starts: [20, 50], counts: [5, 2] });
    expect(subtractRuns(before, before)).toEqual({ starts: [], counts: [] });
    expect(subtractRuns(after, emptyRuns())).toEqual(after);
  });

  it('subtracts runs that cut through the middle and span several', () => {
    const a = { starts: [0], counts: [100] };
    const b = { starts: [10, 20, 90], counts: [5, 5, 20] };
    expect(subtractRuns(a, b)).toEqual({ starts: [0, 15, 25], counts: [10, 5, 65] });
  });

  it('merges adjacent areas', () => {
    expect(vmaRuns([vma(1, 3), vma(3, 8), vma(9, 10)])).toEqual({ starts: [1, 9], counts: [7, 1] });
  });
});
