/**
 * Who is at the other end of a connected Unix socket: SO_PEERCRED (pid, effective uid and gid at connect(2))
 * and SO_PEERGROUPS (its supplementary groups then), as the kernel recorded them; the peer cannot forge
 * either. Ids are as seen from this process's user namespace.
 */
import type { Socket } from 'node:net';
import { Errno, SO_PEERCRED, SO_PEERGROUPS, SOL_SOCKET, getsockopt } from '../native/libc.js';
import { SystemCallError } from '../errors/ferry-error.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  /** Supplementary groups (may include gid). */
  groups: readonly number[];
}

/** NGROUPS_MAX of Linux: the most supplementary groups a task can have. */
const NGROUPS_MAX = 65536;

/** The peer of the connected Unix socket `fd`. Throws SystemCallError (e.g. ENOTSOCK, EBADF). */
export function peerCredentialsOfFd(fd: number): PeerCredentials {
  const cred = Buffer.alloc(12); // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred) < 12) throw new SystemCallError('getsockopt', Errno.EINVAL, 'EINVAL', 'short SO_PEERCRED');
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8), groups: peerGroups(fd) };
}

function peerGroups(fd: number): number[] {
  let buf = Buffer.alloc(64 * 4);
  let n: number;
  try {
    n = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf);
  } catch (e) {
    if (!(e instanceof SystemCallError) || e.errno !== Errno.ERANGE) throw e;
    buf = Buffer.alloc(NGROUPS_MAX * 4);
    n = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf);
  }
  const groups: number[] = [];
  for (let off = 0; off + 4 <= n; off += 4) groups.push(buf.readUInt32LE(off));
  return groups;
}

/**
 * The peer of an accepted net.Socket. Node exposes no public way to the descriptor: its stream handle has an
 * `fd` getter on POSIX, used here. Anything unexpected throws, so a caller that cannot be identified is
 * refused, never let through.
 */
export function peerCredentials(socket: Socket): PeerCredentials {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new SystemCallError('getsockopt', Errno.EINVAL, 'EINVAL', 'the socket exposes no file descriptor');
  }
  return peerCredentialsOfFd(fd);
}
