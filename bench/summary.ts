/**
 * From runs to figures: the median and spread of each (case, method), and the targets evaluated on
 * them. Pure functions of the records, so a results file can be re-reported later.
 */
import type { LinkId, MethodId } from './cases.js';
import { PHASE_LABELS, type DowntimePhases, type RunRecord } from './results.js';

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: readonly (number | undefined)[]): Spread | undefined {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v.at(-1)!, n: v.length };
}

export interface CaseMethodStats {
  caseId: string;
  link: LinkId;
  mib: number;
  dirtyMibPerSec: number;
  method: MethodId;
  ok: number;
  failed: number;
  /** First error of a failed run, shortened. */
  firstError: string | undefined;
  downtimeMs: Spread | undefined;
  totalMs: Spread | undefined;
  bytesSent: Spread | undefined;
  /** bytes sent / VmRSS, per run. */
  bytesPerRss: Spread | undefined;
  rounds: Spread | undefined;
  /** Task work rate during pre-copy / idle, per run (live, dirty rate > 0). */
  precopyWorkRatio: Spread | undefined;
  /** Task work rate from just before the migration to just after / idle (includes the downtime). */
  windowWorkRatio: Spread | undefined;
  /** Median of each downtime phase over the ok runs. */
  phases: DowntimePhases | undefined;
  dominantPhase: keyof DowntimePhases | undefined;
  /** Ferry's freeze rules over the ok runs, with how many runs each ("small-delta x2"). */
  freezeRules: string[];
  /** Ferry's throttle per ok run that throttled ("cgroup up to 40 %"). */
  throttles: string[];
}

const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a !== undefined && b !== undefined && b > 0 ? a / b : undefined;

function tally(values: readonly (string | undefined)[]): string[] {
  const counts = new Map<string, number>();
  for (const v of values) if (v !== undefined) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].map(([v, n]) => (n > 1 ? `${v} x${n}` : v));
}

