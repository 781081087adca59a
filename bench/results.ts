/** The records the benchmark writes (bench/results/*.json) and the report reads. */
import { LEGACY_LIVE, recordedMethod, type LinkId, type MethodId } from './cases.js';

/** Where the downtime went, in ms. Ferry's come from summary.phases; plain CRIU's are timed by the benchmark. */
export interface DowntimePhases {
  /** Freeze: criu dump of the stopped tree. */
  dump: number;
  /** Transfer: Ferry's final delta (dumped pages the dest lacks + other images); plain CRIU: the whole copy. */
  transfer: number;
  /** Ferry only: pages images rebuilt on the dest. */
  rebuild: number;
  restore: number;
  /** Resume/commit: Ferry's commit (the dest resumes the copy). Plain CRIU resumes inside `criu restore`. */
  commit: number;
}

/** The downtime's split: the phases, and `gaps`, what the phases leave of the downtime (downtime - their sum). */
export interface DowntimeSplit extends DowntimePhases {
  gaps: number;
}

export const PHASE_LABELS: Record<keyof DowntimeSplit, string> = {
  dump: 'freeze/dump',
  transfer: 'transfer',
  rebuild: 'rebuild',
  restore: 'restore',
  commit: 'resume/commit',
  gaps: 'gaps',
};

export function downtimeSplit(o: Pick<MethodOutcome, 'downtimeMs' | 'phases'>): DowntimeSplit {
  const p = o.phases;
  return { ...p, gaps: o.downtimeMs - (p.dump + p.transfer + p.rebuild + p.restore + p.commit) };
}

/** Ferry's lazy restore after the resume (from its summary); zeros for an eager one. */
export interface FillFigures {
  /** From the Commit's answer (the end of the downtime) to the dest's "every page in". */
  fillMs: number;
  /** Page faults of the copy during the fill, and those that waited for the source's confirmation. */
  faults: number;
  faultsWaited: number;
  /** Pages whose bytes differed from what the dest held (sent from the original), and pages confirmed. */
  replacedPages: number;
  confirmedPages: number;
  /** Pages of the dump: what the copy's memory is (the fill rate divides their bytes by fillMs). */
  dumpPages: number;
  /** The pager's own figures: pages it put in, and its time from criu restore's end to the last (0: older runs). */
  filledPages?: number;
  pagerFillUs?: number;
  /** Post-copy (issue 12; absent in older files): pages the dest lacked at the resume, and the wait of the faults
   * that waited for a page, median and 99th percentile (µs, the pager's own clock; 0 when none waited). */
  remotePages?: number;
  faultWaitP50Us?: number;
  faultWaitP99Us?: number;
}

/** Ferry's bytes sent by phase (its summary, issue 12): page bytes while the task ran; page + image bytes while it
 * was frozen; page bytes after the resume. */
export interface PhaseBytes {
  precopy: number;
  downtime: number;
  postcopy: number;
}

/**
 * The task's work while the fill ran, from memtest's counter. `from` is the last sample of the original before
 * the freeze (pre-copy's sampler; the idle window's end for a stop-and-copy); the writes between it and the freeze
 * are estimated at the rate measured before (pre-copy's, else idle) and taken off. `to` is the restored copy's
 * counter read as soon as `ferry migrate` returned: the span is resume -> migrate's return, the fill plus the kill
 * of the original and the CLI's exit. Monotonic ms of the benchmark's clock (work-rate.ts fillWork says why not
 * memtest's).
 */
export interface FillWork {
  fromWrites: number;
  fromMonoMs: number;
  /** When the benchmark saw the freeze start (the first line of `ferry migrate` past pre-copy). */
  freezeMonoMs: number;
  /** Writes estimated between `from` and the freeze. */
  gapWrites: number;
  /** The resume: the `fill` phase line (lazy), else the freeze + the downtime. */
  resumeMonoMs: number;
  resumeFrom: 'fill-line' | 'freeze+downtime';
  toWrites: number;
  toMonoMs: number;
  /** The copy's CLOCK_MONOTONIC less ours at `to` (negative: criu's restore set it back). */
  copyClockOffsetMs?: number | undefined;
  /** (to - from - gap) / (to - resume), or undefined when the span is too short to tell. */
  writesPerSec: number | undefined;
}

