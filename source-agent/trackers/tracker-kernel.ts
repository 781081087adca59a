/**
 * What the trackers' round logic asks of the kernel about a task, as a port: the real one reads /proc and calls
 * process_vm_readv; test/fakes/fake-kernel.ts is a small in-memory process, so that the round logic is unit
 * tested without root (the tracker contract keeps running against the real kernel). The soft-dirty and uffd-wp
 * trackers extend it with their own kernel interface (soft-dirty-kernel.ts, uffd-wp-kernel.ts).
 */
import { PagemapReader, type PageRuns } from '../../shared/kernel/pagemap.js';
import { readMaps, type Vma } from '../../shared/kernel/proc-maps.js';
import { ProcessMemoryReader, type PageChunk } from '../../shared/kernel/process-memory.js';
import { readStat } from '../../shared/kernel/proc-status.js';

export interface TaskStat {
  /** One letter as in /proc/PID/stat ('Z' zombie, 'X' dead, 'T' stopped, ...). */
  state: string;
  /** With the pid, names a process across pid reuse. */
  startTime: number;
}

/** An open pagemap for presence queries, one per process. */
export interface PresenceReader {
  /** Pages of `vmas` (sorted as maps lists them) that hold dumpable data. */
  presentRuns(vmas: readonly Vma[]): PageRuns;
  close(): void;
}

export interface TrackerKernel {
  /** /proc/PID/stat; undefined once the process is gone. */
  stat(pid: number): TaskStat | undefined;
  /** /proc/PID/maps; undefined once the process is gone. */
  maps(pid: number): Vma[] | undefined;
  /** Throws SystemCallError when the pagemap cannot be opened (ENOENT: the process is gone). */
  openPresence(pid: number): PresenceReader;
  /**
   * The pages of `runs`, a chunk at a time; each chunk is overwritten by the next. Pages that vanished are listed
   * in `unreadable`; a failure of the task as a whole (ESRCH gone, EPERM) throws SystemCallError.
   */
  readPages(pid: number, runs: PageRuns, signal: AbortSignal): Iterable<PageChunk>;
}

/** The real kernel: one chunk buffer per tracker (trackers of concurrent migrations never share one). */
export function realTrackerKernel(): TrackerKernel {
  const reader = new ProcessMemoryReader();
  return {
    stat: (pid) => readStat(pid),
    maps: (pid) => readMaps(pid),
    openPresence: (pid) => new PagemapReader(pid),
    readPages: (pid, runs, signal) => reader.chunks(pid, runs, signal),
  };
}
