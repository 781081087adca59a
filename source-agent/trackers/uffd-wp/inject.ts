/**
 * Gives the agent a userfaultfd on another process's mm, by ptrace syscall injection (x86_64; uffd-lab §1):
 *
 *   seize + interrupt every thread -> save regs and signal mask of one thread -> block every signal but
 *   SIGTRAP -> run `userfaultfd(O_CLOEXEC|O_NONBLOCK|UFFD_USER_MODE_ONLY)` on a `syscall` instruction of the
 *   [vdso] -> pidfd_getfd the new fd into the agent -> run `close(fd)` in the target -> restore regs and mask
 *   -> detach every thread.
 *
 * Nothing is written to the target's memory, and the target ends with the same fd table: only the agent holds
 * the uffd. Every wait is bounded; whatever fails, the finish step restores what was changed and detaches.
 *
 * All of this is synchronous on purpose: ptrace requests must come from the thread that attached, and no
 * event-loop turn may run between a stop and its waitpid (libuv reaps its own children's stops otherwise).
 */
import { openSync, readSync, closeSync, readdirSync } from 'node:fs';
import { FerryError } from '../../../shared/errors/ferry-error.js';
import { SystemCallError } from '../../../shared/errors/ferry-error.js';
import { readMaps } from '../../../shared/kernel/proc-maps.js';
import { PAGE_SIZE } from '../../../shared/kernel/page-size.js';
import { readStat } from '../../../shared/kernel/proc-status.js';
import { O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY } from '../../../shared/kernel/userfaultfd.js';
import {
  PTRACE_EVENT_STOP,
  PtraceRequest as P,
  SyscallNr,
  WALL,
  WNOHANG,
  closeFd,
  pidfdGetfd,
  pidfdOpen,
  ptraceBuffer,
  ptraceNumbers,
  waitpid,
} from '../../../shared/native/ptrace.js';

export interface InjectOptions {
  /** Bound on the whole injection (stopping every thread included); default 2000 ms. */
  timeoutMs?: number;
}

export interface InjectResult {
  /** The uffd, in the agent (O_CLOEXEC). UFFDIO_API has not been called on it yet. */
  fd: number;
  /** Thread the calls were injected into. */
  tid: number;
  /** Threads stopped around the injection. */
  threads: number;
  /** Time from the first seize to the last detach. */
  stoppedMs: number;
  /** Signal-delivery-stops met while stopping threads; each signal was delivered on (uffd-lab pitfall 3). */
  signalsRedelivered: number;
}

const DEFAULT_TIMEOUT_MS = 2000;
const SIGTRAP = 5;
const STOP_SIGNALS = new Set([19 /* SIGSTOP */, 20 /* SIGTSTP */, 21 /* SIGTTIN */, 22 /* SIGTTOU */]);
/** struct user_regs_struct on x86_64: 27 u64, in this order. */
const REGS_BYTES = 27 * 8;
const Reg = { r10: 7, r8: 9, r9: 8, rax: 10, rdx: 12, rsi: 13, rdi: 14, origRax: 15, rip: 16 } as const;
const SIGSET_BYTES = 8;
/** A task signalled this many times while we try to stop it is too busy: give up (bounded anyway by time). */
const MAX_SIGNAL_STOPS = 64;

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

function injectionFailed(pid: number, detail: string, cause?: unknown): FerryError {
  return new FerryError('UFFD_INJECTION_FAILED', {
    phase: 'precopy',
    side: 'source',
    sourceState: 'running',
    message: `Could not create a userfaultfd in process ${pid}`,
    detail,
    cause,
  });
}

function taskGone(pid: number, cause?: unknown): FerryError {
  return new FerryError('TASK_EXITED', { phase: 'precopy', side: 'source', sourceState: 'gone', detail: `process ${pid} exited during injection`, cause });
}

function isErrno(e: unknown, name: string): boolean {
  return e instanceof SystemCallError && e.errnoName === name;
}

/** Refuses architectures whose injection is not written (regs layout, syscall instruction, restart cancel). */
export function assertInjectionArch(): void {
  if (process.arch !== 'x64') {
    throw new FerryError('PLATFORM_MISMATCH', {
      phase: 'precopy',
      side: 'source',
      sourceState: 'running',
      message: `uffd-wp tracking injects syscalls on x86_64 only, not on ${process.arch}`,
      hint: 'Use --tracker hash on this host.',
    });
  }
}

