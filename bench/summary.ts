/**
 * From runs to figures: the median and spread of each (case, method), and the issue's targets evaluated on
 * them. Pure functions of the records, so a results file can be re-reported later.
 */
import { formatMib, methodById, type LinkId, type MethodId } from './cases.js';
import { downtimeSplit, methodOfRun, PHASE_LABELS, type DowntimeSplit, type MethodOutcome, type PhaseBytes, type RunRecord } from './results.js';

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
  /** Median of each part of the downtime over the ok runs (the phases and the gaps between them). */
  phases: DowntimeSplit | undefined;
  dominantPhase: keyof DowntimeSplit | undefined;
  /** Ferry's restore mode over the ok runs ('mixed' if they differ; undefined for plain CRIU). */
  restoreMode: 'lazy' | 'eager' | 'mixed' | undefined;
  /** Lazy restore, after the resume: the time to complete fill, its rate (dumped bytes / fill time), faults. */
  fillMs: Spread | undefined;
  fillBytesPerSec: Spread | undefined;
  /** The pager's own rate: its pages over its time from criu restore's end (the hot loop, measured by the pager). */
  pagerBytesPerSec: Spread | undefined;
  fillFaults: Spread | undefined;
  fillFaultsWaited: Spread | undefined;
  replacedPages: Spread | undefined;
  confirmedPages: Spread | undefined;
  /** Task work rate from the resume to `ferry migrate`'s return (the fill + the kill) / idle, per run. */
  fillWorkRatio: Spread | undefined;
  /** Post-copy (issue 12): ok runs whose copy resumed before the dest held its memory. */
  postCopied: number;
  /** Ferry's bytes by phase / the dump's RSS (its pages x 4 KiB), per run, and their sum (undefined before issue 12). */
  precopyBytesPerRss: Spread | undefined;
  downtimeBytesPerRss: Spread | undefined;
  postcopyBytesPerRss: Spread | undefined;
  phaseBytesPerRss: Spread | undefined;
  /** Post-copy: pages the dest lacked at the resume; the wait of the faults that waited, p50 and p99 (µs). */
  remotePages: Spread | undefined;
  faultWaitP50Us: Spread | undefined;
  faultWaitP99Us: Spread | undefined;
  /** Ferry's freeze rules over the ok runs, with how many runs each ("small-delta x2"). */
  freezeRules: string[];
  /** Ferry's throttle per ok run that throttled ("cgroup up to 40 %"). */
  throttles: string[];
}

const SPLIT_KEYS = Object.keys(PHASE_LABELS) as (keyof DowntimeSplit)[];
/** The dump's pages are the host's (x86-64 here: 4 KiB). */
const PAGE_BYTES = 4096;

const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a !== undefined && b !== undefined && b > 0 ? a / b : undefined;

/** Bytes of a phase (or a sum of them) over the dump's RSS; undefined for a run without the split. */
function phaseRatio(o: MethodOutcome, pick: (b: PhaseBytes) => number): number | undefined {
  return o.phaseBytes && o.dumpPages ? pick(o.phaseBytes) / (o.dumpPages * PAGE_BYTES) : undefined;
}

function tally(values: readonly (string | undefined)[]): string[] {
  const counts = new Map<string, number>();
  for (const v of values) if (v !== undefined) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].map(([v, n]) => (n > 1 ? `${v} x${n}` : v));
}

