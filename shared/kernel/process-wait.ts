/**
 * Waiting on /proc for tasks to reach a state: every thread of a tree stopped (T or t), or processes gone
 * (no longer there, or zombies waiting to be reaped). Polled, with a budget: the kernel has no event for either.
 */
import { readdirSync } from 'node:fs';
import { readStat } from './proc-status.js';
import { readProcessTree } from './process-tree.js';

const gone = (state: string | undefined): boolean => state === undefined || state === 'Z' || state === 'X';

/** Waits until every thread of `root` and of its descendants is stopped; returns the tids still running. */
export async function waitTreeStopped(root: number, budgetMs: number): Promise<number[]> {
  const until = Date.now() + budgetMs;
  for (;;) {
    const running: number[] = [];
    for (const proc of readProcessTree(root)?.processes ?? []) {
      for (const { hostTid } of proc.threads) {
        const state = readStat(proc.hostPid, hostTid)?.state;
        if (!gone(state) && state !== 'T' && state !== 't') running.push(hostTid);
      }
    }
    if (running.length === 0 || Date.now() > until) return running;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Waits up to `budgetMs` until none of `pids` names a live (non-zombie) process. */
export async function waitGone(pids: readonly number[], budgetMs: number): Promise<void> {
  const until = Date.now() + budgetMs;
  for (;;) {
    const left = pids.some((pid) => !gone(readStat(pid)?.state));
    if (!left || Date.now() > until) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A process as it was seen: the pid names it only while the start time matches (pid reuse). */
export interface ProcessIdentity {
  pid: number;
  startTime: number | undefined;
}

/**
 * True while `p` is still that process with a thread that has not finished exiting. A process killed with much
 * memory is still R or D while the kernel unmaps it (ZDTM maps06 was still exiting when migrate returned); a
 * zombie leader whose other threads still exit is not done either. Only /proc/PID/task/TID/stat tells that.
 */
export function stillExiting(p: ProcessIdentity): boolean {
  const stat = readStat(p.pid);
  if (!stat || (p.startTime !== undefined && stat.startTime !== p.startTime)) return false;
  let tids: number[];
  try {
    tids = readdirSync(`/proc/${p.pid}/task`).map(Number);
  } catch {
    return false; // gone meanwhile
  }
  return tids.some((tid) => !gone(readStat(p.pid, tid)?.state));
}

/**
 * Waits up to `budgetMs` until every one of `procs` has exited (gone, a zombie with no live thread, or its pid
 * reused); returns the pids still alive as those processes. Stops early, with those pids, when `signal` aborts.
 */
export async function waitExited(procs: readonly ProcessIdentity[], budgetMs: number, signal?: AbortSignal): Promise<number[]> {
  const until = Date.now() + budgetMs;
  for (;;) {
    const left = procs.filter(stillExiting).map((p) => p.pid);
    if (left.length === 0 || Date.now() > until || signal?.aborted) return left;
    await new Promise((r) => setTimeout(r, 10));
  }
}
