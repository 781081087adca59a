/**
 * What the uffd-wp tracker asks of the kernel beyond the common port (../tracker-kernel.ts): a userfaultfd of
 * the process (injected by ptrace, inject.ts), its registrations, and write-protecting scans. The port stops at
 * "give me a uffd of this process": test/fakes/fake-kernel.ts fakes the round logic above it, the injection
 * itself is tested against real tasks (test/integration/uffd-wp-tracker.test.ts).
 */
import type { PageRuns } from '../../../shared/kernel/pagemap.js';
import { WrittenPagesScanner } from '../../../shared/kernel/pagemap-written.js';
import { uffdApi, uffdRegisterWp, uffdUnregister } from '../../../shared/kernel/userfaultfd.js';
import { closeFd } from '../../../shared/native/ptrace.js';
import { realTrackerKernel, type TrackerKernel } from '../tracker-kernel.js';
import { injectUserfaultfd, type InjectOptions } from './inject.js';
import { wantedUffdFeatures } from './probe.js';

/** An open pagemap for write-protecting scans, one per process. */
export interface WrittenScanner {
  /** Appends the written pages of [startPage, endPage) to `out` and write-protects them again; EPERM when part of it is not registered. */
  scan(startPage: number, endPage: number, out: PageRuns): void;
  close(): void;
}

export interface UffdWpKernel extends TrackerKernel {
  /**
   * A userfaultfd of the process's mm, held by the agent. Throws FerryError TASK_STOPPED (job control),
   * TASK_EXITED (gone meanwhile) or MEMORY_READ_FAILED; the process is left as it was.
   */
  injectUffd(pid: number): { fd: number; stoppedMs: number };
  /** UFFDIO_API asking for async write-protect. */
  enableWpAsync(fd: number): void;
  openWrittenScanner(pid: number): WrittenScanner;
  /** UFFDIO_REGISTER(WP) of [startPage, endPage); SystemCallError ESRCH when the uffd's mm is gone (exec). */
  registerWp(fd: number, startPage: number, endPage: number): void;
  unregister(fd: number, startPage: number, endPage: number): void;
  closeFd(fd: number): void;
}

export function realUffdWpKernel(injectOptions: InjectOptions = {}): UffdWpKernel {
  return {
    ...realTrackerKernel(),
    injectUffd: (pid) => injectUserfaultfd(pid, injectOptions),
    enableWpAsync: (fd) => {
      uffdApi(fd, wantedUffdFeatures());
    },
    openWrittenScanner: (pid) => new WrittenPagesScanner(pid),
    registerWp: (fd, start, end) => uffdRegisterWp(fd, start, end),
    unregister: (fd, start, end) => uffdUnregister(fd, start, end),
    closeFd: (fd) => closeFd(fd),
  };
}
