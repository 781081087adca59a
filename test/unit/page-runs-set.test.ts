/** intersectRuns and unionRuns (pagemap-written.ts): set operations on page runs. */
import { describe, expect, it } from 'vitest';
import { appendRun, emptyRuns, type PageRuns } from '../../shared/kernel/pagemap.js';
import { intersectRuns, unionRuns } from '../../shared/kernel/pagemap-written.js';

function runs(...pairs: [number, number][]): PageRuns {
  const r = emptyRuns();
  for (const [s, c] of pairs) appendRun(r, s, c);
  return r;
}

function pages(r: PageRuns): number[] {
  return r.starts.flatMap((s, i) => Array.from({ length: r.counts[i]! }, (_, k) => s + k));
}

describe('intersectRuns', () => {
  it('keeps exactly the pages in both lists', () => {
    const a = runs([0, 10], [20, 5], [40, 1]);
    const b = runs([5, 15], [24, 20]);
    const expected = pages(a).filter((p) => pages(b).includes(p));
    expect(pages(intersectRuns(a, b))).toEqual(expected);
    expect(pages(intersectRuns(b, a))).toEqual(expected);
  });

  it('is empty when either side is', () => {
    expect(intersectRuns(emptyRuns(), runs([0, 3]))).toEqual(emptyRuns());
    expect(intersectRuns(runs([0, 3]), emptyRuns())).toEqual(emptyRuns());
  });

  it('matches a brute-force intersection on random lists', () => {
    for (let t = 0; t < 50; t++) {
      const make = (): PageRuns => {
        const r = emptyRuns();
        let p = Math.floor(Math.random() * 5);
        for (let k = 0; k < 20; k++) {
          const c = 1 + Math.floor(Math.random() * 6);
          appendRun(r, p, c);
          p += c + 1 + Math.floor(Math.random() * 6);
        }
        return r;
      };
      const a = make();
      const b = make();
      const inB = new Set(pages(b));
      expect(pages(intersectRuns(a, b))).toEqual(pages(a).filter((p) => inB.has(p)));
    }
  });
});

describe('unionRuns', () => {
  it('holds every page of either list once, merged into runs', () => {
    const a = runs([0, 3], [10, 2]);
    const b = runs([2, 4], [12, 1], [20, 1]);
    const u = unionRuns(a, b);
    expect(u).toEqual(runs([0, 6], [10, 3], [20, 1]));
    expect(unionRuns(emptyRuns(), b)).toEqual(b);
  });
});
