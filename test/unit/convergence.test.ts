/**
 * The convergence policy on tables of workloads: each row plays rounds one by one and checks the decision
 * after the last. Figures are in pages of 4 KiB; the link moves 100 MiB/s unless a row says otherwise.
 */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_THROTTLE,
  decideAfterRound,
  dirtyRate,
  transferRate,
  type ConvergencePolicy,
  type Decision,
  type FixedCost,
  type RoundRecord,
} from '../../shared/policy/convergence.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const policy: ConvergencePolicy = {
  maxRounds: 10,
  maxDowntimeMs: 300,
  floorPages: 64,
  pageSize: PAGE,
  onNoConverge: 'throttle',
  ...DEFAULT_THROTTLE,
};
const cheap: FixedCost = { ms: 100, source: 'learned from 2 earlier migrations to this dest' };
const costly: FixedCost = { ms: 2000, source: 'learned from 2 earlier migrations to this dest' };

const SCAN_MS = 100;

/** Rounds from dirty page counts: each sends its pages at `linkMiBs` after a 100 ms scan of the memory. */
function rounds(dirty: number[], linkMiBs = 100): RoundRecord[] {
  return dirty.map((d, round) => {
    const transferMs = (d * PAGE * 1000) / (linkMiBs * MiB);
    return { round, dirtyPages: d, bytesSent: d * PAGE, durationMs: SCAN_MS + transferMs, transferMs };
  });
}

function decide(history: RoundRecord[], o: { cost?: FixedCost; throttle?: number; policy?: Partial<ConvergencePolicy> } = {}): Decision {
  return decideAfterRound({ history, fixedCost: o.cost ?? cheap, throttlePercent: o.throttle ?? 0 }, { ...policy, ...o.policy });
}

