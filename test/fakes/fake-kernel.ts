/**
 * A fake of the trackers' kernel ports (source-agent/trackers/tracker-kernel.ts and the soft-dirty and uffd-wp
 * extensions): small in-memory processes with their areas, present pages and bytes, soft-dirty bits, and uffd-wp
 * registrations and write-protect bits. It answers as the kernel does where the round logic can tell: a gone
 * process is ESRCH on reads and ENOENT on opens, a page outside every readable area is unreadable, a scan of a
 * range that is not fully registered is EPERM, a uffd of a replaced mm (exec) is ESRCH.
 *
 * Not modelled: swap, huge pages, page cache, threads, and the ptrace injection itself (injectUffd just hands
 * out an fd). test/support/tracker-contract.ts runs the same kinds of scenario against the real kernel.
 */
import { constants } from 'node:os';
import { FerryError, SystemCallError } from '../../shared/errors/ferry-error.js';
import { appendRun, emptyRuns, type PageRuns, type PagemapMethod } from '../../shared/kernel/pagemap.js';
import type { Vma } from '../../shared/kernel/proc-maps.js';
import type { PageChunk } from '../../shared/kernel/process-memory.js';
import type { PausedProcesses } from '../../source-agent/trackers/soft-dirty/pause-processes.js';
import type { SoftDirtyKernel, SoftDirtyReader } from '../../source-agent/trackers/soft-dirty/soft-dirty-kernel.js';
import type { PresenceReader, TaskStat } from '../../source-agent/trackers/tracker-kernel.js';
import type { UffdWpKernel, WrittenScanner } from '../../source-agent/trackers/uffd-wp/uffd-wp-kernel.js';

type ErrnoName = keyof typeof constants.errno;

function sysError(syscall: string, name: ErrnoName): SystemCallError {
  return new SystemCallError(syscall, constants.errno[name], name);
}

function runsOf(pages: Iterable<number>): PageRuns {
  const out = emptyRuns();
  for (const p of [...pages].sort((a, b) => a - b)) appendRun(out, p, 1);
  return out;
}

function* pagesOf(runs: PageRuns): Generator<number> {
  for (let i = 0; i < runs.starts.length; i++) for (let k = 0; k < runs.counts[i]!; k++) yield runs.starts[i]! + k;
}

export interface FakeAreaOptions {
  perms?: string;
  path?: string;
  /** UFFDIO_REGISTER of this area fails so. */
  refuseUffd?: ErrnoName;
}

interface FakeArea extends Vma {
  refuseUffd: ErrnoName | undefined;
}

export class FakeProcess {
  state = 'S';
  gone = false;
  /** Bumped by exec: a uffd or pagemap opened before refers to the old memory. */
  mm = 0;
  private readonly areas: FakeArea[] = [];
  /** Present pages and their bytes. */
  readonly pages = new Map<number, Buffer>();
  /** Pages written since the last clear_refs. */
  readonly softDirty = new Set<number>();
  /** Pages registered with the process's uffd, and those write-protected by a scan and not written since. */
  readonly registered = new Set<number>();
  readonly writeProtected = new Set<number>();
  /** Every page read from the process, in order. */
  readonly reads: number[] = [];
  /** Whether the process was held still at each clear_refs. */
  readonly clearedWhilePaused: boolean[] = [];
  private readFailure: { errno: ErrnoName; afterChunks: number } | undefined;
  private version = 0;

  constructor(
    private readonly pageSize: number,
    readonly pid: number,
    readonly startTime: number,
  ) {}

  /** mmap: a new area of `count` pages at `startPage`, nothing present. */
  map(startPage: number, count: number, options: FakeAreaOptions = {}): this {
    const area: FakeArea = {
      startPage,
      endPage: startPage + count,
      perms: options.perms ?? 'rw-p',
      offset: 0,
      dev: '00:00',
      inode: 0,
      path: options.path ?? '',
      refuseUffd: options.refuseUffd,
    };
    if (this.areas.some((a) => a.startPage < area.endPage && area.startPage < a.endPage)) throw new Error('areas overlap');
    this.areas.push(area);
    this.areas.sort((a, b) => a.startPage - b.startPage);
    return this;
  }

  /** The process writes `count` pages from `first`: new bytes (all zero when `zero`), soft-dirty, not write-protected. */
  write(first: number, count = 1, zero = false): this {
    for (let p = first; p < first + count; p++) {
      if (!this.areaOf(p)) throw new Error(`page ${p} is not mapped`);
      this.store(p, zero ? Buffer.alloc(this.pageSize) : this.freshBytes(p));
    }
    return this;
  }

  /** The process writes the same bytes again: soft-dirty and written, but the content (and hash) is unchanged. */
  rewrite(page: number): this {
    const bytes = this.pages.get(page);
    if (!bytes) throw new Error(`page ${page} is not present`);
    this.store(page, bytes);
    return this;
  }

