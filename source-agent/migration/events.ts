/** Progress of a migration, as snapshots: the CLI renders them, the Source service streams them. */
import type { SerializedFerryError } from '../../shared/errors/ferry-error.js';
import type { Phase } from '../../shared/phases.js';
import type { DecisionAction } from '../../shared/policy/convergence.js';
import type { ChosenCodec, CompressMode } from '../../shared/policy/compression-choice.js';

export interface PhaseTimes {
  /** criu dump of the frozen tree (the freeze starts with it). */
  dumpMs?: number;
  /** Hashing the dump's pages and sending what the dest lacks, plus the non-page images. */
  finalDeltaMs?: number;
  /** Rebuild of pages images on the dest. */
  rebuildMs?: number;
  /** criu restore on the dest. */
  restoreMs?: number;
  /** Disarm the lease, Commit (the dest resumes the copy). */
  commitMs?: number;
}

export interface RoundSummary {
  round: number;
  presentPages: number;
  dirtyPages: number;
  zeroPages: number;
  bytesSent: number;
  /** Page bytes the tracker read from the task this round (all present memory for hash; written pages for uffd-wp). */
  bytesRead: number;
  durationMs: number;
  /** The part of the round spent sending, not reading (the policy's transfer-rate samples). */
  transferMs: number;
  /** Share of the task's CPU taken away by auto-converge during this round. */
  throttlePercent: number;
  /** How most of the round's page bytes went (--compress), and how many bytes that made on the wire. */
  codec: ChosenCodec;
  wireBytes: number;
}

export interface MigrationSummary {
  migrationId: string;
  pid: number;
  dest: string;
  tracker: string;
  tasks: number;
  rounds: RoundSummary[];
  decision: string;
  /** Present pages at round 0. */
  presentPages: number;
  pagesSent: number;
  pageBytesSent: number;
  finalDeltaPages: number;
  dumpPages: number;
  imageBytesSent: number;
  totalMs: number;
  /** From the freeze (start of criu dump) to the restored copy resumed on the dest. */
  downtimeMs: number;
  phases: PhaseTimes;
  restoredPid: number;
  /** 'lazy': CRIU wrote no memory, the final delta was read from the stopped task; 'full': a plain dump. */
  dumpKind: 'lazy' | 'full';
  /** Pages the final delta read from the stopped task (lazy dump). */
  finalDeltaTaskPages: number;
  /** Auto-converge, when it throttled the task: how, and how hard at most. */
  throttle: { method: string; maxPercent: number } | undefined;
  /** 'lazy': the dest resumed the copy at once and paged its memory in (the fill); 'eager': criu restored it all. */
  restoreMode: 'lazy' | 'eager';
  /** Lazy: from the Commit's answer (the end of the downtime) to the dest's "every page in"; 0 for eager. */
  fillMs: number;
  /** Lazy: page faults of the copy during the fill, and those that waited for the source's confirmation. */
  fillFaults: number;
  fillFaultsWaited: number;
  /** Lazy: pages whose bytes differed from what the dest held (sent from the original), and pages confirmed. */
  replacedPages: number;
  confirmedPages: number;
  /** Lazy: pages the dest's pager put in the copy, and its own time for them (criu restore's end to the last). */
  filledPages: number;
  pagerFillUs: number;
  /** What was asked (--post-copy), and whether the copy resumed before the dest held its memory. */
  postCopy: PostCopyChoice;
  postCopied: boolean;
  /** Bytes sent by phase: page bytes while the task ran, page + image bytes while frozen, page bytes after the resume. */
  precopyBytes: number;
  downtimeBytes: number;
  postcopyBytes: number;
  /** Post-copy: pages the dest lacked at the resume (each came from the original during the fill). */
  remotePages: number;
  /** Lazy: faults that waited for the source, their median and 99th percentile wait (µs; 0 when none). */
  faultWaitP50Us: number;
  faultWaitP99Us: number;
  /** From the SIGKILL of the original to its last process gone: migrate returns after it (kill-original.ts). */
  originalExitMs: number;
  /** Pids of the original still alive when migrate returned (the wait is bounded): none normally. */
  originalLeft: number[];
  /** --compress as asked; the codec both agents speak (none: nothing could compress); page bytes on the wire. */
  compress: CompressMode;
  pageCodec: ChosenCodec;
  pageWireBytes: number;
}

export type PostCopyChoice = 'off' | 'auto' | 'always';

export type MigrationEvent =
  | { kind: 'started'; migrationId: string; pid: number; dest: string; tasks: number; tracker: string; trackerNote: string }
  | { kind: 'phase'; phase: Phase }
  | { kind: 'round'; round: RoundSummary; pagesSent: number; bytesSent: number; rateBytesPerSecond: number }
  /** While a round runs: what the page stream has sent in this migration so far (cumulative, like a round's). */
  | { kind: 'progress'; phase: Phase; round: number; pagesSent: number; bytesSent: number }
  | {
      kind: 'decision';
      action: DecisionAction;
      rule: string;
      message: string;
      expectedDowntimeMs: number | undefined;
      dirtyRateBytesPerSecond: number | undefined;
      transferRateBytesPerSecond: number | undefined;
      fixedCostMs: number;
      throttlePercent: number;
      /** Bytes the last round found dirty: what is still to send if the task froze now. */
      remainingBytes: number;
    }
  | { kind: 'done'; summary: MigrationSummary }
  /** `phase` is where the migration failed (the error may name a narrower one). */
  | { kind: 'failed'; phase: Phase; error: SerializedFerryError };

/** Receives every event of a migration, in order (the CLI's view, the Source service's stream, logs, metrics). */
export type EventSink = (e: MigrationEvent) => void;
