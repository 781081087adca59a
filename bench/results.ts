/** The records the benchmark writes (bench/results/*.json) and the report reads. */
import type { LinkId, MethodId } from './cases.js';

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

export const PHASE_LABELS: Record<keyof DowntimePhases, string> = {
  dump: 'freeze/dump',
  transfer: 'transfer',
  rebuild: 'rebuild',
  restore: 'restore',
  commit: 'resume/commit',
};

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
  /** ... from just before the migration started to just after the copy resumed (includes the downtime). */
  windowWritesPerSec: number | undefined;
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
  mode: 'quick' | 'full' | 'partial';
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