  /** mremap growing the area that starts at `startPage` by `extra` pages. */
  grow(startPage: number, extra: number): this {
    this.area(startPage).endPage += extra;
    return this;
  }

  /** mprotect of the whole area that starts at `startPage`; the pages stay as they are. */
  protect(startPage: number, perms: string): this {
    this.area(startPage).perms = perms;
    return this;
  }

  /** munmap of the whole area that starts at `startPage`. */
  unmap(startPage: number): this {
    const area = this.area(startPage);
    this.areas.splice(this.areas.indexOf(area), 1);
    for (let p = area.startPage; p < area.endPage; p++) {
      this.pages.delete(p);
      this.softDirty.delete(p);
      this.registered.delete(p);
      this.writeProtected.delete(p);
    }
    return this;
  }

  /** execve: new, empty memory. */
  exec(): this {
    this.mm++;
    this.areas.length = 0;
    this.pages.clear();
    this.softDirty.clear();
    this.registered.clear();
    this.writeProtected.clear();
    return this;
  }

  exit(): void {
    this.gone = true;
  }

  /** The next read of the process's memory fails with `errno` after `afterChunks` chunks (ESRCH: it exits then). */
  failRead(errno: ErrnoName, afterChunks = 0): void {
    this.readFailure = { errno, afterChunks };
  }

  presentPages(): number[] {
    return [...this.pages.keys()].sort((a, b) => a - b);
  }

  vmas(): Vma[] {
    return this.areas.map(({ refuseUffd: _, ...vma }) => ({ ...vma }));
  }

  areaOf(page: number): FakeArea | undefined {
    return this.areas.find((a) => a.startPage <= page && page < a.endPage);
  }

  /** Called once per chunk read: throws the failure set by failRead() when its turn comes. */
  checkRead(): void {
    if (this.gone) throw sysError('process_vm_readv', 'ESRCH');
    const f = this.readFailure;
    if (!f) return;
    if (f.afterChunks-- > 0) return;
    this.readFailure = undefined;
    if (f.errno === 'ESRCH') this.exit();
    throw sysError('process_vm_readv', f.errno);
  }

  private area(startPage: number): FakeArea {
    const area = this.areas.find((a) => a.startPage === startPage);
    if (!area) throw new Error(`no area starts at page ${startPage}`);
    return area;
  }

  private store(page: number, bytes: Buffer): void {
    this.pages.set(page, bytes);
    this.softDirty.add(page);
    this.writeProtected.delete(page);
  }

  private freshBytes(page: number): Buffer {
    const b = Buffer.alloc(this.pageSize, (page * 7 + ++this.version) & 0xff);
    b.writeDoubleLE(page, 0);
    b.writeUInt32LE(this.version, 8);
    return b;
  }
}

export class FakeKernel implements SoftDirtyKernel, UffdWpKernel {
  private readonly processes = new Map<number, FakeProcess>();
  private readonly uffds = new Map<number, { pid: number; mm: number }>();
  private nextFd = 100;
  private nextStartTime = 1000;
  /** Chunk buffer reused like the real reader's: a page not copied before the next chunk would be overwritten. */
  private readonly buffer: Buffer;
  injections = 0;

  constructor(
    readonly pageSize = 4096,
    readonly chunkPages = 16,
  ) {
    this.buffer = Buffer.alloc(chunkPages * pageSize);
  }

  spawn(pid: number): FakeProcess {
    const p = new FakeProcess(this.pageSize, pid, this.nextStartTime++);
    this.processes.set(pid, p);
    return p;
  }

  /** The uffds the agent holds for process `pid`. */
  openUffds(pid: number): number[] {
    return [...this.uffds].filter(([, u]) => u.pid === pid).map(([fd]) => fd);
  }

  private live(pid: number): FakeProcess | undefined {
    const p = this.processes.get(pid);
    return p && !p.gone ? p : undefined;
  }

  /** The process whose /proc/PID/pagemap is opened: ENOENT once it is gone. */
  private opened(pid: number): FakeProcess {
    const p = this.live(pid);
    if (!p) throw sysError('open', 'ENOENT');
    return p;
  }

  private uffd(fd: number): { process: FakeProcess | undefined; mm: number } {
    const u = this.uffds.get(fd);
    if (!u) throw sysError('ioctl', 'EBADF');
    return { process: this.live(u.pid), mm: u.mm };
  }

  stat(pid: number): TaskStat | undefined {
    const p = this.live(pid);
    return p && { state: p.state, startTime: p.startTime };
  }

  maps(pid: number): Vma[] | undefined {
    return this.live(pid)?.vmas();
  }

  openPresence(pid: number): PresenceReader {
    const p = this.opened(pid);
    return {
      presentRuns: (vmas) => {
        if (p.gone) throw sysError('pread', 'ESRCH');
        return runsOf(p.presentPages().filter((page) => vmas.some((v) => v.startPage <= page && page < v.endPage)));
      },
      close: () => undefined,
    };
  }

