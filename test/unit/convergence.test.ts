/** The convergence policy on tables: which rule stops pre-copy, after which round, and why in words. */
import { describe, expect, it } from 'vitest';
import { decideAfterRound, transferRate, type ConvergencePolicy, type ConvergenceRule, type RoundRecord } from '../../shared/policy/convergence.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const POLICY: ConvergencePolicy = { maxRounds: 10, maxDowntimeMs: 300, floorPages: 64, pageSize: PAGE };

/** Rounds that each sent their dirty pages at `bytesPerSecond` (every page has data). */
function roundsAt(dirty: readonly number[], bytesPerSecond: number): RoundRecord[] {
  return dirty.map((dirtyPages, round) => {
    const bytesSent = dirtyPages * PAGE;
    return { round, dirtyPages, bytesSent, durationMs: (bytesSent * 1000) / bytesPerSecond };
  });
}

/** Plays the rounds in order, as the source does, until the policy says freeze. */
function run(history: readonly RoundRecord[], policy: ConvergencePolicy): { round: number; rule: ConvergenceRule; reason: string } {
  for (let n = 1; n <= history.length; n++) {
    const d = decideAfterRound(history.slice(0, n), policy);
    if (d.action === 'freeze') return { round: n - 1, rule: d.rule, reason: d.reason };
    expect(d.rule).toBe('continue');
  }
  return { round: history.length - 1, rule: 'continue', reason: '' };
}

const FAST = 100 * MiB; // bytes per second: 30 MiB (7680 pages) fit the 300 ms budget
const SLOW = 1 * MiB; // 300 KiB (75 pages) fit the budget: only the floor could

describe('decideAfterRound on workloads', () => {
  const table: { name: string; dirty: number[]; rate: number; policy?: Partial<ConvergencePolicy>; round: number; rule: ConvergenceRule }[] = [
    { name: 'converging fast: the dirty set fits the budget at round 1', dirty: [65536, 4000], rate: FAST, round: 1, rule: 'budget' },
    { name: 'converging: fits the budget at round 2', dirty: [65536, 20000, 5000], rate: FAST, round: 2, rule: 'budget' },
    { name: 'tiny task: under the floor at round 0', dirty: [50], rate: SLOW, round: 0, rule: 'floor' },
    { name: 'the floor is inclusive', dirty: [64], rate: SLOW, round: 0, rule: 'floor' },
    { name: 'slow link, shrinking to the floor at round 3', dirty: [65536, 8000, 500, 64], rate: SLOW, round: 3, rule: 'floor' },
    { name: 'max rounds while still shrinking', dirty: [65536, 32768, 16384, 8192], rate: SLOW, policy: { maxRounds: 3 }, round: 2, rule: 'max-rounds' },
    { name: 'max rounds of 1 stops after round 0', dirty: [65536, 100], rate: FAST, policy: { maxRounds: 1 }, round: 0, rule: 'max-rounds' },
    { name: 'constant dirty set from round 1 on', dirty: [65536, 10000, 10000, 10000], rate: SLOW, round: 2, rule: 'not-shrinking' },
    { name: 'growing dirty set', dirty: [65536, 10000, 12000], rate: SLOW, round: 2, rule: 'not-shrinking' },
    { name: 'exactly 10 % smaller still counts as shrinking', dirty: [65536, 10000, 9000, 8200], rate: SLOW, round: 3, rule: 'not-shrinking' },
    { name: 'growth from round 0 to round 1 is not judged', dirty: [1000, 5000, 5000], rate: SLOW, round: 2, rule: 'not-shrinking' },
    {
      name: 'slow link, steady 20 % shrink: the budget never fits, max rounds stops it',
      dirty: Array.from({ length: 12 }, (_, i) => Math.round(65536 * 0.8 ** i)),
      rate: SLOW,
      round: 9,
      rule: 'max-rounds',
    },
    {
      name: 'a fast link with a big round 0 still does round 1',
      dirty: [1000, 900],
      rate: 100 * 1024 * MiB,
      round: 1,
      rule: 'budget',
    },
  ];

  it.each(table)('$name -> $rule at round $round', ({ dirty, rate, policy, round, rule }) => {
    const got = run(roundsAt(dirty, rate), { ...POLICY, ...policy });
    expect({ round: got.round, rule: got.rule }).toEqual({ round, rule });
  });
});