function threadIds(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number).filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}

/** Refuses a task stopped by job control: injecting into a group-stop would need PTRACE_LISTEN (pitfall 10). */
function assertNotStopped(pid: number): void {
  for (const tid of threadIds(pid)) {
    const st = readStat(pid, tid);
    if (st?.state === 'T') {
      throw new FerryError('TASK_STOPPED', {
        phase: 'precopy',
        side: 'source',
        sourceState: 'running',
        detail: `thread ${tid} of process ${pid} is in state T (job control) before the userfaultfd injection`,
      });
    }
  }
}

interface Seized {
  tid: number;
  stopped: boolean;
}

type StopKind = { kind: 'exited' } | { kind: 'stopped'; sig: number; event: number };

/** Polls waitpid(tid, __WALL|WNOHANG) until the thread changes state or the deadline passes. */
function waitStop(pid: number, tid: number, deadline: number): StopKind {
  for (;;) {
    let r;
    try {
      r = waitpid(tid, WALL | WNOHANG);
    } catch (e) {
      if (isErrno(e, 'ECHILD')) return { kind: 'exited' };
      throw e;
    }
    if (r.tid === tid) {
      const status = r.status;
      if ((status & 0xff) !== 0x7f) return { kind: 'exited' }; // exited or killed
      return { kind: 'stopped', sig: (status >> 8) & 0xff, event: (status >> 16) & 0xff };
    }
    if (performance.now() > deadline) throw injectionFailed(pid, `thread ${tid} did not stop within the injection timeout`);
    sleepMs(0.1);
  }
}

/**
 * Waits until a seized and interrupted thread sits in its PTRACE_INTERRUPT stop. A signal being delivered when
 * we seized shows up first as a signal-delivery-stop: we let it be delivered (PTRACE_CONT with the signal) and
 * the interrupt, still pending, stops the thread right after. Returns false when the thread exited.
 */
function waitInterruptStop(pid: number, tid: number, deadline: number, counts: { signals: number }): boolean {
  for (let n = 0; n < MAX_SIGNAL_STOPS; n++) {
    const s = waitStop(pid, tid, deadline);
    if (s.kind === 'exited') return false;
    if (s.event === PTRACE_EVENT_STOP) {
      if (STOP_SIGNALS.has(s.sig)) {
        throw new FerryError('TASK_STOPPED', {
          phase: 'precopy',
          side: 'source',
          sourceState: 'running',
          detail: `process ${pid} entered a job-control stop during the userfaultfd injection`,
        });
      }
      return true;
    }
    // A signal-delivery-stop (event 0), or an event we did not ask for: resume, delivering the signal if any.
    counts.signals += s.event === 0 && s.sig !== 0 ? 1 : 0;
    try {
      ptraceNumbers(P.CONT, tid, 0, s.event === 0 ? s.sig : 0);
    } catch (e) {
      if (isErrno(e, 'ESRCH')) return false;
      throw e;
    }
  }
  throw injectionFailed(pid, `thread ${tid} kept receiving signals while being stopped`);
}

/** Seizes and interrupts every thread, re-reading the thread list until it is stable. */
function seizeAll(pid: number, seized: Map<number, Seized>, deadline: number, counts: { signals: number }): void {
  for (;;) {
    const fresh = threadIds(pid).filter((t) => !seized.has(t));
    if (fresh.length === 0) break;
    for (const tid of fresh) {
      try {
        ptraceNumbers(P.SEIZE, tid, 0, 0);
      } catch (e) {
        if (isErrno(e, 'ESRCH')) continue; // the thread exited
        throw injectionFailed(pid, `PTRACE_SEIZE of thread ${tid}: ${(e as Error).message}`, e);
      }
      const entry: Seized = { tid, stopped: false };
      seized.set(tid, entry);
      try {
        ptraceNumbers(P.INTERRUPT, tid, 0, 0);
      } catch (e) {
        if (isErrno(e, 'ESRCH')) continue;
        throw e;
      }
    }
    // Stopping them before the next listing: a stopped thread cannot create new ones.
    for (const tid of fresh) {
      const entry = seized.get(tid);
      if (!entry) continue;
      if (waitInterruptStop(pid, tid, deadline, counts)) entry.stopped = true;
      else seized.delete(tid);
    }
  }
}

