/**
 * The libc calls Ferry makes through koffi. This is the only file that imports koffi: every other module
 * sees typed functions that throw SystemCallError with the errno read right after the call.
 *
 * Pointers are passed as Buffers (`void *`). Structures that hold pointers (iovec, pm_scan_arg) are written
 * by the caller as little-endian 32-bit lo/hi words, so the hot path never builds a BigInt (perf-lab §1).
 */
import { constants } from 'node:os';
import koffi from 'koffi';
import { SystemCallError } from '../errors/ferry-error.js';

const libc = koffi.load('libc.so.6');

const processVmReadvFn = libc.func(
  'long process_vm_readv(int pid, void *local_iov, unsigned long liovcnt, void *remote_iov, unsigned long riovcnt, unsigned long flags)',
);
// ioctl is variadic in glibc; koffi needs the type of each extra argument at the call.
const ioctlFn = libc.func('int ioctl(int fd, unsigned long request, ...)');
// optlen is a socklen_t * (u32), passed as a 4-byte Buffer that the call updates.
const getsockoptFn = libc.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)');
const flockFn = libc.func('int flock(int fd, int operation)');
const setsockoptFn = libc.func('int setsockopt(int fd, int level, int optname, void *optval, unsigned int optlen)');
const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const sendtoFn = libc.func('long sendto(int fd, void *buf, size_t len, int flags, void *addr, unsigned int addrlen)');
const recvFn = libc.func('long recv(int fd, void *buf, size_t len, int flags)');
const setnsFn = libc.func('int setns(int fd, int nstype)');
const bindFn = libc.func('int bind(int fd, void *addr, unsigned int addrlen)');
// fcntl is variadic in glibc, like ioctl.
const fcntlFn = libc.func('int fcntl(int fd, int cmd, ...)');

/** Bytes of one `struct iovec` (void *base; size_t len) on 64-bit Linux. */
export const IOVEC_BYTES = 16;
/** IOV_MAX: more iovecs than this on either side of process_vm_readv fail with EINVAL. */
export const IOV_MAX = 1024;

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  // The first name wins for aliases (EAGAIN before EWOULDBLOCK in Node's table).
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** `EFAULT` for 14; `E<number>` for a value Node does not name. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** errno values the callers branch on. */
export const Errno = {
  EPERM: constants.errno.EPERM,
  ESRCH: constants.errno.ESRCH,
  EFAULT: constants.errno.EFAULT,
  EINVAL: constants.errno.EINVAL,
  ENOTTY: constants.errno.ENOTTY,
  ERANGE: constants.errno.ERANGE,
  ENOENT: constants.errno.ENOENT,
  EAGAIN: constants.errno.EAGAIN,
} as const;

function fail(syscall: string, context?: string): never {
  const errno = koffi.errno();
  throw new SystemCallError(syscall, errno, errnoName(errno), context);
}

/** Converts an error thrown by node:fs (errno negative, code set) into a SystemCallError. */
export function systemCallErrorFromNode(syscall: string, e: unknown, context?: string): SystemCallError | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const { errno, code } = e as { errno?: unknown; code?: unknown };
  if (typeof errno !== 'number' || typeof code !== 'string') return undefined;
  return new SystemCallError(syscall, Math.abs(errno), code, context);
}

/** The address of a Buffer's first byte as lo/hi 32-bit words, for writing into iovecs and ioctl args. */
export interface Address {
  lo: number;
  hi: number;
}

export function addressOf(buf: Uint8Array): Address {
  const a = koffi.address(buf);
  return { lo: Number(a & 0xffffffffn), hi: Number(a >> 32n) };
}

/**
 * process_vm_readv(2). `localIov` and `remoteIov` hold `localCount` / `remoteCount` iovecs (IOVEC_BYTES each).
 * Returns the bytes read, which may be fewer than asked when a remote page cannot be read.
 */
export function processVmReadv(pid: number, localIov: Uint8Array, localCount: number, remoteIov: Uint8Array, remoteCount: number): number {
  const n = processVmReadvFn(pid, localIov, localCount, remoteIov, remoteCount, 0) as number;
  if (n < 0) fail('process_vm_readv', `pid ${pid}`);
  return n;
}

