import { describe, expect, it } from 'vitest';
import type { ProcessResources } from '../../testbed/process-probes.js';
import { judgeFlat, median } from '../../testbed/resource-trend.js';

const MB = 1 << 20;
const series = (rssMb: (i: number) => number, fds: (i: number) => number, n = 30): ProcessResources[] =>
  Array.from({ length: n }, (_, i) => ({ rssBytes: rssMb(i) * MB, fds: fds(i), threads: 11 }));
const limits = { warmup: 10, rssRatio: 1.2, fdSlack: 2 };

describe('judgeFlat (the soak verdict)', () => {
  it('median of odd, even and empty lists', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('flat: a warm-up climb, then GC noise around a level', () => {
    const v = judgeFlat(series((i) => (i < 10 ? 60 + 8 * i : 140 + (i % 3) * 6), (i) => (i < 10 ? 15 + (i >> 2) : 19 + (i % 2))), limits);
    expect(v).toMatchObject({ flat: true, reasons: [], samples: 30, fdMedian: 19.5, fdLast: 20 });
    expect(v.rssRatio).toBeLessThan(1.2);
  });

  it('not flat: one fd more per migration', () => {
    const v = judgeFlat(series(() => 140, (i) => 19 + i), limits);
    expect(v.flat).toBe(false);
    expect(v.fdGrowth).toBe(9.5); // 48 against the median 38.5 of 29..48
    expect(v.reasons.join()).toMatch(/fds above/);
  });

  it('not flat: memory that keeps climbing', () => {
    const v = judgeFlat(series((i) => 100 + 10 * i, () => 19), limits);
    expect(v.flat).toBe(false);
    expect(v.reasons.join()).toMatch(/RSS 1\.\d\dx/);
  });

  it('the ratio and the slack are limits, inclusive', () => {
    const v = judgeFlat(series((i) => (i === 29 ? 120 : 100), (i) => (i === 29 ? 21 : 19)), limits);
    expect([v.flat, v.rssRatio, v.fdGrowth]).toEqual([true, 1.2, 2]);
  });

  it('too few samples after the warm-up is no verdict of flat', () => {
    const v = judgeFlat(series(() => 100, () => 19, 11), limits);
    expect(v.flat).toBe(false);
    expect(v.reasons).toEqual(['only 1 sample(s) after a warm-up of 10']);
  });
});
