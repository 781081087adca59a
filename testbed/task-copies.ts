/**
 * The copies of a workload task on the two hosts, for the fault matrix's "exactly one copy runs": every live
 * process carrying the task's `--name`, its state letter, and which host's network namespace it is in. A copy
 * still inside criu's restorer does not carry the name yet, so a test asks again once things have settled.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { nsInode, pidsWithArgs } from './leftovers.js';
import type { Host, TwoHosts } from './netns-hosts.js';
import { readPidState } from './process-probes.js';

export interface TaskCopy {
  pid: number;
  /** R, S, D, T (stopped: a restored copy not yet committed, or a frozen original), ... */
  state: string;
  /** The host whose network namespace it is in; undefined for neither (a bug in itself). */
  host: Host['role'] | undefined;
}

export function taskCopies(hosts: TwoHosts, name: string, program = 'memtest'): TaskCopy[] {
  const inode = (path: string): number | undefined => {
    try {
      return nsInode(path);
    } catch {
      return undefined; // gone meanwhile
    }
  };
  const src = inode(hosts.src.netns);
  const dst = inode(hosts.dst.netns);
  const copies: TaskCopy[] = [];
  for (const pid of pidsWithArgs(program, '--name', name)) {
    const state = readPidState(pid);
    const net = inode(`/proc/${pid}/ns/net`);
    if (state === undefined || state === 'Z' || net === undefined) continue;
    copies.push({ pid, state, host: net === src ? 'src' : net === dst ? 'dst' : undefined });
  }
  return copies;
}

/**
 * memtest processes in a network namespace (a path such as host.netns), by their comm, which reads no memory of
 * theirs: safe while a lazily restored copy's pages are still arriving, where reading its argv (taskCopies,
 * pgrep -f) faults on its stack page and blocks until the pager has it (in post-copy, for as long as a link cut
 * lasts).
 */
export function memtestsIn(netns: string): number[] {
  const want = statSync(netns).ino;
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'memtest' && statSync(`/proc/${pid}/ns/net`).ino === want;
      } catch {
        return false;
      }
    });
}
