/**
 * Signals for a whole task tree. Ferry-run tasks are one process group, but a tree may hold several, so
 * the group is signalled first and then every process found under the root.
 */
import { readProcessTree } from './process-tree.js';
import { waitGone } from './process-wait.js';

export type TreeSignal = 'SIGCONT' | 'SIGKILL' | 'SIGSTOP';

/** The host pids of the tree, the root first; just the root when it cannot be walked (gone, or unreadable). */
export function treePids(rootPid: number): number[] {
  try {
    return readProcessTree(rootPid)?.processes.map((t) => t.hostPid) ?? [rootPid];
  } catch {
    return [rootPid];
  }
}

/** Signals one process; false when it is gone. */
export function signalProcess(pid: number, signal: TreeSignal): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Returns the number of processes signalled; a tree that is already gone yields 0, not an error. */
export function signalTree(rootPid: number, signal: TreeSignal): number {
  const pids = treePids(rootPid);
  try {
    process.kill(-rootPid, signal);
  } catch {
    /* the root may not lead a process group; the per-process signals below still reach every task */
  }
  return pids.filter((pid) => signalProcess(pid, signal)).length;
}

/**
 * SIGKILLs the root and every process found under it, each by pid (not the group), and waits up to
 * `budgetMs` until they are gone or zombies; returns their pids.
 */
export async function killTreeAndWait(rootPid: number, budgetMs: number): Promise<number[]> {
  const pids = treePids(rootPid);
  for (const p of pids) signalProcess(p, 'SIGKILL');
  await waitGone(pids, budgetMs);
  return pids;
}
