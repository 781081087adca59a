/** criu restore of a session's images into a stopped tree, and the two ways out of that state. */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { faultArmed, faultPending, injectFault } from '../shared/fault-injection.js';
import { criuLogFileName, pruneCriuLogs } from '../shared/criu/criu-log-files.js';
import { criuRestore } from '../shared/criu/criu-runner.js';
import { NO_CRIU_FEATURES, probeNetworkLock, type CriuFeatures } from '../shared/criu/criu-features.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { CriuFeaturesMessage } from '../shared/transport/messages.js';
import { requireCriu } from '../shared/criu/criu-binary.js';
import { criuProcessesFor } from '../shared/criu/criu-processes.js';
import { signalTree } from '../shared/kernel/signal-tree.js';
import type { DestSession } from './session.js';
import { criuMountNamespaceArgs } from '../shared/criu/criu-mount-namespace.js';
import type { TaskMountNamespace } from '../shared/kernel/task-mount-namespace.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import { criuTaskNetworkRestoreArgs } from '../shared/criu/criu-task-network.js';

/** Where criu writes the restored root's pid: a restarted agent reads it (restart-recovery.ts). */
export const RESTORED_PID_FILE = 'restored.pid';

/**
 * Restores the session's images; resolves with the host pid of the restored root, left stopped. `lazy`: the
 * PE_LAZY pages are left to the session's pager, which must already listen. The logs dir
 * is pruned first (its CRIU logs are bounded, see criu-log-files.ts); a failed prune only logs.
 */
/**
 * The CRIU features a Restore asks for, checked before the session moves: established TCP needs a network
 * lock here (criu restore unlocks the connections with the method the dump used).
 */
export async function restoreFeatures(asked: CriuFeaturesMessage | null | undefined): Promise<CriuFeatures> {
  const f: CriuFeatures = { fileLocks: asked?.fileLocks === true, tcpEstablished: asked?.tcpEstablished === true };
  if (!f.tcpEstablished) return f;
  const criu = await requireCriu('dest');
  if ((await probeNetworkLock(criu)) === undefined) {
    throw new FerryError('TCP_LOCK_UNAVAILABLE', { side: 'dest', phase: 'restore', detail: `${criu} check --feature nftables failed and iptables-restore is not on PATH: this dest cannot restore established TCP connections` });
  }
  return f;
}

export async function restoreStopped(
  s: DestSession,
  timeoutMs: number,
  signal?: AbortSignal,
  lazy = false,
  features: CriuFeatures = NO_CRIU_FEATURES,
  mountNs?: TaskMountNamespace,
  taskNetwork?: TaskNetwork,
): Promise<number> {
  const criu = await requireCriu('dest');
  await pruneCriuLogs(s.logDir).catch((e: unknown) => s.log.warn('CRIU logs not pruned', { logDir: s.logDir, error: String(e) }));
  if (faultArmed('dest.restore-fails')) await rm(join(s.imagesDir, 'pstree.img'), { force: true });
  const restoring = criuRestore({
    criu,
    imagesDir: s.imagesDir,
    pidFile: join(s.dir, RESTORED_PID_FILE),
    logFile: join(s.logDir, criuLogFileName(s.id, 'restore')),
    leaveStopped: true,
    detach: true,
    fileLocks: features.fileLocks,
    tcpEstablished: features.tcpEstablished,
    // The pager (lazy/pager-link.ts) listens on lazy-pages.socket in the images dir, CRIU's work dir.
    extraArgs: [...(lazy ? ['--lazy-pages'] : []), ...criuMountNamespaceArgs(mountNs, 'restore'), ...criuTaskNetworkRestoreArgs(taskNetwork)],
    timeoutMs: timeoutMs || 120_000,
    signal,
  });
  if (faultPending('dest.restore-running')) {
    // The fault acts while criu runs: wait (bounded) until it does.
    for (let i = 0; i < 100 && criuProcessesFor(s.imagesDir).length === 0; i++) await sleep(20);
    injectFault('dest.restore-running');
  }
  return restoring;
}

/** Commit: the restored tree runs. */
export function resumeTree(rootPid: number): void {
  signalTree(rootPid, 'SIGCONT');
}

/** Rollback of an uncommitted restore: the copy never ran, so it is simply killed. */
export function killTree(rootPid: number): void {
  signalTree(rootPid, 'SIGKILL');
}