function readU64(regs: Buffer, index: number): bigint {
  return regs.readBigUInt64LE(index * 8);
}

function writeU64(regs: Buffer, index: number, value: bigint): void {
  regs.writeBigUInt64LE(BigInt.asUintN(64, value), index * 8);
}

/** Address of a `syscall` (0f 05) instruction in the task's [vdso] text (or any r-x mapping as a fallback). */
function findSyscallInstruction(pid: number): bigint {
  const maps = readMaps(pid);
  if (!maps) throw taskGone(pid);
  const candidates = [...maps.filter((v) => v.path === '[vdso]'), ...maps.filter((v) => v.perms.startsWith('r-x') && v.path !== '[vdso]')];
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const vma of candidates.slice(0, 8)) {
      const bytes = Math.min((vma.endPage - vma.startPage) * PAGE_SIZE, 1 << 20);
      const buf = Buffer.alloc(bytes);
      let got = 0;
      try {
        got = readSync(fd, buf, 0, bytes, vma.startPage * PAGE_SIZE);
      } catch {
        continue;
      }
      for (let i = 0; i + 1 < got; i++) {
        if (buf[i] === 0x0f && buf[i + 1] === 0x05) return BigInt(vma.startPage) * BigInt(PAGE_SIZE) + BigInt(i);
      }
    }
  } finally {
    closeSync(fd);
  }
  throw injectionFailed(pid, 'no syscall instruction found in [vdso] or any executable mapping');
}

/**
 * Runs one syscall in the stopped thread `tid`: regs from `saved`, rip at the syscall instruction, orig_rax = -1
 * (no restart logic on our regs, pitfall 2), one single-step. Returns the syscall's result (negative: -errno).
 */
function injectSyscall(
  pid: number,
  tid: number,
  saved: Buffer,
  insn: bigint,
  nr: number,
  args: readonly number[],
  deadline: number,
  held: { signal: number },
): bigint {
  const regs = Buffer.from(saved);
  writeU64(regs, Reg.rip, insn);
  writeU64(regs, Reg.rax, BigInt(nr));
  writeU64(regs, Reg.origRax, -1n);
  const argRegs = [Reg.rdi, Reg.rsi, Reg.rdx, Reg.r10, Reg.r8, Reg.r9];
  args.forEach((a, i) => writeU64(regs, argRegs[i]!, BigInt(a)));
  ptraceBuffer(P.SETREGS, tid, 0, regs);
  for (let n = 0; n < MAX_SIGNAL_STOPS; n++) {
    ptraceNumbers(P.SINGLESTEP, tid, 0, 0);
    const s = waitStop(pid, tid, deadline);
    if (s.kind === 'exited') throw taskGone(pid);
    // A PTRACE_INTERRUPT still pending comes back as an EVENT_STOP before the syscall runs: step again.
    if (s.event === PTRACE_EVENT_STOP) continue;
    if (s.sig !== SIGTRAP) {
      // Every signal but SIGTRAP is blocked, so this is SIGSTOP (SIGKILL never stops): hold it back and
      // deliver it at the detach, after the task's regs and mask are restored.
      held.signal = s.sig;
      continue;
    }
    const after = Buffer.alloc(REGS_BYTES);
    ptraceBuffer(P.GETREGS, tid, 0, after);
    const rip = readU64(after, Reg.rip);
    if (rip !== insn + 2n) throw injectionFailed(pid, `single-step stopped at 0x${rip.toString(16)}, expected 0x${(insn + 2n).toString(16)}`);
    return BigInt.asIntN(64, readU64(after, Reg.rax));
  }
  throw injectionFailed(pid, `syscall ${nr} did not complete within ${MAX_SIGNAL_STOPS} single-steps`);
}

/**
 * Creates a userfaultfd in process `pid` and moves it to the agent (see the file comment). Throws FerryError:
 * TASK_STOPPED for a job-control-stopped task, TASK_EXITED when it exits meanwhile, PLATFORM_MISMATCH off
 * x86_64, MEMORY_READ_FAILED (with the failing step in `detail`) for everything else. The task is left as it was.
 */