export function aggregate(runs: readonly RunRecord[]): CaseMethodStats[] {
  const groups = new Map<string, RunRecord[]>();
  for (const r of runs) {
    const key = `${r.caseId}\u0000${r.method}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const out: CaseMethodStats[] = [];
  for (const group of groups.values()) {
    const first = group[0]!;
    const ok = group.filter((r) => r.ok && r.outcome);
    const outcomes = ok.map((r) => r.outcome!);
    const phaseKeys = Object.keys(PHASE_LABELS) as (keyof DowntimePhases)[];
    const phases =
      outcomes.length > 0
        ? (Object.fromEntries(phaseKeys.map((k) => [k, spread(outcomes.map((o) => o.phases[k]))!.median])) as unknown as DowntimePhases)
        : undefined;
    const dominantPhase = phases ? phaseKeys.reduce((a, b) => (phases[b] > phases[a] ? b : a)) : undefined;
    const idle = first.dirtyMibPerSec > 0;
    out.push({
      caseId: first.caseId,
      link: first.link,
      mib: first.mib,
      dirtyMibPerSec: first.dirtyMibPerSec,
      method: first.method,
      ok: ok.length,
      failed: group.length - ok.length,
      firstError: group.find((r) => !r.ok)?.error?.split('\n')[0]?.slice(0, 200),
      downtimeMs: spread(outcomes.map((o) => o.downtimeMs)),
      totalMs: spread(outcomes.map((o) => o.totalMs)),
      bytesSent: spread(outcomes.map((o) => o.bytesSent)),
      bytesPerRss: spread(ok.map((r) => ratio(r.outcome!.bytesSent, r.rssBytes))),
      rounds: spread(outcomes.map((o) => o.rounds)),
      precopyWorkRatio: idle ? spread(ok.map((r) => ratio(r.precopyWritesPerSec, r.idleWritesPerSec))) : undefined,
      windowWorkRatio: idle ? spread(ok.map((r) => ratio(r.windowWritesPerSec, r.idleWritesPerSec))) : undefined,
      phases,
      dominantPhase,
      freezeRules: tally(outcomes.map((o) => o.freezeRule)),
      throttles: outcomes.flatMap((o) => (o.throttle ? [o.throttle] : [])),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Targets (issue 3)

export interface TargetResult {
  id: string;
  /** What is compared, in words. */
  what: string;
  /** e.g. "<= 0.05" */
  limit: string;
  /** The measured value (median based), formatted; "n/a" when the runs needed are missing. */
  value: string;
  /** Measured / limit (undefined when not measured): met when <= 1 for an upper bound, >= 1 for a lower one. */
  ratioToLimit: number | undefined;
  bound: 'upper' | 'lower';
  met: boolean | undefined;
  /** For a missed downtime target: the phase that dominates the live migration's downtime, with its share. */
  note: string | undefined;
}

function find(stats: readonly CaseMethodStats[], caseId: string, method: MethodId): CaseMethodStats | undefined {
  return stats.find((s) => s.caseId === caseId && s.method === method);
}

function dominance(s: CaseMethodStats | undefined): string | undefined {
  if (!s?.phases || !s.dominantPhase || !s.downtimeMs) return undefined;
  const p = s.phases[s.dominantPhase];
  const parts = (Object.keys(PHASE_LABELS) as (keyof DowntimePhases)[]).map((k) => `${PHASE_LABELS[k]} ${Math.round(s.phases![k])}`).join(', ');
  return `dominated by ${PHASE_LABELS[s.dominantPhase]} (${Math.round(p)} of ${Math.round(s.downtimeMs.median)} ms, ${Math.round((100 * p) / s.downtimeMs.median)} %; phases ms: ${parts})`;
}

function target(
  id: string,
  what: string,
  bound: 'upper' | 'lower',
  limit: number,
  value: number | undefined,
  format: (v: number) => string,
  missNote: () => string | undefined,
): TargetResult {
  const limitText = `${bound === 'upper' ? '<=' : '>='} ${format(limit)}`;
  if (value === undefined) {
    return { id, what, limit: limitText, value: 'n/a', ratioToLimit: undefined, bound, met: undefined, note: 'not measured in this run' };
  }
  const met = bound === 'upper' ? value <= limit : value >= limit;
  return { id, what, limit: limitText, value: format(value), ratioToLimit: value / limit, bound, met, note: met ? undefined : missNote() };
}

const fmtRatio = (v: number): string => (v >= 10 ? v.toFixed(1) : v.toFixed(3).replace(/0+$/, '').replace(/\.$/, ''));
const fmtMs = (v: number): string => `${Math.round(v)} ms`;

/** The cases the targets are defined on (1 Gbit/s link). */
export const TARGET_CASES = { small8: '1gbit-256m-d8', large8: '1gbit-1g-d8' } as const;

export function evaluateTargets(stats: readonly CaseMethodStats[]): TargetResult[] {
  const results: TargetResult[] = [];
  const live1g = find(stats, TARGET_CASES.large8, 'ferry-live');
  const live256 = find(stats, TARGET_CASES.small8, 'ferry-live');
  const stop1g = find(stats, TARGET_CASES.large8, 'ferry-stop-copy');
  const criu1g = find(stats, TARGET_CASES.large8, 'criu-stop-copy');
  const d = (s: CaseMethodStats | undefined): number | undefined => s?.downtimeMs?.median;

  results.push(
    target('downtime-vs-stop-and-copy', 'downtime / Ferry stop-and-copy downtime (1 GiB, 8 MiB/s, 1 Gbit/s)', 'upper', 0.05, ratio(d(live1g), d(stop1g)), fmtRatio, () =>
      dominance(live1g),
    ),
  );
  results.push(
    target('downtime-vs-plain-criu', 'downtime / plain CRIU downtime (1 GiB, 8 MiB/s, 1 Gbit/s)', 'upper', 0.05, ratio(d(live1g), d(criu1g)), fmtRatio, () =>
      dominance(live1g),
    ),
  );
  results.push(target('downtime-256m', 'downtime (256 MiB, 8 MiB/s, 1 Gbit/s)', 'upper', 300, d(live256), fmtMs, () => dominance(live256)));
  results.push(
    target('downtime-scaling', 'downtime(1 GiB) / downtime(256 MiB) at 8 MiB/s, 1 Gbit/s', 'upper', 1.5, ratio(d(live1g), d(live256)), fmtRatio, () =>
      dominance(live1g),
    ),
  );
  for (const s of stats.filter((x) => x.method === 'ferry-live' && x.dirtyMibPerSec === 0)) {
    results.push(
      target(`bytes-idle-${s.caseId}`, `bytes sent / RSS, idle task (${s.caseId})`, 'upper', 1.05, s.bytesPerRss?.median, fmtRatio, () =>
        s.rounds ? `${s.rounds.median} rounds: every round after round 0 re-sends what changed, and the final delta and images add to it` : undefined,
      ),
    );
  }
  for (const s of stats.filter((x) => x.method === 'ferry-live' && x.dirtyMibPerSec > 0)) {
    results.push(
      target(
        `work-rate-${s.caseId}`,
        `task work rate during pre-copy / idle (${s.caseId}${s.throttles.length > 0 ? ', throttled' : ''})`,
        'lower',
        0.9,
        s.precopyWorkRatio?.median,
        fmtRatio,
        () =>
          s.throttles.length > 0
            ? `auto-converge throttled the task on purpose (${[...new Set(s.throttles)].join(', ')}): pre-copy could not catch up with its writes`
            : "pre-copy reads (hashes) all of the task's memory every round, competing with the task for the CPUs and memory bandwidth",
      ),
    );
  }
  return results;
}
