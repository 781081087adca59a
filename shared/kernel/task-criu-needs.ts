/**
 * What CRIU must be told about a tree before it dumps it: whether the tree holds file locks (criu refuses it
 * without --file-locks) and whether it has connected TCP sockets (refused without --tcp-established). Read
 * from /proc only, never touching the task: each fd's fdinfo lists the locks that fd's owner holds ("lock:"
 * lines: flock, POSIX and OFD alike, unlike /proc/locks, which gives OFD locks pid -1), and each socket fd's
 * inode is looked up in the task's own netns tables, /proc/PID/net/tcp{,6}.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export interface TaskCriuNeeds {
  /** Pids (host) holding at least one file lock, with the first lock line seen. */
  fileLocks: { pid: number; lock: string }[];
  /** Connected TCP sockets: the pid, its local and remote address, and the kernel's state name. */
  tcpConnections: { pid: number; local: string; remote: string; state: string }[];
}

/** The kernel's TCP states (include/net/tcp_states.h), as /proc/net/tcp gives them in hex. */
const TCP_STATES: Record<number, string> = {
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
};
/** CRIU dumps a listening or an unconnected (CLOSE) socket without --tcp-established; any other it refuses. */
const NEEDS_REPAIR = (state: number): boolean => state !== 10 && state !== 7;

export interface TcpEntry {
  inode: number;
  local: string;
  remote: string;
  state: number;
}

/** Parses /proc/PID/net/tcp or tcp6. Addresses stay in the kernel's hex form (ADDR:PORT). */
export function parseProcNetTcp(text: string): TcpEntry[] {
  const out: TcpEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const state = parseInt(f[3]!, 16);
    const inode = Number(f[9]);
    if (!Number.isSafeInteger(inode) || !Number.isFinite(state)) continue;
    out.push({ inode, local: f[1]!, remote: f[2]!, state });
  }
  return out;
}

/** The first "lock:" line of an fdinfo file, without its prefix. */
export function fdinfoLock(text: string): string | undefined {
  const m = /^lock:\s*(.+)$/m.exec(text);
  return m?.[1]?.trim();
}

function tryRead(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined; // the task or the fd went away meanwhile: nothing to carry
  }
}

function tryList(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

/** Reads the needs of these (host) pids under `procRoot` (a fake /proc in tests). */
export function readTaskCriuNeeds(pids: readonly number[], procRoot = '/proc'): TaskCriuNeeds {
  const needs: TaskCriuNeeds = { fileLocks: [], tcpConnections: [] };
  for (const pid of pids) {
    const dir = join(procRoot, String(pid));
    const socketInodes = new Set<number>();
    let lock: string | undefined;
    for (const fd of tryList(join(dir, 'fd'))) {
      let target: string;
      try {
        target = readlinkSync(join(dir, 'fd', fd));
      } catch {
        continue;
      }
      const sock = /^socket:\[(\d+)\]$/.exec(target);
      if (sock) socketInodes.add(Number(sock[1]));
      if (lock === undefined) lock = fdinfoLock(tryRead(join(dir, 'fdinfo', fd)) ?? '');
    }
    if (lock !== undefined) needs.fileLocks.push({ pid, lock });
    if (socketInodes.size === 0) continue;
    for (const table of ['tcp', 'tcp6']) {
      for (const e of parseProcNetTcp(tryRead(join(dir, 'net', table)) ?? '')) {
        if (!socketInodes.has(e.inode) || !NEEDS_REPAIR(e.state)) continue;
        needs.tcpConnections.push({ pid, local: e.local, remote: e.remote, state: TCP_STATES[e.state] ?? `state ${e.state}` });
      }
    }
  }
  return needs;
}