export function injectUserfaultfd(pid: number, options: InjectOptions = {}): InjectResult {
  assertInjectionArch();
  assertNotStopped(pid);
  const t0 = performance.now();
  const deadline = t0 + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const seized = new Map<number, Seized>();
  const counts = { signals: 0 };
  const held = { signal: 0 };
  let tid = 0;
  let saved: Buffer | undefined;
  let savedMask: Buffer | undefined;
  let targetFd = -1;
  let fd = -1;
  let firstError: unknown;
  try {
    seizeAll(pid, seized, deadline, counts);
    if (seized.size === 0) throw taskGone(pid);
    // The main thread unless it is a zombie (it called pthread_exit while others run).
    const leader = readStat(pid)?.state;
    tid = seized.has(pid) && leader !== 'Z' ? pid : [...seized.keys()].find((t) => t !== pid) ?? pid;
    const regs = Buffer.alloc(REGS_BYTES);
    ptraceBuffer(P.GETREGS, tid, 0, regs);
    saved = regs;
    const mask = Buffer.alloc(SIGSET_BYTES);
    ptraceBuffer(P.GETSIGMASK, tid, SIGSET_BYTES, mask);
    savedMask = mask;
    // Block everything but SIGTRAP: a SIGTRAP forced while blocked resets the task's handler (pitfall 1).
    const blockAll = Buffer.alloc(SIGSET_BYTES, 0xff);
    blockAll[0] = 0xff & ~(1 << (SIGTRAP - 1));
    ptraceBuffer(P.SETSIGMASK, tid, SIGSET_BYTES, blockAll);
    const insn = findSyscallInstruction(pid);
    const flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
    const created = injectSyscall(pid, tid, saved, insn, SyscallNr.userfaultfd, [flags], deadline, held);
    if (created < 0n) throw injectionFailed(pid, `userfaultfd() in the task returned errno ${-created}`);
    targetFd = Number(created);
    const pidfd = pidfdOpen(pid);
    try {
      fd = pidfdGetfd(pidfd, targetFd);
    } finally {
      closeFd(pidfd);
    }
  } catch (e) {
    firstError = e;
  } finally {
    // The finish step: always runs, runs every undo, keeps the first error.
    const undo = (f: () => void): void => {
      try {
        f();
      } catch (e) {
        if (!isErrno(e, 'ESRCH')) firstError ??= e;
      }
    };
    if (targetFd >= 0 && saved) {
      const savedRegs = saved;
      undo(() => {
        const r = injectSyscall(pid, tid, savedRegs, findSyscallInstruction(pid), SyscallNr.close, [targetFd], deadline + 1000, held);
        if (r < 0n) throw injectionFailed(pid, `close(${targetFd}) in the task returned errno ${-r}`);
      });
    }
    if (saved) {
      const savedRegs = saved;
      undo(() => ptraceBuffer(P.SETREGS, tid, 0, savedRegs));
    }
    if (savedMask) {
      const m = savedMask;
      undo(() => ptraceBuffer(P.SETSIGMASK, tid, SIGSET_BYTES, m));
    }
    for (const entry of seized.values()) {
      if (!entry.stopped) {
        // Seized but never seen stopped (timeout): give it a last chance to reach the interrupt stop.
        undo(() => {
          if (waitInterruptStop(pid, entry.tid, performance.now() + 500, counts)) entry.stopped = true;
        });
      }
      undo(() => ptraceNumbers(P.DETACH, entry.tid, 0, entry.tid === tid ? held.signal : 0));
    }
  }
  if (firstError !== undefined) {
    if (fd >= 0) {
      try {
        closeFd(fd);
      } catch {
        /* the first error is what matters */
      }
    }
    if (firstError instanceof FerryError) throw firstError;
    if (isErrno(firstError, 'ESRCH') && !readStat(pid)) throw taskGone(pid, firstError);
    throw injectionFailed(pid, firstError instanceof Error ? firstError.message : JSON.stringify(firstError), firstError);
  }
  return { fd, tid, threads: seized.size, stoppedMs: performance.now() - t0, signalsRedelivered: counts.signals };
}
