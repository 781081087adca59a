/** criu restore of a session's images into a stopped tree, and the two ways out of that state. */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { faultArmed } from '../shared/fault-injection.js';
import { criuRestore } from '../shared/criu/criu-runner.js';
import { requireCriu } from '../shared/criu/criu-binary.js';
import { signalTree } from '../shared/kernel/signal-tree.js';
import type { DestSession } from './session.js';

/** Restores the session's images; resolves with the host pid of the restored root, left stopped. */
export async function restoreStopped(s: DestSession, timeoutMs: number): Promise<number> {
  const criu = await requireCriu('dest');
  if (faultArmed('dest.restore-fails')) await rm(join(s.imagesDir, 'pstree.img'), { force: true });
  return criuRestore({
    criu,
    imagesDir: s.imagesDir,
    pidFile: join(s.dir, 'restored.pid'),
    logFile: join(s.logDir, `${s.id}-restore.log`),
    leaveStopped: true,
    detach: true,
    timeoutMs: timeoutMs || 120_000,
  });
}

/** Commit: the restored tree runs. */
export function resumeTree(rootPid: number): void {
  signalTree(rootPid, 'SIGCONT');
}

/** Rollback of an uncommitted restore: the copy never ran, so it is simply killed. */
export function killTree(rootPid: number): void {
  signalTree(rootPid, 'SIGKILL');
}
