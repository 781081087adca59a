/**
 * Signals for a whole task tree. Ferry-run tasks are one process group, but a tree may hold several, so
 * the group is signalled first and then every process found under the root.
 */
import { readProcessTree } from './process-tree.js';

export type TreeSignal = 'SIGCONT' | 'SIGKILL' | 'SIGSTOP';

/** Returns the number of processes signalled; a tree that is already gone yields 0, not an error. */
export function signalTree(rootPid: number, signal: TreeSignal): number {
  let pids: number[] = [];
  try {
    pids = readProcessTree(rootPid)?.processes.map((t) => t.hostPid) ?? [rootPid];
  } catch {
    pids = [rootPid];
  }
  try {
    process.kill(-rootPid, signal);
  } catch {
    /* the root may not lead a process group; the per-process signals below still reach every task */
  }
  let n = 0;
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
      n++;
    } catch {
      /* exited meanwhile */
    }
  }
  return n;
}
