/**
 * One migration per task at a time, on this host: a migration holds a lock on every process of the tree it
 * moves (named by host pid and start time, so that a reused pid is another process), from negotiate to its
 * end. A second migration of the same task, or of any process of its tree, is refused before it touches
 * anything. The locks are flocks: the kernel drops them if the migrating process dies.
 */
import { join } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { tryLockFile, type FileLock } from '../shared/kernel/file-lock.js';
import { readStat } from '../shared/kernel/proc-status.js';

export interface TaskLock {
  release(): void;
}

export function lockTaskTree(locksDir: string, rootPid: number, pids: readonly number[]): TaskLock {
  const held: FileLock[] = [];
  const releaseAll = (): void => {
    for (const l of held.splice(0).reverse()) l.release();
  };
  // The root first, then the rest in pid order: two migrations of overlapping trees meet at the same file.
  const order = [rootPid, ...[...new Set(pids)].filter((p) => p !== rootPid).sort((a, b) => a - b)];
  try {
    for (const pid of order) {
      const stat = readStat(pid);
      if (!stat) continue; // exited since the tree was read: nothing left to guard
      const lock = tryLockFile(join(locksDir, `pid-${pid}-${stat.startTime}.lock`));
      if (!lock) {
        throw new FerryError('TASK_ALREADY_MIGRATING', {
          phase: 'negotiate',
          side: 'source',
          sourceState: 'running',
          detail: pid === rootPid ? `pid ${pid} is being migrated` : `pid ${pid} of the tree of ${rootPid} is being migrated`,
        });
      }
      held.push(lock);
    }
  } catch (e) {
    releaseAll();
    throw e;
  }
  return { release: releaseAll };
}
