/**
 * A task's credentials, as the kernel's own permission checks (kill(2), ptrace(2)) see them: the four uids
 * and gids of /proc/PID/status and whether the task is dumpable. A pure parser for fixtures, and a reader
 * that returns undefined once the task is gone.
 */
import { statSync } from 'node:fs';
import { readProcText } from './proc-status.js';

/** real, effective, saved set-ID, filesystem: the order of the Uid: and Gid: lines. */
export type IdQuad = readonly [real: number, effective: number, saved: number, fs: number];

export interface TaskCredentials {
  uids: IdQuad;
  gids: IdQuad;
  /**
   * False when the kernel guards the task from its own owner (prctl PR_SET_DUMPABLE 0, a setuid exec, an
   * unreadable binary): /proc/PID then belongs to root instead of the task's euid.
   */
  dumpable: boolean;
}

function quad(text: string, key: 'Uid' | 'Gid'): IdQuad {
  const m = new RegExp(`^${key}:\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s*$`, 'm').exec(text);
  if (!m) throw new Error(`malformed status: no ${key} line`);
  return [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
}

/** The uids and gids of a /proc/PID/status text. Throws when either line is missing or malformed. */
export function parseTaskIds(statusText: string): { uids: IdQuad; gids: IdQuad } {
  return { uids: quad(statusText, 'Uid'), gids: quad(statusText, 'Gid') };
}

/**
 * The credentials of process `pid` (or of its thread `tid`: threads may hold their own). Undefined when the
 * task is gone.
 */
export function readTaskCredentials(pid: number, tid?: number): TaskCredentials | undefined {
  const dir = tid === undefined ? `/proc/${pid}` : `/proc/${pid}/task/${tid}`;
  const text = readProcText(`${dir}/status`);
  if (text === undefined) return undefined;
  const ids = parseTaskIds(text);
  let owner: number;
  try {
    owner = statSync(dir).uid;
  } catch {
    return undefined; // exited between the two reads
  }
  // The kernel gives /proc/PID to the task's euid while it is dumpable, else to root (task_dump_owner).
  return { ...ids, dumpable: owner === ids.uids[1] };
}