/** ioctl(2) whose third argument points to `arg`. Returns the ioctl's non-negative result. */
export function ioctlPointer(fd: number, request: number, arg: Uint8Array, context?: string): number {
  const r = ioctlFn(fd, request, 'void *', arg) as number;
  if (r < 0) fail('ioctl', context);
  return r;
}

/** getsockopt(2)'s levels and names Ferry reads (asm-generic values: x86-64 and arm64). */
export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;
export const SO_PEERGROUPS = 59;

/**
 * getsockopt(2) into `out`; returns the bytes the kernel wrote. A buffer too small for SO_PEERGROUPS fails
 * with ERANGE: callers retry with room for NGROUPS_MAX.
 */
export function getsockopt(fd: number, level: number, optname: number, out: Uint8Array): number {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(out.byteLength);
  if ((getsockoptFn(fd, level, optname, out, len) as number) < 0) fail('getsockopt', `fd ${fd} option ${optname}`);
  return len.readUInt32LE();
}

/** IPPROTO_TCP's TCP_REPAIR (linux/tcp.h): 1 while CRIU holds the socket in repair mode, 0 to leave it. */
export const IPPROTO_TCP = 6;
export const TCP_REPAIR = 19;
export const SO_RCVTIMEO = 20;

/** setsockopt(2) with the bytes of `value` (an int is 4 little-endian bytes). */
export function setsockopt(fd: number, level: number, optname: number, value: Uint8Array): void {
  if ((setsockoptFn(fd, level, optname, value, value.byteLength) as number) < 0) fail('setsockopt', `fd ${fd} option ${optname}`);
}

/** socket(2); the caller closes it (ptrace.ts's closeFd). */
export function socket(domain: number, type: number, protocol: number): number {
  const fd = socketFn(domain, type, protocol) as number;
  if (fd < 0) fail('socket', `domain ${domain} protocol ${protocol}`);
  return fd;
}

/** sendto(2) of all of `buf` to the address bytes `addr`; returns the bytes sent. */
export function sendto(fd: number, buf: Uint8Array, addr: Uint8Array): number {
  const n = sendtoFn(fd, buf, buf.byteLength, 0, addr, addr.byteLength) as number;
  if (n < 0) fail('sendto', `fd ${fd}`);
  return n;
}

/** recv(2) into `buf`; returns the bytes received (EAGAIN once SO_RCVTIMEO passes). */
export function recv(fd: number, buf: Uint8Array): number {
  const n = recvFn(fd, buf, buf.byteLength, 0) as number;
  if (n < 0) fail('recv', `fd ${fd}`);
  return n;
}

/** bind(2) of a socket to the address bytes `addr` (a sockaddr_ll, a sockaddr_nl, ...). */
export function bind(fd: number, addr: Uint8Array): void {
  if ((bindFn(fd, addr, addr.byteLength) as number) < 0) fail('bind', `fd ${fd}`);
}

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** Sets FD_CLOEXEC on `fd`: a program this process execs (or spawns) does not inherit it. */
export function setCloseOnExec(fd: number): void {
  const flags = fcntlFn(fd, F_GETFD) as number;
  if (flags < 0) fail('fcntl', `F_GETFD fd ${fd}`);
  if ((flags & FD_CLOEXEC) === 0 && (fcntlFn(fd, F_SETFD, 'int', flags | FD_CLOEXEC) as number) < 0) fail('fcntl', `F_SETFD fd ${fd}`);
}

/** setns(2) of the calling thread (node's main thread: every koffi call runs there). */
export function setns(fd: number, nstype: number): void {
  if ((setnsFn(fd, nstype) as number) < 0) fail('setns', `fd ${fd}`);
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/**
 * flock(fd, LOCK_EX | LOCK_NB): true when this open file now holds the lock, false when another open file
 * holds it. The kernel drops the lock when the file is closed or its process dies: a crash never leaves one.
 */
export function tryExclusiveFlock(fd: number): boolean {
  if (flockFn(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EWOULDBLOCK) return false;
  throw new SystemCallError('flock', errno, errnoName(errno), `fd ${fd}`);
}
