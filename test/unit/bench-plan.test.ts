import { describe, expect, it } from 'vitest';
import {
  estimateCaseSeconds,
  fullCases,
  lazyVsEagerCases,
  methodById,
  methodsForCase,
  METHODS,
  parseMethodIds,
  planMethods,
  planRepetitions,
  postCopyCases,
  recordedMethod,
  type MethodId,
} from '../../bench/cases.js';

const ALL = METHODS.map((m) => m.id);
/** The methods of the matrix and of --lazy-vs-eager: every one but post-copy's. */
const MATRIX = planMethods('matrix');

describe('bench methods (issue 11: lazy vs eager)', () => {
  it('two pre-copy methods that differ only in --restore; the stop-and-copy baseline is eager', () => {
    expect(MATRIX).toEqual(['ferry-live-lazy', 'ferry-live-eager', 'ferry-stop-copy', 'criu-stop-copy']);
    expect(methodById('ferry-live-lazy').ferryFlags).toEqual(['--on-no-converge', 'throttle', '--restore', 'lazy']);
    expect(methodById('ferry-live-eager').ferryFlags).toEqual(['--on-no-converge', 'throttle', '--restore', 'eager']);
    // `auto` would be lazy where the dest offers it: the baseline must say eager.
    expect(methodById('ferry-stop-copy').ferryFlags).toEqual(['--no-precopy', '--restore', 'eager']);
  });

  it('--methods: the new ids, and ferry-live for both pre-copy ones, without duplicates', () => {
    expect(parseMethodIds('ferry-live-lazy, criu-stop-copy')).toEqual(['ferry-live-lazy', 'criu-stop-copy']);
    expect(parseMethodIds('ferry-live,ferry-live-eager')).toEqual(['ferry-live-lazy', 'ferry-live-eager']);
    expect(() => parseMethodIds('ferry-lazy')).toThrow(/unknown method ferry-lazy/);
  });

  it('a recorded ferry-live run is the restore its summary names, eager before issue 11', () => {
    expect(recordedMethod('ferry-live', undefined)).toBe('ferry-live-eager');
    expect(recordedMethod('ferry-live', 'eager')).toBe('ferry-live-eager');
    expect(recordedMethod('ferry-live', 'lazy')).toBe('ferry-live-lazy');
    expect(recordedMethod('ferry-stop-copy', 'lazy')).toBe('ferry-stop-copy');
    expect(() => recordedMethod('scp', undefined)).toThrow(/unknown method/);
  });

  it('--lazy-vs-eager: the two target cases; the baselines only at 1 GiB', () => {
    const [small, large] = lazyVsEagerCases();
    expect([small!.id, large!.id]).toEqual(['1gbit-256m-d8', '1gbit-1g-d8']);
    expect(methodsForCase(small!, MATRIX, 'lazy-vs-eager')).toEqual(['ferry-live-lazy', 'ferry-live-eager']);
    expect(methodsForCase(large!, MATRIX, 'lazy-vs-eager')).toEqual(MATRIX);
    // A --methods filter still applies.
    expect(methodsForCase(large!, ['ferry-live-lazy', 'criu-stop-copy'], 'lazy-vs-eager')).toEqual(['ferry-live-lazy', 'criu-stop-copy']);
  });

  it('the full matrix: every method, but no eager pre-copy at 100 Mbit/s', () => {
    for (const c of fullCases(false)) {
      const expected: MethodId[] = c.link.id === '100mbit' ? MATRIX.filter((m) => m !== 'ferry-live-eager') : MATRIX;
      expect(methodsForCase(c, MATRIX, 'matrix'), c.id).toEqual(expected);
    }
  });

  it('the time model: lazy pre-copy costs less than eager at 1 GiB, and a case sums its methods', () => {
    const [, large] = lazyVsEagerCases();
    const lazy = estimateCaseSeconds(large!, ['ferry-live-lazy']);
    const eager = estimateCaseSeconds(large!, ['ferry-live-eager']);
    expect(lazy).toBeGreaterThan(0);
    expect(lazy).toBeLessThan(eager);
    expect(estimateCaseSeconds(large!, ['ferry-live-lazy', 'ferry-live-eager'])).toBeCloseTo(lazy + eager);
  });
});

