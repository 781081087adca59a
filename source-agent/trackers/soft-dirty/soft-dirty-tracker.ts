/**
 * The soft-dirty tracker (kernels with CONFIG_MEM_SOFT_DIRTY: Debian, Ubuntu, RHEL x86_64): each round reads only
 * the pages written since the last one, found in pagemap bit 55, instead of every present page.
 *
 * Each round, for the whole tree at once: read every process's maps; hold the processes still (pause-processes.ts);
 * per process read presence and soft-dirty (PAGEMAP_SCAN with PAGE_IS_SOFT_DIRTY on Linux >= 6.7, else pagemap
 * pread) and clear (`echo 4 > clear_refs`); let them go; then read, hash and send:
 * - a process seen for the first time (round 0, forked since, or a reused pid): every present page;
 * - else the soft-dirty present-or-swapped pages, plus the present pages of any range that was not part of the
 *   dumpable areas last round (an area that appeared, grew, or became readable). The kernel also marks pages
 *   faulted in, moved by mremap, and swapped pages keep their mark, so swap-out and swap-in lose nothing; a
 *   written huge page marks all its 4 KiB entries.
 * Pages whose hash equals the dest's copy are not sent, exactly like the hash tracker. A page written after the
 * clear is marked again and read next round (or by changedSinceLastRound after the freeze).
 */
import { SystemCallError } from '../../../shared/errors/ferry-error.js';
import { runsPageCount, type PageRuns, type PagemapMethod } from '../../../shared/kernel/pagemap.js';
import { intersectRuns, unionRuns } from '../../../shared/kernel/pagemap-written.js';
import { dumpableVmas, type Vma } from '../../../shared/kernel/proc-maps.js';
import type { PageHashIndex } from '../../../shared/pages/page-hash-index.js';
import { emptyPipelineStats, PagePipeline, type BatchSink } from '../../pages/page-pipeline.js';
import { rethrowUnlessExited, roundStats, type BeforeRead, type DirtyTracker, type TrackedTask, type TrackerRoundStats } from '../tracker.js';
import { realSoftDirtyKernel, type SoftDirtyKernel, type SoftDirtyReader } from './soft-dirty-kernel.js';
import { subtractRuns, vmaRuns, type SoftDirtyScan } from './soft-dirty-pagemap.js';
import { probeSoftDirty, type SoftDirtyProbeResult } from './probe.js';

/** What the last round did, beyond TrackerRoundStats (tests, bench, logs). */
export interface SoftDirtyRoundDetail {
  processes: number;
  /** Processes read whole this round (first seen). */
  newProcesses: number;
  /** Soft-dirty pages reported (present or swapped). */
  dirtyPages: number;
  /** Present pages of ranges not dumpable last round. */
  freshPages: number;
  /** Pages read: the union of the above (or every present page of a new process). */
  candidatePages: number;
  /** Time the processes were held still (stop, scan, clear, continue). */
  pausedMs: number;
  /** Processes whose threads did not all stop within the bound. */
  lateStops: number;
  scanMs: number;
  method: PagemapMethod | undefined;
}

interface ProcessState {
  startTime: number;
  /** The dumpable ranges as of the last clear: pages outside them are read whole when they show up. */
  covered: PageRuns;
}

interface Plan {
  task: TrackedTask;
  startTime: number;
  vmas: Vma[];
  known: ProcessState | undefined;
  scan?: SoftDirtyScan;
}

export interface SoftDirtyTrackerOptions {
  /** Force the pagemap method (tests compare both). */
  method?: PagemapMethod;
}

export class SoftDirtyTracker implements DirtyTracker {
  readonly name = 'soft-dirty' as const;
  private readonly pipeline: PagePipeline;
  private readonly states = new Map<number, ProcessState>();
  /** Details of the last round. */
  lastRound: SoftDirtyRoundDetail | undefined;

  constructor(
    pageSize: number,
    private readonly options: SoftDirtyTrackerOptions = {},
    private readonly kernel: SoftDirtyKernel = realSoftDirtyKernel(),
  ) {
    this.pipeline = new PagePipeline(pageSize);
  }

  /** Whether this host can run the tracker: a real write and scan on a scratch mapping of the agent. */
  static probe(): Promise<SoftDirtyProbeResult> {
    return Promise.resolve(probeSoftDirty());
  }

