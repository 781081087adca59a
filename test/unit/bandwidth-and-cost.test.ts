import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fitFixedCost, fixedCost, loadCostSamples, recordCostSample, type CostSample } from '../../source-agent/cost-model.js';
import { parseRate } from '../../shared/config/units.js';
import { TokenBucket } from '../../source-agent/token-bucket.js';

const GiB = 2 ** 30;
const sample = (gib: number, ms: number): CostSample => ({ residentBytes: gib * GiB, fixedMs: ms, at: 'x' });

describe('rates', () => {
  it.each([
    ['100mbit', 12.5e6],
    ['1gbit', 125e6],
    ['25MiB', 25 * 2 ** 20],
    ['50MB/s', 50e6],
    ['1.5GiB', 1.5 * GiB],
    ['800kbit', 1e5],
  ])('%s is %d bytes/s', (text, bps) => expect(parseRate(text)).toBeCloseTo(bps, 3));
  it.each(['', 'fast', '10 parsecs', '-5mbit', '0mbit'])('%j is refused', (text) => expect(parseRate(text)).toBeUndefined());
});

describe('token bucket', () => {
  it('holds the long-run rate at the cap (ratio, not absolute time)', async () => {
    const rate = 40 * 2 ** 20;
    const bucket = new TokenBucket(rate);
    const batch = 1024 * 1024;
    const t0 = performance.now();
    for (let i = 0; i < 40; i++) await bucket.take(batch);
    const seconds = (performance.now() - t0) / 1000;
    const achieved = (40 * batch - bucket.burstBytes) / seconds; // the initial burst is free
    expect(achieved / rate).toBeGreaterThan(0.9);
    expect(achieved / rate).toBeLessThan(1.1);
  });
  it('stops waiting when aborted', async () => {
    const bucket = new TokenBucket(1e6, 1e5);
    await bucket.take(1e5);
    const c = new AbortController();
    setTimeout(() => c.abort(new Error('stop')), 20);
    await expect(bucket.take(1e5, c.signal)).rejects.toThrow('stop');
  });
});

describe('cost model', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('fits a + b * size over samples of different sizes', () => {
    const fit = fitFixedCost([sample(0.25, 600), sample(1, 1800), sample(0.5, 1000)], 2 * GiB)!;
    expect(fit).toBeGreaterThan(3000);
    expect(fit).toBeLessThan(4000);
  });
  it('is proportional when all samples have about one size', () => {
    expect(fitFixedCost([sample(1, 1000), sample(1, 1200), sample(1, 1100)], 2 * GiB)).toBeCloseTo(2200, 0);
    expect(fitFixedCost([], GiB)).toBeUndefined();
  });
  it('without history, estimates from the measured read and store rates, and says so', () => {
    const c = fixedCost([], GiB, { readBytesPerSecond: 4 * GiB, storeBytesPerSecond: GiB });
    expect(c.ms).toBeCloseTo(2 * 250 + 1000, 0);
    expect(c.source).toContain("this migration's read and store rates");
    expect(fixedCost([sample(1, 900)], GiB, { readBytesPerSecond: 1, storeBytesPerSecond: 1 }).source).toContain('learned from 1 earlier migration');
  });
  it('persists samples per dest and keeps the last ten', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-cost-'));
    dirs.push(dir);
    const path = join(dir, 'source', 'cost-model.json');
    for (let i = 0; i < 12; i++) await recordCostSample('10.0.0.2:7070', sample(1, i), path);
    await recordCostSample('10.0.0.3:7070', sample(1, 99), path);
    const a = await loadCostSamples('10.0.0.2:7070', path);
    expect(a.map((s) => s.fixedMs)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect((await loadCostSamples('10.0.0.3:7070', path)).length).toBe(1);
    expect(await loadCostSamples('nowhere:1', path)).toEqual([]);
  });
});