describe('decideAfterRound, one decision at a time', () => {
  it('round 0 continues even when its pages would fit the budget at once', () => {
    const d = decideAfterRound(roundsAt([1000], 100 * 1024 * MiB), POLICY);
    expect(d.action).toBe('continue');
    expect(d.rule).toBe('continue');
    expect(d.expectedTransferMs).toBeLessThan(1);
    expect(d.reason).toBe('round 1: 3.9 MiB still dirty');
  });

  it('round 1 continues when the delta does not fit, however much it grew', () => {
    const d = decideAfterRound(roundsAt([1000, 50000], SLOW), POLICY);
    expect(d.action).toBe('continue');
    expect(d.reason).toContain('round 2');
    expect(d.reason).toContain('195.3 MiB');
  });

  it('the budget rule estimates the transfer at the average rate of all rounds so far', () => {
    const d = decideAfterRound(roundsAt([65536, 4000], FAST), POLICY);
    expect(d).toMatchObject({ action: 'freeze', rule: 'budget' });
    // 4000 pages = 16 384 000 bytes at 100 MiB/s
    expect(d.expectedTransferMs).toBeCloseTo(156.25, 6);
    expect(d.reason).toContain('15.6 MiB');
    expect(d.reason).toContain('~156 ms');
    expect(d.reason).toContain('300 ms');
  });

  it('a delta exactly at the budget freezes', () => {
    // 7680 pages = 30 MiB = 300 ms at 100 MiB/s
    const d = decideAfterRound(roundsAt([65536, 7680], FAST), POLICY);
    expect(d.rule).toBe('budget');
    expect(d.expectedTransferMs).toBeCloseTo(300, 6);
  });

  it('one page over the budget does not', () => {
    const d = decideAfterRound(roundsAt([65536, 7681], FAST), POLICY);
    expect(d.rule).toBe('continue');
  });

  it('the floor wins over every other rule and names both numbers', () => {
    const d = decideAfterRound(roundsAt([65536, 10000, 10000, 10], SLOW), { ...POLICY, maxRounds: 4 });
    expect(d).toMatchObject({ action: 'freeze', rule: 'floor' });
    expect(d.reason).toContain('10 dirty pages');
    expect(d.reason).toContain('floor of 64');
  });

  it('max rounds names the count and the maximum', () => {
    const d = decideAfterRound(roundsAt([65536, 32768, 16384], SLOW), { ...POLICY, maxRounds: 3 });
    expect(d.rule).toBe('max-rounds');
    expect(d.reason).toContain('3 rounds done');
    expect(d.reason).toContain('maximum is 3');
  });

  it('not-shrinking names the two sizes', () => {
    const d = decideAfterRound(roundsAt([65536, 10000, 12000], SLOW), POLICY);
    expect(d.rule).toBe('not-shrinking');
    expect(d.reason).toContain('39.1 MiB -> 46.9 MiB');
  });

  it('without data on the wire (all zero pages) there is no estimate, and the budget never fires', () => {
    const history: RoundRecord[] = [
      { round: 0, dirtyPages: 5000, bytesSent: 0, durationMs: 10 },
      { round: 1, dirtyPages: 100, bytesSent: 0, durationMs: 10 },
    ];
    const d = decideAfterRound(history, POLICY);
    expect(d.expectedTransferMs).toBeUndefined();
    expect(d.rule).toBe('continue');
  });

  it('needs at least one round', () => {
    expect(() => decideAfterRound([], POLICY)).toThrow();
  });

  it('uses the policy page size for bytes', () => {
    const d = decideAfterRound(roundsAt([65536, 4000], FAST), { ...POLICY, pageSize: 2 * PAGE });
    expect(d.expectedTransferMs).toBeCloseTo(312.5, 6);
    expect(d.rule).toBe('continue');
  });
});

describe('transferRate', () => {
  it('is undefined before any data moved', () => {
    expect(transferRate([])).toBeUndefined();
    expect(transferRate([{ round: 0, dirtyPages: 10, bytesSent: 0, durationMs: 100 }])).toBeUndefined();
    expect(transferRate([{ round: 0, dirtyPages: 10, bytesSent: 4096, durationMs: 0 }])).toBeUndefined();
  });

  it('is total bytes over total time, not the mean of the rounds', () => {
    const history: RoundRecord[] = [
      { round: 0, dirtyPages: 256, bytesSent: MiB, durationMs: 100 },
      { round: 1, dirtyPages: 256, bytesSent: MiB, durationMs: 1900 },
    ];
    expect(transferRate(history)).toBe(MiB);
  });

  it('is bytes per second', () => {
    expect(transferRate([{ round: 0, dirtyPages: 1, bytesSent: 5000, durationMs: 2000 }])).toBe(2500);
  });
});
