/**
 * Which process trees a caller of the source agent may migrate. The agent runs as root and a migration reads
 * the whole memory of a tree and then kills it, so it never does that for a caller the kernel would not let
 * do it alone: root may migrate any tree; any other uid only a tree whose every task (each thread of each
 * process) it could both signal and ptrace:
 *   - kill(2): the caller's uid is the task's real or saved uid;
 *   - ptrace(2) (PTRACE_MODE_ATTACH_REALCREDS, which implies the above): every uid of the task is the
 *     caller's, every gid is one of the caller's groups, and the task is dumpable. This is what refuses a
 *     setuid or setgid program the caller started, and a task that guards its memory from its owner.
 */
import { FerryError, isFerryError } from '../shared/errors/ferry-error.js';
import type { PeerCredentials } from '../shared/kernel/peer-credentials.js';
import { readProcessTree } from '../shared/kernel/process-tree.js';
import { readTaskCredentials, type TaskCredentials } from '../shared/kernel/task-credentials.js';
import type { Logger } from '../shared/logging/logger.js';
import type { EventSink } from './migration/events.js';

export type Caller = PeerCredentials;

/** One task of the tree as the rule sees it. */
export interface TreeTaskCredentials extends TaskCredentials {
  pid: number;
  tid: number;
}

/** Why `caller` may not act on `task`, or undefined when it may. Pure. */
export function refusalFor(caller: Caller, task: TaskCredentials): string | undefined {
  if (caller.uid === 0) return undefined;
  const [ruid, euid, suid, fsuid] = task.uids;
  if (ruid !== caller.uid && suid !== caller.uid) return `owned by uid ${ruid} (saved uid ${suid}): uid ${caller.uid} may not signal it`;
  if (euid !== caller.uid || suid !== caller.uid || ruid !== caller.uid || fsuid !== caller.uid) {
    return `runs with uids ${task.uids.join('/')} (real/effective/saved/fs): uid ${caller.uid} may not read its memory`;
  }
  const groups = new Set([caller.gid, ...caller.groups]);
  const foreign = task.gids.find((g) => !groups.has(g));
  if (foreign !== undefined) return `runs with gids ${task.gids.join('/')}: gid ${foreign} is not one of the caller's groups`;
  if (!task.dumpable) return 'is not dumpable: the kernel guards its memory from its owner';
  return undefined;
}

/** Every task of the tree below `rootPid`, each thread on its own; undefined when the root is gone. */
export function readTreeCredentials(rootPid: number): TreeTaskCredentials[] | undefined {
  const tree = readProcessTree(rootPid);
  if (!tree) return undefined;
  const out: TreeTaskCredentials[] = [];
  for (const p of tree.processes) {
    for (const t of p.threads) {
      const cred = readTaskCredentials(p.hostPid, t.hostTid);
      if (cred) out.push({ pid: p.hostPid, tid: t.hostTid, ...cred }); // a task gone under the read needs no permission
    }
  }
  return out;
}

/**
 * Throws CALLER_NOT_PERMITTED unless `caller` may migrate the tree below `pid`. For anyone but root a pid that
 * does not exist is refused the same way as a foreign one, so the agent tells nobody which pids exist.
 */
export function authorizeMigration(caller: Caller, pid: number, read: (pid: number) => TreeTaskCredentials[] | undefined = readTreeCredentials): void {
  if (caller.uid === 0) return;
  const tasks = read(pid);
  const refuse = (detail: string): never => {
    throw new FerryError('CALLER_NOT_PERMITTED', { side: 'source', sourceState: 'running', message: `uid ${caller.uid} may not migrate pid ${pid}`, detail });
  };
  if (!tasks || tasks.length === 0) refuse(`pid ${pid} is not a process of uid ${caller.uid} (or does not exist)`);
  for (const task of tasks!) {
    // The caller learns no more than for a pid that does not exist: who owns what is for the agent's log.
    if (refusalFor(caller, task)) refuse(`pid ${pid} is not a process of uid ${caller.uid} (or does not exist)`);
  }
}

/**
 * The tree can change after the first check: its root's pid reused, a child that exec'd a setuid program. So
 * the permission is checked again as each phase begins and after each round, before more of its memory is
 * read; from the final delta on the tree is frozen, so the checks there see exactly what was dumped. The
 * commit and a lazy restore's fill are not interrupted: by then the frozen tree was checked at the restore, and
 * the copy runs on the dest. A refusal aborts the
 * migration with CALLER_NOT_PERMITTED as the reason; it then rolls back (the task thawed, the dest session
 * removed).
 */
export function reauthorizeOnProgress(
  caller: Caller,
  pid: number,
  controller: AbortController,
  log: Logger,
  read: (pid: number) => TreeTaskCredentials[] | undefined = readTreeCredentials,
): EventSink {
  return (e) => {
    if (controller.signal.aborted) return;
    if (e.kind !== 'round' && !(e.kind === 'phase' && e.phase !== 'commit' && e.phase !== 'fill')) return;
    try {
      authorizeMigration(caller, pid, read);
    } catch (err) {
      log.warn('the caller may no longer migrate this tree: rolling back', { err });
      controller.abort(err);
    }
  };
}

/**
 * The error to report for a failed migration: the orchestrator reports an abort as CANCELLED; when the abort
 * was a lost permission, that is what the caller must see (with the rollback's outcome).
 */
export function permissionLostError(signal: AbortSignal, e: unknown): unknown {
  const reason: unknown = signal.reason;
  if (!isFerryError(reason, 'CALLER_NOT_PERMITTED') || !isFerryError(e) || e.key !== 'CANCELLED') return e;
  reason.phase = e.phase;
  reason.sourceState = e.sourceState;
  reason.rollbackErrors.push(...e.rollbackErrors);
  return reason;
}