  async round(tasks: readonly TrackedTask[], held: Map<number, PageHashIndex>, sink: BatchSink, signal: AbortSignal, beforeRead?: BeforeRead): Promise<TrackerRoundStats> {
    const pass = emptyPipelineStats();
    let presentPages = 0;
    const detail = emptyDetail();
    this.lastRound = detail;
    const wanted = new Set(tasks.map((t) => t.hostPid));
    for (const pid of [...this.states.keys()]) if (!wanted.has(pid)) this.states.delete(pid); // exited or left the tree

    const plans: Plan[] = [];
    const toRead: { task: TrackedTask; candidates: PageRuns }[] = [];
    for (const task of tasks) {
      const stat = this.kernel.stat(task.hostPid);
      const maps = stat && stat.state !== 'Z' && stat.state !== 'X' ? this.kernel.maps(task.hostPid) : undefined;
      if (!stat || !maps) {
        this.states.delete(task.hostPid); // exited: CRIU will not dump it either
        continue;
      }
      let known = this.states.get(task.hostPid);
      if (known && known.startTime !== stat.startTime) known = undefined; // the pid was reused
      plans.push({ task, startTime: stat.startTime, vmas: dumpableVmas(maps), known });
    }

    this.scanAndClear(plans, detail);
    signal.throwIfAborted();

    for (const plan of plans) {
      const { task, scan } = plan;
      if (!scan) {
        this.states.delete(task.hostPid);
        continue;
      }
      detail.processes++;
      presentPages += runsPageCount(scan.present);
      const covered = vmaRuns(plan.vmas);
      let candidates: PageRuns;
      if (plan.known) {
        const fresh = intersectRuns(subtractRuns(covered, plan.known.covered), scan.present);
        detail.dirtyPages += runsPageCount(scan.dirty);
        detail.freshPages += runsPageCount(fresh);
        candidates = unionRuns(scan.dirty, fresh);
      } else {
        detail.newProcesses++;
        candidates = scan.present;
      }
      this.states.set(task.hostPid, { startTime: plan.startTime, covered });
      detail.candidatePages += runsPageCount(candidates);
      toRead.push({ task, candidates });
    }
    if (beforeRead && !beforeRead(detail.candidatePages, presentPages)) {
      return { ...roundStats(presentPages, pass), dirtyPages: detail.candidatePages, candidatePages: detail.candidatePages, stoppedBeforeRead: true };
    }
    for (const { task, candidates } of toRead) {
      try {
        await this.pipeline.send(task.key, this.kernel.readPages(task.hostPid, candidates, signal), held, sink, pass);
      } catch (e) {
        rethrowUnlessExited(e);
        this.states.delete(task.hostPid); // the task exited mid-round
      }
    }
    return { ...roundStats(presentPages, pass), candidatePages: detail.candidatePages };
  }

  /**
   * After the freeze (the tree is stopped): per task key, the pages written since the last round's clear, plus
   * the ranges that were not dumpable then. A scan, no clear. Processes first seen now are left out: every page
   * of theirs is read.
   */
  changedSinceLastRound(tasks: readonly TrackedTask[]): Map<number, PageRuns> {
    const out = new Map<number, PageRuns>();
    for (const task of tasks) {
      const known = this.states.get(task.hostPid);
      const stat = this.kernel.stat(task.hostPid);
      if (!known || !stat || stat.startTime !== known.startTime) continue;
      const maps = this.kernel.maps(task.hostPid);
      if (!maps) continue;
      const vmas = dumpableVmas(maps);
      const pagemap = this.kernel.openSoftDirty(task.hostPid, this.options.method);
      try {
        const scan = pagemap.scan(vmas);
        out.set(task.key, unionRuns(scan.dirty, subtractRuns(vmaRuns(vmas), known.covered)));
      } catch (e) {
        if (!(e instanceof SystemCallError && e.errnoName === 'ESRCH')) throw e;
      } finally {
        pagemap.close();
      }
    }
    return out;
  }

  /** Holds the tree still, and per process reads presence and soft-dirty and clears; sets `plan.scan`. */
  private scanAndClear(plans: Plan[], detail: SoftDirtyRoundDetail): void {
    const paused = this.kernel.pause(plans.map((p) => p.task.hostPid));
    const t0 = performance.now();
    try {
      for (const plan of plans) {
        let pagemap: SoftDirtyReader | undefined;
        try {
          pagemap = this.kernel.openSoftDirty(plan.task.hostPid, this.options.method);
          const scan = pagemap.scan(plan.vmas);
          detail.method = scan.method;
          if (this.kernel.clearSoftDirty(plan.task.hostPid)) plan.scan = scan;
        } catch (e) {
          // Gone between the maps and the scan (ENOENT on open, ESRCH on read): CRIU will not dump it either.
          if (!(e instanceof SystemCallError && (e.errnoName === 'ESRCH' || e.errnoName === 'ENOENT'))) throw e;
        } finally {
          pagemap?.close();
        }
      }
    } finally {
      paused.resume();
      detail.scanMs = performance.now() - t0;
      detail.pausedMs = paused.stopMs + detail.scanMs;
      detail.lateStops = paused.late.length;
    }
  }

  /** Pids currently tracked (tests). */
  trackedPids(): number[] {
    return [...this.states.keys()];
  }

  close(): void {
    // Nothing is held between rounds: no fd, nothing changed in the task but its soft-dirty bits.
    this.states.clear();
  }
}

function emptyDetail(): SoftDirtyRoundDetail {
  return { processes: 0, newProcesses: 0, dirtyPages: 0, freshPages: 0, candidatePages: 0, pausedMs: 0, lateStops: 0, scanMs: 0, method: undefined };
}
