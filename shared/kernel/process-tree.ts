/**
 * The process tree below a root task, as CRIU will dump it: every descendant process with its threads, each
 * named both by its host pid and by its pid in the root's pid namespace (CRIU names its images by the latter).
 *
 * Children come from /proc/PID/task/TID/children of every thread (a child is listed under the thread that
 * forked it; CONFIG_PROC_CHILDREN, which CRIU requires anyway). The walk is not atomic: a task that exits
 * while it is read is left out; callers that need a stable tree freeze it first or compare two walks.
 */
import { readdirSync } from 'node:fs';
import { readProcText, readStat, readStatus, type ProcStatus } from './proc-status.js';

export interface TreeThread {
  hostTid: number;
  nsTid: number;
}

/** One process of the tree (a thread group); its threads are listed inside. */
export interface TreeProcess {
  hostPid: number;
  /** Pid in the root's pid namespace. */
  nsPid: number;
  /** Host pid of the parent (for the root: its parent outside the tree). */
  hostPpid: number;
  /** Process group and session as host pids (from /proc/PID/stat). */
  pgid: number;
  sid: number;
  /** Process group and session in the root's pid namespace; 0 when the leader is outside that namespace. */
  nsPgid: number;
  nsSid: number;
  name: string;
  /** State letter of the main thread (R, S, D, T, Z, ...). */
  state: string;
  /** All threads, the main thread (hostTid === hostPid) first. */
  threads: TreeThread[];
  /** Host pids of the children found in the tree. */
  children: number[];
}

export interface ProcessTree {
  /** Depth of the root's pid namespace below this /proc's: NSpid.length - 1 of the root (0 on the host). */
  nsLevel: number;
  /** Every process, the root first, parents before their children. */
  processes: TreeProcess[];
}

function numericEntries(dir: string): number[] | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw e;
  }
  return names
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
}

/** The id at `level` of a NS* list; 0 if the list is too short (the leader is not visible there). */
function atLevel(list: readonly number[], level: number): number {
  return list[level] ?? 0;
}

/** Reads one process of the tree; undefined when it exited under the read. */
function readProcess(hostPid: number, status: ProcStatus, level: number): { proc: TreeProcess; children: number[] } | undefined {
  const stat = readStat(hostPid);
  const tids = numericEntries(`/proc/${hostPid}/task`);
  if (!stat || !tids) return undefined;
  const threads: TreeThread[] = [{ hostTid: hostPid, nsTid: atLevel(status.nsPids, level) }];
  const children = new Set<number>();
  for (const tid of tids) {
    if (tid !== hostPid) {
      const ts = readStatus(hostPid, tid);
      if (!ts) continue; // the thread exited
      threads.push({ hostTid: tid, nsTid: atLevel(ts.nsPids, level) });
    }
    const text = readProcText(`/proc/${hostPid}/task/${tid}/children`);
    for (const c of text?.trim().split(/\s+/) ?? []) if (c !== '') children.add(Number(c));
  }
  return {
    proc: {
      hostPid,
      // Descendants live in the root's namespace or deeper, so their NSpid always reaches `level`.
      nsPid: atLevel(status.nsPids, level),
      hostPpid: status.ppid,
      pgid: stat.pgrp,
      sid: stat.session,
      nsPgid: atLevel(status.nsPgids, level),
      nsSid: atLevel(status.nsSids, level),
      name: status.name,
      state: status.state,
      threads,
      children: [],
    },
    children: [...children].sort((a, b) => a - b),
  };
}

/**
 * Walks the tree below `rootPid` (a thread id is taken as its process). Undefined when the root is gone.
 */
export function readProcessTree(rootPid: number): ProcessTree | undefined {
  let rootStatus = readStatus(rootPid);
  if (!rootStatus) return undefined;
  if (rootStatus.tgid !== rootStatus.pid) {
    rootStatus = readStatus(rootStatus.tgid);
    if (!rootStatus) return undefined;
  }
  const level = rootStatus.nsPids.length - 1;
  const processes: TreeProcess[] = [];
  const seen = new Set<number>([rootStatus.pid]);
  // Breadth-first: parents come before children, as CRIU's pstree image lists them.
  const queue: [number, ProcStatus][] = [[rootStatus.pid, rootStatus]];
  for (const [i, [pid, status]] of queue.entries()) {
    const read = readProcess(pid, status, level);
    if (!read) {
      if (i === 0) return undefined;
      continue;
    }
    processes.push(read.proc);
    for (const child of read.children) {
      if (seen.has(child)) continue;
      const cs = readStatus(child);
      // A listed child may have exited, or its pid been reused by a task whose parent is elsewhere.
      if (!cs || cs.ppid !== pid) continue;
      seen.add(child);
      read.proc.children.push(child);
      queue.push([child, cs]);
    }
  }
  return { nsLevel: level, processes };
}
