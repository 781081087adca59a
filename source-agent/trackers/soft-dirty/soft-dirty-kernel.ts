/**
 * What the soft-dirty tracker asks of the kernel beyond the common port (../tracker-kernel.ts): hold the tree
 * still, read presence and soft-dirty, clear the bits. The real port is pause-processes.ts and
 * soft-dirty-pagemap.ts; test/fakes/fake-kernel.ts fakes it for the round logic's unit tests.
 */
import type { PagemapMethod } from '../../../shared/kernel/pagemap.js';
import type { Vma } from '../../../shared/kernel/proc-maps.js';
import { realTrackerKernel, type TrackerKernel } from '../tracker-kernel.js';
import { pauseProcesses, type PausedProcesses } from './pause-processes.js';
import { SoftDirtyPagemap, clearSoftDirty, type SoftDirtyScan } from './soft-dirty-pagemap.js';

/** An open pagemap for soft-dirty queries, one per process and round. */
export interface SoftDirtyReader {
  /** Presence and soft-dirty of `vmas` (sorted as maps lists them). */
  scan(vmas: readonly Vma[]): SoftDirtyScan;
  close(): void;
}

export interface SoftDirtyKernel extends TrackerKernel {
  /** Stops the processes that are running (SIGSTOP) until resume(). */
  pause(pids: readonly number[]): PausedProcesses;
  /** Throws SystemCallError (ENOENT) when the process is gone. */
  openSoftDirty(pid: number, method: PagemapMethod | undefined): SoftDirtyReader;
  /** Starts a new soft-dirty period; false when the process is gone. */
  clearSoftDirty(pid: number): boolean;
}

export function realSoftDirtyKernel(): SoftDirtyKernel {
  return {
    ...realTrackerKernel(),
    pause: (pids) => pauseProcesses(pids),
    openSoftDirty: (pid, method) => new SoftDirtyPagemap(pid, method),
    clearSoftDirty: (pid) => clearSoftDirty(pid),
  };
}