describe('convergence policy', () => {
  const table: { name: string; dirty: number[]; link?: number; cost?: FixedCost; throttle?: number; policy?: Partial<ConvergencePolicy>; action: Decision['action']; rule: Decision['rule'] }[] = [
    { name: 'round 0 always continues (its pages are everything present)', dirty: [65536], action: 'continue', rule: 'continue' },
    { name: 'a tiny task freezes at once (floor)', dirty: [50], action: 'freeze', rule: 'floor' },
    { name: 'converging: the dirty set fits the budget at round 1', dirty: [65536, 2000], action: 'freeze', rule: 'budget' },
    { name: 'slowly converging: still too big, shrinking', dirty: [65536, 40000, 30000], action: 'continue', rule: 'continue' },
    { name: 'slowly converging ends within budget', dirty: [65536, 40000, 20000, 5000], action: 'freeze', rule: 'budget' },
    { name: 'the fixed cost exceeds the budget: freeze once the delta is small next to it', dirty: [65536, 4000], cost: costly, action: 'freeze', rule: 'small-delta' },
    { name: 'the fixed cost exceeds the budget, delta still large: continue', dirty: [65536, 30000], cost: costly, action: 'continue', rule: 'continue' },
    { name: 'diverging: dirty rate above the link -> throttle (default)', dirty: [65536, 70000], link: 10, action: 'throttle', rule: 'throttle' },
    { name: 'diverging so fast that even the throttle cap cannot help -> freeze now', dirty: [65536, 700000], link: 10, action: 'freeze', rule: 'throttle-futile' },
    { name: 'diverging with --on-no-converge abort', dirty: [65536, 200000], link: 10, policy: { onNoConverge: 'abort' }, action: 'abort', rule: 'no-converge' },
    { name: 'diverging with --on-no-converge freeze', dirty: [65536, 200000], link: 10, policy: { onNoConverge: 'freeze' }, action: 'freeze', rule: 'no-converge' },
    { name: 'growing dirty set (> 10 %) from round 2', dirty: [65536, 20000, 23000], action: 'throttle', rule: 'throttle' },
    { name: 'growth of exactly 10 % still counts as converging', dirty: [65536, 20000, 22000], action: 'continue', rule: 'continue' },
    { name: 'throttle at the cap and still diverging -> freeze', dirty: [65536, 100000, 200000], link: 10, throttle: 90, action: 'freeze', rule: 'throttle-exhausted' },
    { name: 'a steady dirty set shrinking by less than half twice in a row -> throttle (QEMU)', dirty: [65536, 30000, 30000, 30000], action: 'throttle', rule: 'throttle' },
    { name: 'one poor round alone is not enough', dirty: [65536, 30000, 14000, 12000], action: 'continue', rule: 'continue' },
    { name: 'max rounds spent while converging slowly -> freeze, no throttle', dirty: [65536, 60000, 55000], policy: { maxRounds: 3 }, action: 'freeze', rule: 'no-converge' },
    { name: 'bursty: a spike above 10 % after a calm round is growth', dirty: [65536, 8000, 30000], action: 'throttle', rule: 'throttle' },
    { name: 'bursty: back down after the spike continues', dirty: [65536, 8000, 30000, 12000], throttle: 20, action: 'continue', rule: 'continue' },
  ];
  for (const row of table) {
    it(row.name, () => {
      const d = decide(rounds(row.dirty, row.link), { cost: row.cost, throttle: row.throttle, policy: row.policy });
      expect({ action: d.action, rule: d.rule }).toEqual({ action: row.action, rule: row.rule });
      expect(d.reason.length).toBeGreaterThan(10);
    });
  }

  describe('post-copy (issue 12)', () => {
    const auto: Partial<ConvergencePolicy> = { onNoConverge: 'postcopy' };
    const always: Partial<ConvergencePolicy> = { onNoConverge: 'postcopy', postCopyAlways: true };
    const rows: { name: string; dirty: number[]; link?: number; throttle?: number; policy: Partial<ConvergencePolicy>; action: Decision['action']; rule: Decision['rule'] }[] = [
      { name: 'always: right after round 0', dirty: [65536], policy: always, action: 'postcopy', rule: 'postcopy-always' },
      { name: 'always: even a task under the floor at round 0', dirty: [50], policy: always, action: 'postcopy', rule: 'postcopy-always' },
      { name: 'auto: round 0 continues as ever', dirty: [65536], policy: auto, action: 'continue', rule: 'continue' },
      { name: 'auto: diverging (dirty rate above the link) switches instead of throttling', dirty: [65536, 70000], link: 10, policy: auto, action: 'postcopy', rule: 'postcopy' },
      { name: 'auto: diverging so fast that throttling would be futile switches too', dirty: [65536, 700000], link: 10, policy: auto, action: 'postcopy', rule: 'postcopy' },
      { name: 'auto: a growing dirty set switches', dirty: [65536, 20000, 23000], policy: auto, action: 'postcopy', rule: 'postcopy' },
      { name: 'auto: poor shrinking twice in a row switches (where QEMU would throttle)', dirty: [65536, 30000, 30000, 30000], policy: auto, action: 'postcopy', rule: 'postcopy' },
      { name: 'auto: max rounds spent switches', dirty: [65536, 60000, 55000], policy: { ...auto, maxRounds: 3 }, action: 'postcopy', rule: 'postcopy' },
      { name: 'auto: converging freezes as usual (budget)', dirty: [65536, 2000], policy: auto, action: 'freeze', rule: 'budget' },
      { name: 'auto: converging freezes as usual (floor)', dirty: [65536, 50], policy: auto, action: 'freeze', rule: 'floor' },
      { name: 'auto: slowly converging continues', dirty: [65536, 40000, 30000], policy: auto, action: 'continue', rule: 'continue' },
      { name: 'always: later rounds (none are run) decide as auto', dirty: [65536, 2000], policy: always, action: 'freeze', rule: 'budget' },
    ];
    for (const row of rows) {
      it(row.name, () => {
        const d = decide(rounds(row.dirty, row.link), { throttle: row.throttle, policy: row.policy });
        expect({ action: d.action, rule: d.rule }).toEqual({ action: row.action, rule: row.rule });
      });
    }

    it('auto never throttles: no row of the no-converge branch keeps a throttle share', () => {
      for (const dirty of [[65536, 70000], [65536, 30000, 30000, 30000], [65536, 100000, 200000]]) {
        const d = decide(rounds(dirty, 10), { policy: auto });
        expect(d.action).toBe('postcopy');
        expect(d.throttlePercent).toBe(0);
      }
    });

    it('switches at the byte budget instead of freezing with the large dirty set', () => {
      const h = rounds([65536, 60000, 60000, 60000, 60000]);
      const d = decideAfterRound({ history: h, fixedCost: cheap, throttlePercent: 0, residentBytes: 65536 * PAGE }, { ...policy, ...auto });
      expect({ action: d.action, rule: d.rule }).toEqual({ action: 'postcopy', rule: 'postcopy' });
      expect(d.reason).toMatch(/^switching to post-copy: pre-copy has sent [\d.]+ MiB, 4x the task's 256.0 MiB; 234.4 MiB left for after the resume$/);
    });

    it('says why in words, with the figures', () => {
      const d = decide(rounds([65536, 70000], 10), { policy: auto });
      expect(d.reason).toMatch(/^switching to post-copy: dirty rate [\d.]+ MiB\/s > link [\d.]+ MiB\/s; 273.4 MiB left for after the resume$/);
      const a = decide(rounds([65536]), { policy: always });
      expect(a.reason).toBe('switching to post-copy after round 0 (--post-copy always): 256.0 MiB sent in round 0; the pages written since go after the resume');
    });
  });

  it('throttles like QEMU: 20 %, then +10 % per round, capped', () => {
    const h = rounds([65536, 70000], 10);
    expect(decide(h).throttlePercent).toBe(20);
    expect(decide(h, { throttle: 20 }).throttlePercent).toBe(30);
    expect(decide(h, { throttle: 85 }).throttlePercent).toBe(90);
  });

  it('explains each decision with its figures', () => {
    const budget = decide(rounds([65536, 2000]));
    expect(budget.reason).toMatch(/expected downtime \d+ ms <= 300 ms/);
    expect(budget.reason).toContain('learned from 2 earlier migrations');
    const throttle = decide(rounds([65536, 70000], 10));
    expect(throttle.reason).toMatch(/throttling task to 80 % of its CPU: dirty rate [\d.]+ MiB\/s > link [\d.]+ MiB\/s/);
  });

  it('freezes once pre-copy has sent 4x the task memory (byte budget)', () => {
    const h = rounds([65536, 60000, 60000, 60000, 60000]);
    const d = decideAfterRound({ history: h, fixedCost: cheap, throttlePercent: 0, residentBytes: 65536 * PAGE }, policy);
    expect(d.rule).toBe('byte-budget');
  });

  it('expected downtime = dirty bytes / transfer rate + fixed cost', () => {
    const d = decide(rounds([25600, 2560], 100), { cost: cheap });
    // 10 MiB at 100 MiB/s = 100 ms, + 100 ms fixed
    expect(d.expectedDowntimeMs).toBeCloseTo(200, 0);
  });

  it('bandwidth changes: the smoothed rate follows a slower link', () => {
    const fast = rounds([65536], 100);
    const slow = rounds([25600], 10); // 100 MiB at 10 MiB/s
    const r = transferRate([...fast, { ...slow[0]!, round: 1 }])!;
    expect(r / MiB).toBeGreaterThan(10);
    expect(r / MiB).toBeLessThan(100);
    expect(r / MiB).toBeCloseTo(55, 0); // EWMA with weight 0.5
  });

  it('rates: small rounds do not count as bandwidth samples; dirty rate uses the previous round time', () => {
    const h: RoundRecord[] = [
      { round: 0, dirtyPages: 65536, bytesSent: 256 * MiB, durationMs: 2660, transferMs: 2560 },
      { round: 1, dirtyPages: 100, bytesSent: 100 * PAGE, durationMs: 500, transferMs: 5 },
    ];
    expect(transferRate(h)! / MiB).toBeCloseTo(100, 5);
    expect(dirtyRate(h, PAGE)!).toBeCloseTo((100 * PAGE * 1000) / 2660, 5);
    expect(transferRate([])).toBeUndefined();
    expect(dirtyRate(h.slice(0, 1), PAGE)).toBeUndefined();
  });
});