describe('bench methods (issue 12: post-copy)', () => {
  it('two post-copy methods, lazy, auto and always; only --post-copy runs them, beside the throttle path and stop-and-copy', () => {
    expect(ALL).toEqual([...MATRIX, 'ferry-postcopy', 'ferry-postcopy-always']);
    expect(methodById('ferry-postcopy').ferryFlags).toEqual(['--post-copy', 'auto', '--restore', 'lazy']);
    expect(methodById('ferry-postcopy-always').ferryFlags).toEqual(['--post-copy', 'always', '--restore', 'lazy']);
    expect(planMethods('post-copy')).toEqual(['ferry-postcopy', 'ferry-postcopy-always', 'ferry-live-lazy', 'ferry-stop-copy']);
    expect(planMethods('lazy-vs-eager')).toEqual(MATRIX);
    expect(parseMethodIds('ferry-postcopy-always')).toEqual(['ferry-postcopy-always']);
  });

  it('--post-copy: 1 Gbit/s, 128 MiB/s dirtying, 256 MiB and 1 GiB; every method at both sizes', () => {
    const cases = postCopyCases();
    expect(cases.map((c) => c.id)).toEqual(['1gbit-256m-d128', '1gbit-1g-d128']);
    for (const c of cases) expect(methodsForCase(c, planMethods('post-copy'), 'post-copy')).toEqual(planMethods('post-copy'));
  });

  it('the time model: always costs less than auto, which stops pre-copy before the throttle path; 2 repetitions fit in 15 minutes', () => {
    const [small, large] = postCopyCases();
    const [auto, always, throttle] = (['ferry-postcopy', 'ferry-postcopy-always', 'ferry-live-lazy'] as const).map((m) => estimateCaseSeconds(large!, [m]));
    expect(always).toBeLessThan(auto!);
    expect(auto).toBeLessThan(throttle!);
    const oneRep = estimateCaseSeconds(small!, planMethods('post-copy')) + estimateCaseSeconds(large!, planMethods('post-copy'));
    expect(2 * oneRep).toBeLessThan(15 * 60 * 0.92);
  });
});

describe('planRepetitions', () => {
  const cases = fullCases(false);
  const seconds = cases.map(() => 10);
  const byId = (plan: Map<string, number>): Record<string, number> => Object.fromEntries(plan);

  it('everything once, then the priority cases, then the others while the budget lasts', () => {
    // 13 cases once = 130 s; 60 s more: the 4 priority cases a second time, the two target cases a third.
    const plan = byId(planRepetitions(cases, seconds, 3, 190));
    expect(plan['1gbit-256m-d8']).toBe(3);
    expect(plan['1gbit-1g-d8']).toBe(3);
    expect(plan['1gbit-256m-d0']).toBe(2);
    expect(plan['1gbit-1g-d0']).toBe(2);
    expect(Object.values(plan).reduce((a, b) => a + b, 0)).toBe(19);
    // 50 s more than that: the others, cheapest first (all 10 s here: in case order), one more repetition each.
    const more = byId(planRepetitions(cases, seconds, 3, 240));
    expect(Object.values(more).reduce((a, b) => a + b, 0)).toBe(24);
    expect(more['1gbit-256m-d0']).toBe(3);
  });

  it('every case at least once even when the budget is too small; never more than reps', () => {
    expect(Object.values(byId(planRepetitions(cases, seconds, 3, 1)))).toEqual(cases.map(() => 1));
    expect(Object.values(byId(planRepetitions(cases, seconds, 3, 1e6)))).toEqual(cases.map(() => 3));
  });

  it('with done: only the runs still to do count against the time left', () => {
    const two = lazyVsEagerCases();
    const done = new Map([
      ['1gbit-256m-d8', 1],
      ['1gbit-1g-d8', 1],
    ]);
    // 35 s left, 10 s per repetition: both get a second, the first a third (priority order), nothing more.
    expect(byId(planRepetitions(two, [10, 10], 3, 35, done))).toEqual({ '1gbit-256m-d8': 3, '1gbit-1g-d8': 2 });
  });
});
