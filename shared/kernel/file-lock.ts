/**
 * An exclusive lock on a path, held by this process until release() or its death (flock on an open file: the
 * kernel drops it with the last descriptor, so a crashed holder never leaves a lock behind). release() also
 * removes the file; a locker that opened it just before is caught by the inode check and tries again.
 */
import { closeSync, fstatSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { tryExclusiveFlock } from '../native/libc.js';

export interface FileLock {
  readonly path: string;
  release(): void;
}

/** The lock, or undefined when another holder has it. */
export function tryLockFile(path: string): FileLock | undefined {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  for (;;) {
    const fd = openSync(path, 'a', 0o600);
    let held = false;
    try {
      if (!tryExclusiveFlock(fd)) return undefined;
      // Locked; but if the holder before released (and unlinked) between our open and our flock, this
      // inode is no longer the path's: another locker would open a fresh file. Start again on that one.
      const mine = fstatSync(fd);
      const now = statOrUndefined(path);
      if (!now || now.ino !== mine.ino || now.dev !== mine.dev) continue;
      held = true;
    } finally {
      if (!held) closeSync(fd);
    }
    let released = false;
    return {
      path,
      release: () => {
        if (released) return;
        released = true;
        try {
          unlinkSync(path); // while still locked: nobody can hold it between the unlink and the close
        } finally {
          closeSync(fd);
        }
      },
    };
  }
}

function statOrUndefined(path: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}
