/**
 * The second (and last) file allowed to import koffi, beside libc.ts: the calls that syscall injection and the
 * userfaultfd tracker need: ptrace, waitpid, raw syscalls that glibc 2.36 does not wrap (userfaultfd,
 * pidfd_open, pidfd_getfd), close, and mmap/munmap for the probe's scratch mapping.
 *
 * Every wrapper throws SystemCallError with the errno read right after the call. ptrace requests must come from
 * the thread that attached, so these are only ever called synchronously from the main thread.
 */
import koffi from 'koffi';
import { SystemCallError } from '../errors/ferry-error.js';
import { errnoName } from './libc.js';

const libc = koffi.load('libc.so.6');

// ptrace and syscall are variadic in glibc: koffi takes the type of each extra argument at the call.
const ptraceFn = libc.func('long ptrace(int request, ...)');
const syscallFn = libc.func('long syscall(long number, ...)');
const waitpidFn = libc.func('int waitpid(int pid, void *status, int options)');
const closeFn = libc.func('int close(int fd)');
const mmapFn = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)');
const munmapFn = libc.func('int munmap(void *addr, size_t length)');

function fail(syscall: string, context?: string): never {
  const errno = koffi.errno();
  throw new SystemCallError(syscall, errno, errnoName(errno), context);
}

/** ptrace requests (asm-generic and x86_64 values, checked against glibc's sys/ptrace.h). */
export const PtraceRequest = {
  SINGLESTEP: 9,
  GETREGS: 12,
  SETREGS: 13,
  CONT: 7,
  DETACH: 17,
  GETSIGINFO: 0x4202,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
} as const;

/** waitpid options and the ptrace event number of a group-stop or PTRACE_INTERRUPT stop. */
export const WNOHANG = 1;
export const WALL = 0x40000000;
export const PTRACE_EVENT_STOP = 128;

/** x86_64 syscall numbers. */
export const SyscallNr = {
  close: 3,
  userfaultfd: 323,
  pidfdOpen: 434,
  pidfdGetfd: 438,
} as const;

/** ptrace(request, tid, addr, data) where addr and data are numbers (pid options, signal numbers, sizes). */
export function ptraceNumbers(request: number, tid: number, addr: number, data: number): number {
  const r = ptraceFn(request, 'int', tid, 'long', addr, 'long', data) as number;
  if (r < 0) fail('ptrace', `request 0x${request.toString(16)} tid ${tid}`);
  return r;
}

/** ptrace(request, tid, addr, buf): data points to `buf` (regs, sigset, siginfo). */
export function ptraceBuffer(request: number, tid: number, addr: number, buf: Uint8Array): number {
  const r = ptraceFn(request, 'int', tid, 'long', addr, 'void *', buf) as number;
  if (r < 0) fail('ptrace', `request 0x${request.toString(16)} tid ${tid}`);
  return r;
}

export interface WaitResult {
  /** The tid that changed state; 0 when WNOHANG found nothing. */
  tid: number;
  status: number;
}

const statusBuf = Buffer.alloc(4);

/** waitpid(tid, &status, options). */
export function waitpid(tid: number, options: number): WaitResult {
  const r = waitpidFn(tid, statusBuf, options) as number;
  if (r < 0) fail('waitpid', `tid ${tid}`);
  return { tid: r, status: statusBuf.readInt32LE(0) };
}

/** A raw syscall with integer arguments; returns its non-negative result. */
export function rawSyscall(nr: number, args: readonly number[], context?: string): number {
  const typed: unknown[] = [];
  for (const a of args) typed.push('long', a);
  const r = syscallFn(nr, ...typed) as number;
  if (r < 0) fail(`syscall ${nr}`, context);
  return r;
}

export function pidfdOpen(pid: number): number {
  return rawSyscall(SyscallNr.pidfdOpen, [pid, 0], `pidfd_open ${pid}`);
}

/** pidfd_getfd(2): a copy of the target's fd `targetFd` in this process (O_CLOEXEC). */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return rawSyscall(SyscallNr.pidfdGetfd, [pidfd, targetFd, 0], `pidfd_getfd fd ${targetFd}`);
}

/** userfaultfd(2) in this process (the probe uses it; targets get theirs by injection). */
export function userfaultfd(flags: number): number {
  return rawSyscall(SyscallNr.userfaultfd, [flags], 'userfaultfd');
}

export function closeFd(fd: number): void {
  if ((closeFn(fd) as number) < 0) fail('close', `fd ${fd}`);
}

type AsyncClose = (fd: number, done: (err: unknown, result: number) => void) => void;

/**
 * close(2) on koffi's worker thread. Closing an AF_PACKET socket waits for an RCU grace period
 * (synchronize_net: 14-21 ms measured here); on node's main thread that stalls every stream of the agent, and
 * a dest's Commit answer, for as long. The errno of another thread is not ours to read: a failure says only that.
 */
export function closeFdAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    (closeFn.async as AsyncClose)(fd, (err, result) => {
      if (err) reject(err instanceof Error ? err : new Error('close failed on the worker thread'));
      else if (result < 0) reject(new SystemCallError('close', 0, 'unknown', `fd ${fd}`));
      else resolve();
    });
  });
}

/** An anonymous private read-write mapping, for the probe. `view` is its memory; unmap() frees it. */
export interface ScratchMapping {
  readonly address: bigint;
  readonly view: Uint8Array;
  unmap(): void;
}

const PROT_READ_WRITE = 0x3;
const MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20;

export function mapScratch(bytes: number): ScratchMapping {
  const ptr = mmapFn(null, bytes, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0);
  const address = koffi.address(ptr);
  if (address === 0xffffffffffffffffn) fail('mmap', `${bytes} bytes`);
  const view = new Uint8Array(koffi.view(ptr, bytes));
  let mapped = true;
  return {
    address,
    view,
    unmap(): void {
      if (!mapped) return;
      mapped = false;
      if ((munmapFn(ptr, bytes) as number) < 0) fail('munmap');
    },
  };
}
