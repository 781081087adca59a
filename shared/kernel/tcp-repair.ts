/**
 * Taking a stopped tree's TCP sockets out of repair mode. `criu dump --tcp-established --leave-stopped` leaves
 * every established socket in TCP_REPAIR (CRIU turns it off only when the dump fails or with --leave-running):
 * a task resumed like that gets EPERM from recv() and EINVAL from send(), and its peers are reset. Each socket
 * fd of each process is copied here with pidfd_getfd(2) (root: ptrace rights over the task), asked whether it
 * is in repair mode, and if so set back with TCP_REPAIR 0 (which also sends a window probe, so that the peer
 * resumes at once). Sockets the tree shares (inherited fds) are found in repair once and skipped after.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { SystemCallError } from '../errors/ferry-error.js';
import { getsockopt, IPPROTO_TCP, setsockopt, TCP_REPAIR } from '../native/libc.js';
import { closeFd, pidfdGetfd, pidfdOpen } from '../native/ptrace.js';

export interface TcpRepairOutcome {
  /** Sockets taken out of repair mode, as `pid N fd M`. */
  released: string[];
  /** What could not be looked at or released, each with its reason. */
  failures: string[];
}

const OFF = Buffer.alloc(4); // TCP_REPAIR_OFF = 0

/** The fds of `pid` that are sockets; empty once it is gone. */
function socketFds(pid: number): number[] {
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  return names.filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  }).map(Number);
}

/** Whether the socket `fd` (ours) is a TCP socket in repair mode; false for any other socket. */
function inRepair(fd: number): boolean {
  const v = Buffer.alloc(4);
  try {
    getsockopt(fd, IPPROTO_TCP, TCP_REPAIR, v);
  } catch (e) {
    if (e instanceof SystemCallError) return false; // not TCP (EOPNOTSUPP, ENOPROTOOPT)
    throw e;
  }
  return v.readInt32LE(0) !== 0;
}

/**
 * Calls `visit` with a copy of each socket fd of these (host) pids (closed after), and `where` as `pid N fd M`.
 * Gone processes and fds closed meanwhile are skipped; anything else that fails goes to `failures`.
 */
function eachSocket(pids: readonly number[], failures: string[], visit: (fd: number, where: string) => void): void {
  for (const pid of pids) {
    let pidfd: number;
    try {
      pidfd = pidfdOpen(pid);
    } catch (e) {
      if (!(e instanceof SystemCallError && e.errnoName === 'ESRCH')) failures.push(`pid ${pid}: ${String(e)}`);
      continue;
    }
    try {
      for (const targetFd of socketFds(pid)) {
        const where = `pid ${pid} fd ${targetFd}`;
        let fd: number;
        try {
          fd = pidfdGetfd(pidfd, targetFd);
        } catch (e) {
          if (!(e instanceof SystemCallError && e.errnoName === 'EBADF')) failures.push(`${where}: ${String(e)}`);
          continue;
        }
        try {
          visit(fd, where);
        } catch (e) {
          failures.push(`${where}: ${String(e)}`);
        } finally {
          closeFd(fd);
        }
      }
    } finally {
      closeFd(pidfd);
    }
  }
}

/** Leaves repair mode on every socket of these (host) pids; never throws: what failed is in `failures`. */
export function leaveTcpRepair(pids: readonly number[]): TcpRepairOutcome {
  const out: TcpRepairOutcome = { released: [], failures: [] };
  eachSocket(pids, out.failures, (fd, where) => {
    if (!inRepair(fd)) return;
    setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, OFF);
    out.released.push(where);
  });
  return out;
}

/** The sockets of these pids still in repair mode, as `pid N fd M` (the check after an undo, and tests). */
export function socketsInRepair(pids: readonly number[]): string[] {
  const found: string[] = [];
  eachSocket(pids, [], (fd, where) => {
    if (inRepair(fd)) found.push(where);
  });
  return found;
}
