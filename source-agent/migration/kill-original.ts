/**
 * Killing the original once the copy runs on the dest, and waiting until it is really gone: `migrate` returns
 * only then (ZDTM maps06, many file mappings, was still exiting when migrate returned 0). The wait is bounded: a
 * process that does not go in ORIGINAL_EXIT_WAIT_MS (stuck in D state, say) is named in a warning and in the
 * summary (originalLeft), and the migration still succeeds: the copy runs, and nothing can resume the original.
 */
import type { ProcessIdentity } from '../../shared/kernel/process-wait.js';
import type { MigrationContext } from './migration-context.js';

/** Far above the seconds a task with tens of thousands of mappings takes to unmap them. */
export const ORIGINAL_EXIT_WAIT_MS = 30_000;

export interface OriginalExit {
  /** From the SIGKILL to the last process gone (or to the end of the wait). */
  exitMs: number;
  /** Pids of the original still alive at the end of the wait: none normally. */
  left: number[];
}

export async function killOriginal(ctx: Pick<MigrationContext, 'host' | 'log' | 'signal'>, rootPid: number, budgetMs = ORIGINAL_EXIT_WAIT_MS): Promise<OriginalExit> {
  const { host, log } = ctx;
  // Taken before the kill, while the tree is frozen: a pid names the original only while its start time matches.
  const procs: ProcessIdentity[] = host.tree(rootPid).map((t) => ({ pid: t.hostPid, startTime: host.startTime(t.hostPid) }));
  if (!procs.some((p) => p.pid === rootPid)) procs.push({ pid: rootPid, startTime: host.startTime(rootPid) });
  const t0 = performance.now();
  host.signalTree(rootPid, 'SIGKILL');
  const left = await host.waitExited(procs, budgetMs, ctx.signal);
  const exitMs = performance.now() - t0;
  if (left.length > 0) {
    log.warn('the original is not gone after SIGKILL; the copy runs on the dest', { left, waitedMs: Math.round(exitMs), hint: `look at /proc/${left[0]}/stack (a task in D state exits once its I/O ends)` });
  } else log.info('the original is gone', { processes: procs.length, exitMs: Math.round(exitMs) });
  return { exitMs, left };
}