export function aggregate(runs: readonly RunRecord[]): CaseMethodStats[] {
  const groups = new Map<string, RunRecord[]>();
  for (const raw of runs) {
    // Runs of files before issue 11 say `ferry-live`.
    const r = { ...raw, method: methodOfRun(raw) };
    const key = `${r.caseId}\u0000${r.method}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const out: CaseMethodStats[] = [];
  for (const group of groups.values()) {
    const first = group[0]!;
    const ok = group.filter((r) => r.ok && r.outcome);
    const outcomes = ok.map((r) => r.outcome!);
    const splits = outcomes.map(downtimeSplit);
    const phases =
      outcomes.length > 0 ? (Object.fromEntries(SPLIT_KEYS.map((k) => [k, spread(splits.map((x) => x[k]))!.median])) as unknown as DowntimeSplit) : undefined;
    const phaseKeys = SPLIT_KEYS;
    const modes = [...new Set(outcomes.map((o) => o.restoreMode).filter((m) => m !== undefined))];
    const fills = outcomes.map((o) => o.fill);
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
      restoreMode: modes.length > 1 ? 'mixed' : modes[0],
      fillMs: spread(fills.map((f) => f?.fillMs)),
      fillBytesPerSec: spread(fills.map((f) => (f && f.fillMs > 0 ? (f.dumpPages * PAGE_BYTES * 1000) / f.fillMs : undefined))),
      pagerBytesPerSec: spread(fills.map((f) => (f?.filledPages && f.pagerFillUs ? (f.filledPages * PAGE_BYTES * 1e6) / f.pagerFillUs : undefined))),
      fillFaults: spread(fills.map((f) => f?.faults)),
      fillFaultsWaited: spread(fills.map((f) => f?.faultsWaited)),
      replacedPages: spread(fills.map((f) => f?.replacedPages)),
      confirmedPages: spread(fills.map((f) => f?.confirmedPages)),
      fillWorkRatio: idle ? spread(ok.map((r) => ratio(r.fillWork?.writesPerSec, r.idleWritesPerSec))) : undefined,
      postCopied: outcomes.filter((o) => o.postCopied === true).length,
      precopyBytesPerRss: spread(outcomes.map((o) => phaseRatio(o, (b) => b.precopy))),
      downtimeBytesPerRss: spread(outcomes.map((o) => phaseRatio(o, (b) => b.downtime))),
      postcopyBytesPerRss: spread(outcomes.map((o) => phaseRatio(o, (b) => b.postcopy))),
      phaseBytesPerRss: spread(outcomes.map((o) => phaseRatio(o, (b) => b.precopy + b.downtime + b.postcopy))),
      remotePages: spread(fills.map((f) => f?.remotePages)),
      faultWaitP50Us: spread(fills.map((f) => f?.faultWaitP50Us)),
      faultWaitP99Us: spread(fills.map((f) => f?.faultWaitP99Us)),
      freezeRules: tally(outcomes.map((o) => o.freezeRule)),
      throttles: outcomes.flatMap((o) => (o.throttle ? [o.throttle] : [])),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Targets: issue 11's (lazy restore) and issue 3's (pre-copy)

export interface TargetResult {
  id: string;
  /** The issue that set it. */
  issue: 3 | 11 | 12;
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
  /** For a missed downtime target: the part of the downtime that dominates, with its share (and the split). */
  note: string | undefined;
  /** A figure printed beside, met or not (the plain-CRIU ratio beside Ferry's stop-and-copy one). */
  beside?: string | undefined;
}

function find(stats: readonly CaseMethodStats[], caseId: string, method: MethodId): CaseMethodStats | undefined {
  return stats.find((s) => s.caseId === caseId && s.method === method);
}

function splitText(phases: DowntimeSplit): string {
  return SPLIT_KEYS.map((k) => `${PHASE_LABELS[k]} ${Math.round(phases[k])}`).join(', ');
}

export function dominance(s: CaseMethodStats | undefined): string | undefined {
  if (!s?.phases || !s.dominantPhase || !s.downtimeMs) return undefined;
  const p = s.phases[s.dominantPhase];
  return `${methodById(s.method).label}: dominated by ${PHASE_LABELS[s.dominantPhase]} (${Math.round(p)} of ${Math.round(s.downtimeMs.median)} ms, ${Math.round((100 * p) / s.downtimeMs.median)} %; split ms: ${splitText(s.phases)})`;
}

/** For a missed scaling target: the part of the downtime that grows most from the small case to the large. */
export function growth(small: CaseMethodStats | undefined, large: CaseMethodStats | undefined): string | undefined {
  if (!small?.phases || !large?.phases) return dominance(large);
  const k = SPLIT_KEYS.reduce((a, b) => (large.phases![b] - small.phases![b] > large.phases![a] - small.phases![a] ? b : a));
  const grew = (x: keyof DowntimeSplit): string => `${PHASE_LABELS[x]} ${Math.round(small.phases![x])} -> ${Math.round(large.phases![x])}`;
  return `${methodById(large.method).label}: grows most in ${PHASE_LABELS[k]} (+${Math.round(large.phases[k] - small.phases[k])} ms); split ms ${formatMib(small.mib)} -> ${formatMib(large.mib)}: ${SPLIT_KEYS.map(grew).join(', ')}`;
}

function target(
  issue: TargetResult['issue'],
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
    return { id, issue, what, limit: limitText, value: 'n/a', ratioToLimit: undefined, bound, met: undefined, note: 'not measured in this run' };
  }
  const met = bound === 'upper' ? value <= limit : value >= limit;
  return { id, issue, what, limit: limitText, value: format(value), ratioToLimit: value / limit, bound, met, note: met ? undefined : missNote() };
}

const fmtRatio = (v: number): string => (v >= 10 ? v.toFixed(1) : v.toFixed(3).replace(/0+$/, '').replace(/\.$/, ''));
const fmtMs = (v: number): string => `${Math.round(v)} ms`;

/** The cases the targets are defined on (1 Gbit/s link). */
export const TARGET_CASES = { small8: '1gbit-256m-d8', large8: '1gbit-1g-d8' } as const;

/**
 * Issue 11 (lazy restore): on `ferry-live-lazy`; "stop-and-copy downtime" is Ferry's own stop-and-copy (eager,
 * `--no-precopy`), the plain-CRIU ratio printed beside it.
 * Issue 3 (pre-copy): on `ferry-live-eager`, the restore every run had when issue 3 set them, so their meaning is
 * unchanged (its downtime targets are the looser forms of issue 11's).
 */
export function evaluateTargets(stats: readonly CaseMethodStats[]): TargetResult[] {
  const results: TargetResult[] = [];
  const d = (s: CaseMethodStats | undefined): number | undefined => s?.downtimeMs?.median;
  const stop1g = find(stats, TARGET_CASES.large8, 'ferry-stop-copy');
  const criu1g = find(stats, TARGET_CASES.large8, 'criu-stop-copy');

  const lazy1g = find(stats, TARGET_CASES.large8, 'ferry-live-lazy');
  const lazy256 = find(stats, TARGET_CASES.small8, 'ferry-live-lazy');
  results.push(target(11, 'lazy-downtime-256m', 'lazy downtime (256 MiB, 8 MiB/s, 1 Gbit/s)', 'upper', 150, d(lazy256), fmtMs, () => dominance(lazy256)));
  results.push(target(11, 'lazy-downtime-1g', 'lazy downtime (1 GiB, 8 MiB/s, 1 Gbit/s)', 'upper', 200, d(lazy1g), fmtMs, () => dominance(lazy1g)));
  results.push(
    target(11, 'lazy-downtime-scaling', 'lazy downtime(1 GiB) / downtime(256 MiB) at 8 MiB/s, 1 Gbit/s', 'upper', 1.3, ratio(d(lazy1g), d(lazy256)), fmtRatio, () =>
      growth(lazy256, lazy1g),
    ),
  );
  const vsStop = target(11, 'lazy-downtime-vs-stop-and-copy', 'lazy downtime / Ferry stop-and-copy downtime (1 GiB, 8 MiB/s, 1 Gbit/s)', 'upper', 0.05, ratio(d(lazy1g), d(stop1g)), fmtRatio, () =>
    dominance(lazy1g),
  );
  const vsCriu = ratio(d(lazy1g), d(criu1g));
  if (vsCriu !== undefined) vsStop.beside = `/ plain CRIU stop-and-copy: ${fmtRatio(vsCriu)} (${fmtMs(d(criu1g)!)})`;
  results.push(vsStop);

  const live1g = find(stats, TARGET_CASES.large8, 'ferry-live-eager');
  const live256 = find(stats, TARGET_CASES.small8, 'ferry-live-eager');
  results.push(
    target(3, 'downtime-vs-stop-and-copy', 'eager downtime / Ferry stop-and-copy downtime (1 GiB, 8 MiB/s, 1 Gbit/s)', 'upper', 0.05, ratio(d(live1g), d(stop1g)), fmtRatio, () =>
      dominance(live1g),
    ),
  );
  results.push(
    target(3, 'downtime-vs-plain-criu', 'eager downtime / plain CRIU downtime (1 GiB, 8 MiB/s, 1 Gbit/s)', 'upper', 0.05, ratio(d(live1g), d(criu1g)), fmtRatio, () =>
      dominance(live1g),
    ),
  );
  results.push(target(3, 'downtime-256m', 'eager downtime (256 MiB, 8 MiB/s, 1 Gbit/s)', 'upper', 300, d(live256), fmtMs, () => dominance(live256)));
  results.push(
    target(3, 'downtime-scaling', 'eager downtime(1 GiB) / downtime(256 MiB) at 8 MiB/s, 1 Gbit/s', 'upper', 1.5, ratio(d(live1g), d(live256)), fmtRatio, () =>
      growth(live256, live1g),
    ),
  );
  for (const s of stats.filter((x) => x.method === 'ferry-live-eager' && x.dirtyMibPerSec === 0)) {
    results.push(
      target(3, `bytes-idle-${s.caseId}`, `bytes sent / RSS, idle task (${s.caseId}, eager)`, 'upper', 1.05, s.bytesPerRss?.median, fmtRatio, () =>
        s.rounds ? `${s.rounds.median} rounds: every round after round 0 re-sends what changed, and the final delta and images add to it` : undefined,
      ),
    );
  }
  for (const s of stats.filter((x) => x.method === 'ferry-live-eager' && x.dirtyMibPerSec > 0)) {
    results.push(
      target(
        3,
        `work-rate-${s.caseId}`,
        `task work rate during pre-copy / idle (${s.caseId}, eager${s.throttles.length > 0 ? ', throttled' : ''})`,
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

/** The figures the note of issue 11 quotes: per target case, lazy beside eager. */
export interface LazyVsEagerRow {
  caseId: string;
  mib: number;
  lazy: CaseMethodStats | undefined;
  eager: CaseMethodStats | undefined;
}

export function lazyVsEager(stats: readonly CaseMethodStats[]): LazyVsEagerRow[] {
  const ids = [...new Set(stats.filter((s) => s.method === 'ferry-live-lazy' || s.method === 'ferry-live-eager').map((s) => s.caseId))];
  return ids.map((caseId) => {
    const lazy = find(stats, caseId, 'ferry-live-lazy');
    const eager = find(stats, caseId, 'ferry-live-eager');
    return { caseId, mib: (lazy ?? eager)!.mib, lazy, eager };
  });
}

// ---------------------------------------------------------------------------------------------------------
// Issue 12 (post-copy): on the `--post-copy` cases (1 Gbit/s, 128 MiB/s dirtying, 256 MiB and 1 GiB)

export const POST_COPY_CASES = { small: '1gbit-256m-d128', large: '1gbit-1g-d128' } as const;
const POST_COPY_TARGET_METHODS: readonly MethodId[] = ['ferry-postcopy', 'ferry-postcopy-always'];
export const POST_COPY_LIMITS = { downtimeMs: 200, bytesPerRss: 1.5, totalVsStopAndCopy: 1 } as const;

const perRss = (s: CaseMethodStats): string =>
  `pre-copy ${fmtRatio(s.precopyBytesPerRss?.median ?? NaN)}, downtime ${fmtRatio(s.downtimeBytesPerRss?.median ?? NaN)}, post-copy ${fmtRatio(s.postcopyBytesPerRss?.median ?? NaN)} x RSS`;

/** A figure the issue asks to see, whatever its value: met when the runs measured it, n/a without runs. */
function reported(id: string, what: string, s: CaseMethodStats | undefined): TargetResult {
  const value = s?.fillWorkRatio?.median;
  const precopy = s?.precopyWorkRatio?.median;
  return {
    id,
    issue: 12,
    what,
    limit: 'reported',
    value: value === undefined ? 'n/a' : fmtRatio(value),
    ratioToLimit: undefined,
    bound: 'lower',
    met: s === undefined ? undefined : value !== undefined,
    note: s === undefined ? 'not measured in this run' : value === undefined ? 'the runs gave no rate (a fill too short to tell)' : undefined,
    beside: precopy === undefined ? undefined : `during pre-copy: ${fmtRatio(precopy)}`,
  };
}

/**
 * Per post-copy method (auto, always) and size: downtime <= 200 ms; bytes sent / RSS <= 1.5 (the summary's three
 * phases over the dump's pages x 4 KiB); total time <= Ferry's stop-and-copy total of the same case; and the task's
 * work rate during post-copy (the fill) reported: "met" when it was measured, whatever its value.
 */
export function evaluatePostCopyTargets(stats: readonly CaseMethodStats[]): TargetResult[] {
  const results: TargetResult[] = [];
  for (const method of POST_COPY_TARGET_METHODS) {
    const tag = method === 'ferry-postcopy' ? 'auto' : 'always';
    for (const caseId of [POST_COPY_CASES.small, POST_COPY_CASES.large]) {
      const s = find(stats, caseId, method);
      const stop = find(stats, caseId, 'ferry-stop-copy');
      const size = formatMib(s?.mib ?? (caseId === POST_COPY_CASES.small ? 256 : 1024));
      const where = `${size}, 128 MiB/s, 1 Gbit/s, ${tag}`;
      const key = `${tag}-${caseId}`;
      results.push(
        target(12, `postcopy-downtime-${key}`, `post-copy downtime (${where})`, 'upper', POST_COPY_LIMITS.downtimeMs, s?.downtimeMs?.median, fmtMs, () => dominance(s)),
      );
      results.push(
        target(12, `postcopy-bytes-${key}`, `bytes sent / RSS (${where})`, 'upper', POST_COPY_LIMITS.bytesPerRss, s?.phaseBytesPerRss?.median, fmtRatio, () =>
          s ? `${perRss(s)}${s.postCopied < s.ok ? `; post-copied in ${s.postCopied} of ${s.ok} runs` : ''}` : undefined,
        ),
      );
      const vsStop = target(
        12,
        `postcopy-total-vs-stop-and-copy-${key}`,
        `total time / Ferry stop-and-copy total (${where})`,
        'upper',
        POST_COPY_LIMITS.totalVsStopAndCopy,
        ratio(s?.totalMs?.median, stop?.totalMs?.median),
        fmtRatio,
        () => (s?.rounds && s.fillMs ? `${s.rounds.median} pre-copy rounds, then a fill of ${fmtMs(s.fillMs.median)}` : undefined),
      );
      if (s?.totalMs && stop?.totalMs) vsStop.beside = `${fmtMs(s.totalMs.median)} vs ${fmtMs(stop.totalMs.median)}`;
      results.push(vsStop);
      results.push(reported(`postcopy-work-rate-${key}`, `task work rate during post-copy / idle (${where})`, s && s.ok > 0 ? s : undefined));
    }
  }
  return results;
}
