/**
 * Waiting on /proc for tasks to reach a state: every thread of a tree stopped (T or t), or processes gone
 * (no longer there, or zombies waiting to be reaped). Polled, with a budget: the kernel has no event for either.
 */
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