/** What one migration (any method) produced. */
export interface MethodOutcome {
  downtimeMs: number;
  totalMs: number;
  /** Payload bytes over the link: Ferry's page + image bytes; plain CRIU's tar stream. */
  bytesSent: number;
  /** Pre-copy rounds (0 for a stop-and-copy). */
  rounds: number;
  restoredPid: number;
  phases: DowntimePhases;
  /** Ferry's freeze decision in words, if any. */
  decision: string | undefined;
  /** The rule of Ferry's freeze decision (budget, small-delta, throttle-exhausted, ...). */
  freezeRule: string | undefined;
  /** Ferry's auto-converge, when it throttled the task: "cgroup up to 40 %". */
  throttle: string | undefined;
  /** Anything else worth keeping from the method (Ferry's summary, the CRIU timings). */
  detail: Record<string, unknown>;
  /** Ferry's restore mode as its summary reports it (undefined: plain CRIU, or a results file before issue 11). */
  restoreMode?: 'lazy' | 'eager' | undefined;
  /** Ferry's fill (lazy), or undefined. */
  fill?: FillFigures | undefined;
  /** Ferry's bytes by phase and the dump's pages (its RSS as the split's ratios count it); absent before issue 12. */
  phaseBytes?: PhaseBytes | undefined;
  dumpPages?: number | undefined;
  /** Ferry: whether the copy resumed before the dest held its memory (post-copy). */
  postCopied?: boolean | undefined;
}

export interface RunRecord {
  caseId: string;
  link: LinkId;
  mib: number;
  dirtyMibPerSec: number;
  method: MethodId;
  /** 1-based. */
  rep: number;
  startedAt: string;
  /** Start of the task to its stop, as the benchmark saw it. */
  wallMs: number;
  ok: boolean;
  error: string | undefined;
  /** VmRSS of the task before the migration. */
  rssBytes: number;
  /** Pages rewritten per second by the task, idle (~2 s before the migration). */
  idleWritesPerSec: number | undefined;
  /** ... during pre-copy (Ferry live only; from stats sampled while the rounds ran). */
  precopyWritesPerSec: number | undefined;
  /** ... from just before the migration started to just after the copy resumed (includes the downtime; the span on
   * the benchmark's clock since issue 11, the copy's clock before, which made it read high). */
  windowWritesPerSec: number | undefined;
  /** ... from the resume to `ferry migrate`'s return (the fill; Ferry only; absent in files before issue 11). */
  fillWork?: FillWork | undefined;
  badPages: number | undefined;
  outcome: MethodOutcome | undefined;
  /** Where the logs of a failed run were kept. */
  logsDir: string | undefined;
}

export interface LinkCheck {
  link: LinkId;
  bytes: number;
  ms: number;
  mbitPerSec: number;
}

export interface MachineInfo {
  kernel: string;
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  criuVersion: string;
  criuPath: string;
  nodeVersion: string;
  date: string;
  ferryCommit: string;
}

export interface BenchFile {
  version: 1;
  /** partial: a full run narrowed with --cases or --methods (it never replaces the committed summary). */
  /** lazy-vs-eager: `--lazy-vs-eager`, the runs issue 11's targets need; post-copy: `--post-copy`, issue 12's. */
  mode: 'quick' | 'full' | 'partial' | 'lazy-vs-eager' | 'post-copy';
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  machine: MachineInfo;
  /** Cases run; those cut to fit the time budget have fewer repetitions. */
  cases: { id: string; link: LinkId; mib: number; dirtyMibPerSec: number }[];
  methods: MethodId[];
  repetitions: number;
  /** Methods that could not run at all, and why (e.g. a flag `ferry migrate` lacks). */
  unavailable: { method: MethodId; reason: string }[];
  /** Runs the time budget left out. */
  skipped: { caseId: string; method: MethodId; rep: number; reason: string }[];
  linkChecks: LinkCheck[];
  runs: RunRecord[];
}

/** The method a run used, whatever file it came from (Ferry's summary, kept in detail, names the restore). */
export function methodOfRun(r: RunRecord): MethodId {
  const summary = (r.outcome?.detail as { summary?: { restoreMode?: string } } | undefined)?.summary;
  return recordedMethod(r.method, r.outcome?.restoreMode ?? summary?.restoreMode);
}

/**
 * A results file as read back (JSON.parse of one, any version): method ids of files written before issue 11
 * (`ferry-live`) become the method the run used (recordedMethod); everything else is as written.
 */
export function upgradeBenchFile(raw: BenchFile): BenchFile {
  const runs = raw.runs.map((r) => ({ ...r, method: methodOfRun(r) }));
  const ran = new Set(runs.map((r) => r.method));
  // A listed `ferry-live` is whichever pre-copy methods its runs turned out to be (eager when none ran).
  const methods = (raw.methods as string[]).flatMap((m): MethodId[] => {
    if (m !== LEGACY_LIVE) return [recordedMethod(m, undefined)];
    const live = (['ferry-live-lazy', 'ferry-live-eager'] as const).filter((x) => ran.has(x));
    return live.length > 0 ? live : ['ferry-live-eager'];
  });
  return {
    ...raw,
    methods,
    unavailable: raw.unavailable.map((u) => ({ ...u, method: recordedMethod(u.method, undefined) })),
    skipped: raw.skipped.map((s) => ({ ...s, method: recordedMethod(s.method, undefined) })),
    runs,
  };
}