  *readPages(pid: number, runs: PageRuns, signal: AbortSignal): Generator<PageChunk> {
    const p = this.processes.get(pid);
    const all = [...pagesOf(runs)];
    for (let i = 0; i < all.length; i += this.chunkPages) {
      signal.throwIfAborted();
      if (!p) throw sysError('process_vm_readv', 'ESRCH');
      p.checkRead();
      const planned = all.slice(i, i + this.chunkPages);
      const read: number[] = [];
      const unreadable: number[] = [];
      for (const page of planned) {
        // The real port reads areas without PROT_READ through /proc/PID/mem (ProcessMemoryReader): only an
        // unmapped page cannot be read.
        if (p.areaOf(page) === undefined) {
          unreadable.push(page);
          continue;
        }
        // A mapped page that is not present reads as zeros.
        const bytes = p.pages.get(page);
        if (bytes) bytes.copy(this.buffer, read.length * this.pageSize);
        else this.buffer.fill(0, read.length * this.pageSize, (read.length + 1) * this.pageSize);
        read.push(page);
      }
      p.reads.push(...read);
      yield { data: this.buffer.subarray(0, read.length * this.pageSize), pages: Float64Array.from(read), unreadable };
    }
  }

  pause(pids: readonly number[]): PausedProcesses {
    const stopped = pids.map((pid) => this.live(pid)).filter((p): p is FakeProcess => p !== undefined && p.state !== 'T');
    for (const p of stopped) p.state = 'T';
    let resumed = false;
    return {
      stopped: stopped.map((p) => p.pid),
      late: [],
      stopMs: 0,
      resume: () => {
        if (resumed) return;
        resumed = true;
        for (const p of stopped) p.state = 'S';
      },
    };
  }

  openSoftDirty(pid: number, method: PagemapMethod | undefined): SoftDirtyReader {
    const p = this.opened(pid);
    return {
      scan: (vmas) => {
        if (p.gone) throw sysError('pread', 'ESRCH');
        const present = p.presentPages().filter((page) => vmas.some((v) => v.startPage <= page && page < v.endPage));
        return { present: runsOf(present), dirty: runsOf(present.filter((page) => p.softDirty.has(page))), method: method ?? 'scan' };
      },
      close: () => undefined,
    };
  }

  clearSoftDirty(pid: number): boolean {
    const p = this.live(pid);
    if (!p) return false;
    p.clearedWhilePaused.push(p.state === 'T');
    p.softDirty.clear();
    return true;
  }

  injectUffd(pid: number): { fd: number; stoppedMs: number } {
    const p = this.live(pid);
    if (!p) throw new FerryError('TASK_EXITED', { phase: 'precopy', side: 'source', sourceState: 'gone', detail: `process ${pid} exited during injection` });
    if (p.state === 'T') throw new FerryError('TASK_STOPPED', { phase: 'precopy', side: 'source', sourceState: 'running', detail: `process ${pid} is stopped` });
    this.injections++;
    const fd = this.nextFd++;
    this.uffds.set(fd, { pid, mm: p.mm });
    return { fd, stoppedMs: 0 };
  }

  enableWpAsync(fd: number): void {
    this.uffd(fd);
  }

  openWrittenScanner(pid: number): WrittenScanner {
    const p = this.opened(pid);
    const mm = p.mm;
    return {
      scan: (start, end, out) => {
        if (p.gone || p.mm !== mm) throw sysError('ioctl', 'ESRCH');
        for (let page = start; page < end; page++) if (!p.registered.has(page)) throw sysError('ioctl', 'EPERM');
        // Written: every page of the range not write-protected since its last write (present or not), as with
        // a newly registered range; the scan protects them all again.
        for (let page = start; page < end; page++) {
          if (!p.writeProtected.has(page)) appendRun(out, page, 1);
          p.writeProtected.add(page);
        }
      },
      close: () => undefined,
    };
  }

  registerWp(fd: number, startPage: number, endPage: number): void {
    const p = this.mmOf(fd);
    const area = p.areaOf(startPage);
    if (!area || area.endPage < endPage || p.areaOf(endPage - 1) !== area) throw sysError('ioctl', 'EINVAL');
    if (area.refuseUffd) throw sysError('ioctl', area.refuseUffd);
    for (let page = startPage; page < endPage; page++) p.registered.add(page);
  }

  unregister(fd: number, startPage: number, endPage: number): void {
    const p = this.mmOf(fd);
    for (let page = startPage; page < endPage; page++) {
      p.registered.delete(page);
      p.writeProtected.delete(page);
    }
  }

  closeFd(fd: number): void {
    this.uffd(fd);
    this.uffds.delete(fd);
  }

  /** The process whose mm the uffd acts on; ESRCH once that mm is gone (exit or exec). */
  private mmOf(fd: number): FakeProcess {
    const { process, mm } = this.uffd(fd);
    if (!process || process.mm !== mm) throw sysError('ioctl', 'ESRCH');
    return process;
  }
}
