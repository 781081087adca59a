/**
 * A dest agent that died (kill -9, crash) leaves sessions on disk, maybe a criu restore still running, maybe
 * a stopped copy. At start the agent resolves each from its journal (dest-journal.ts), never by guessing:
 *
 *   last entry   what the source can know              what the restarted agent does
 *   receiving    its stream or upload failed            aborted; files removed
 *   restoring    its Restore call failed                aborted first (no Commit is taken), then, once criu
 *                                                      is gone (it runs to its end), what it restored is
 *                                                      killed and the files removed, in the background
 *   restored     it may be committing right now         the session is revived, stopped, for the rest of its
 *                                                      lease (RESTART_GRACE_MS at least): Commit resumes it,
 *                                                      Abort or the lease's end removes it (a lazy restore's
 *                                                      pager is adopted with it)
 *   filling      the copy runs; the fill may be going on  revived, its pager adopted (by pid and start time);
 *                                                      a pager found gone decides by its status file: filled
 *                                                      -> committed, anything else -> the copy is killed
 *   committed    it may be asking                       resumed if the crash came before the resume
 *   aborted      it may be asking                       killed if the crash came before the kill
 *
 * A task in its own network namespace (`taskNetwork` in `restoring`): a resumed copy first has its hold let go
 * and its addresses announced; a committed copy found running with hold tables left (the agent died before
 * deleting them) has them let go of too; a copy killed now has its outer veth deleted if the kill left it.
 *
 * Every ended session is remembered (the registry answers a late Commit or Abort from it). A copy is named
 * by pid AND start time, so a reused pid is never signalled. Session dirs without a journal (a crash before
 * its first write) are removed; anything in the work dir Ferry did not make is left alone and logged.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { criuProcessesFor, waitGoneOrKill } from '../shared/criu/criu-processes.js';
import { JournalFile } from '../shared/journal/journal-file.js';
import { readStat, startedAtMs } from '../shared/kernel/proc-status.js';
import { signalTree } from '../shared/kernel/signal-tree.js';
import type { Logger } from '../shared/logging/logger.js';
import type { Phase } from '../shared/phases.js';
import { destJournalDir, destJournalIds, JOURNAL_DIR, pruneEndedJournals, readDestJournal, type JournaledSession } from './dest-journal.js';
import { RESTORED_PID_FILE } from './restore.js';
import type { DestSession } from './session.js';
import type { EndedSession } from './session-registry.js';
import { LOGS_DIR, sessionDirsIn, WORK_DIR_MARKER } from './work-dir.js';
import { abortPager, readPagerStatus } from './lazy/pager-process.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import { finishLeftoverHold, removeOuterLink, resumeOnTheWire } from './task-network-copy.js';

/** A revived copy waits at least this long for the source's Commit or Abort, whatever its lease said. */
export const RESTART_GRACE_MS = 15_000;
/** How long a criu restore left running by the previous agent may go on before it is killed. */
const ORPHAN_CRIU_WAIT_MS = 120_000;

export interface ReviveInit {
  id: string;
  epoch: bigint;
  peer: string;
  restoredPid: number;
  state: 'restored' | 'filling';
  resumedAtUs?: bigint;
  taskNetwork?: TaskNetwork;
  log: Logger;
}

/** What a revived lazy session needs to adopt its pager. */
export interface RevivedPager {
  pager: { pid: number; startTime: number };
  copy: { pid: number; startTime: number } | undefined;
}

export interface Recovered {
  revived: { session: DestSession; leaseMs: number; pager?: RevivedPager }[];
  ended: { id: string; outcome: EndedSession }[];
  /** Resolves when the background work (an orphan criu, its restored tree, the files) is done. */
  cleanup: Promise<void>;
}

/** The copy the journal names, if that very process (pid and start time) still exists. */
/** The phase of the lines about a session this recovery finds (a revived session's log then says its own). */
const RECOVERY_PHASE: Readonly<Record<JournaledSession['state'], Phase>> = {
  receiving: 'rollback', // ended here
  restoring: 'rollback', // ended here, its copy killed once criu is done
  restored: 'restore', // taken over (or ended, when its copy is gone)
  filling: 'fill',
  committed: 'commit',
  aborted: 'rollback',
};

function liveCopy(j: JournaledSession): { pid: number; stopped: boolean } | undefined {
  if (j.restoredPid === undefined || j.restoredPid <= 1) return undefined;
  const st = readStat(j.restoredPid);
  if (!st || st.state === 'Z' || st.state === 'X' || st.startTime !== j.restoredStartTime) return undefined;
  return { pid: j.restoredPid, stopped: st.state === 'T' || st.state === 't' };
}

async function appendEnd(workDir: string, id: string, fields: Record<string, unknown>): Promise<void> {
  const file = await JournalFile.open(destJournalDir(workDir), id, 'dest.journal-write');
  if (!file) return; // another live process holds it: not ours to end
  try {
    await file.record('aborted', fields);
  } finally {
    await file.close();
  }
}

export async function recoverSessions(workDir: string, log: Logger, revive: (init: ReviveInit) => Promise<DestSession>): Promise<Recovered> {
  const out: Recovered = { revived: [], ended: [], cleanup: Promise.resolve() };
  const background: Promise<void>[] = [];
  const ended: JournaledSession[] = [];
  const sessionDir = (id: string): string => join(workDir, id);
  const removeDir = (id: string): Promise<void> => rm(sessionDir(id), { recursive: true, force: true });
  const abort = async (j: JournaledSession, reason: string): Promise<void> => {
    await appendEnd(workDir, j.id, { reason });
    j.state = 'aborted';
    j.reason = reason;
    j.at = Date.now();
  };

  for (const id of await destJournalIds(workDir)) {
    let j: JournaledSession | undefined;
    try {
      j = await readDestJournal(workDir, id);
    } catch (e) {
      log.error('a session journal is unreadable: its session is left as it is, for a human', { migrationId: id, err: e });
      continue;
    }
    const mlog = j ? log.child({ side: 'dest', migrationId: id, phase: RECOVERY_PHASE[j.state] }) : log;
    if (!j) {
      // The first write was torn: the session never answered Prepare.
      await removeDir(id);
      await rm(join(destJournalDir(workDir), `${id}.journal`), { force: true });
      continue;
    }
    switch (j.state) {
      case 'receiving':
        await abort(j, 'the dest agent restarted while the session received');
        await removeDir(id);
        mlog.warn('ended a session left receiving by a previous agent');
        break;
      case 'restoring': {
        await abort(j, 'the dest agent restarted during the restore');
        const restoringAt = j.restoringAt ?? j.at;
        background.push(
          finishOrphanRestore(sessionDir(id), restoringAt, mlog)
            .then(() => stopPagerOf(sessionDir(id), mlog))
            .finally(() => removeDir(id)),
        );
        break;
      }
      case 'restored': {
        const copy = liveCopy(j);
        if (copy?.stopped) {
          const leaseMs = Math.max(RESTART_GRACE_MS, (j.leaseUntil ?? 0) - Date.now());
          const session = await revive({ id, epoch: j.epoch, peer: j.peer, restoredPid: copy.pid, state: 'restored', ...(j.taskNetwork ? { taskNetwork: j.taskNetwork } : {}), log: mlog });
          out.revived.push({ session, leaseMs, pager: pagerOf(j, copy.pid) });
          mlog.warn('took over a restored, stopped copy left by a previous agent: it waits for the source', { pid: copy.pid, leaseMs });
          continue;
        }
        await abort(j, 'the restored copy was gone when the dest agent restarted');
        if (copy) signalTree(copy.pid, 'SIGKILL'); // running without a Commit: never ours to keep
        if (copy && j.taskNetwork) removeOuterLink(copy.pid, j.taskNetwork, mlog);
        stopOrphanPager(j, mlog);
        await removeDir(id);
        break;
      }
      case 'filling': {
        // The copy runs; only its pager's end decides (the link adopts it, or reads how it ended).
        const copy = liveCopy(j);
        await resumeCommitted(copy, j, mlog);
        const session = await revive({ id, epoch: j.epoch, peer: j.peer, restoredPid: j.restoredPid ?? 0, state: 'filling', resumedAtUs: j.resumedAtUs, log: mlog });
        out.revived.push({ session, leaseMs: 0, pager: pagerOf(j, copy?.pid) });
        mlog.warn('took over a resumed copy whose pager is filling its pages', { pid: j.restoredPid, pager: j.pagerPid });
        continue;
      }
      case 'committed': {
        const copy = liveCopy(j);
        await resumeCommitted(copy, j, mlog);
        await removeDir(id);
        break;
      }
      case 'aborted': {
        const copy = liveCopy(j);
        if (copy) {
          signalTree(copy.pid, 'SIGKILL');
          mlog.warn('killed an aborted copy: the previous agent died before killing it', { pid: copy.pid });
          // Only now: an ended journal is read at every start, and its link name may be another session's since.
          if (j.taskNetwork) removeOuterLink(copy.pid, j.taskNetwork, mlog);
        }
        stopOrphanPager(j, mlog);
        await removeDir(id);
        break;
      }
    }
    ended.push(j);
  }

  for (const j of await pruneEndedJournals(workDir, ended, log)) {
    out.ended.push({
      id: j.id,
      outcome:
        j.state === 'committed'
          ? { outcome: 'committed', epoch: j.epoch, peer: j.peer, restoredPid: j.restoredPid ?? 0, resumedAtUs: j.resumedAtUs ?? 0n }
          : { outcome: 'aborted', epoch: j.epoch, peer: j.peer, reason: j.reason ?? 'aborted' },
    });
  }

  // Dirs with no journal at all: a crash between the mkdir and the first journal write.
  const journaled = new Set([...out.revived.map((r) => r.session.id), ...ended.map((j) => j.id)]);
  const names = await sessionDirsIn(workDir).catch(() => []);
  for (const name of names.filter((n) => !journaled.has(n))) {
    await removeDir(name);
    log.warn('removed a session dir without a journal', { migrationId: name });
  }
  const known = new Set([LOGS_DIR, WORK_DIR_MARKER, JOURNAL_DIR, ...names]);
  const others = (await readdir(workDir).catch(() => [])).filter((n) => !known.has(n));
  if (others.length > 0) log.warn('left alone in the work dir: not a session Ferry made', { entries: others });

  out.cleanup = Promise.all(background).then(() => undefined);
  return out;
}

/**
 * A committed copy (`committed` or `filling`): resumed if the crash came before the resume (its hold let go
 * first); if it runs already, any hold tables the crash left in its namespace are let go of.
 */
async function resumeCommitted(copy: { pid: number; stopped: boolean } | undefined, j: JournaledSession, log: Logger): Promise<void> {
  if (!copy) return;
  if (!copy.stopped) {
    if (j.taskNetwork) await finishLeftoverHold(copy.pid, j.taskNetwork, log);
    return;
  }
  if (j.taskNetwork) await resumeOnTheWire(copy.pid, j.taskNetwork, log, () => signalTree(copy.pid, 'SIGCONT'));
  else signalTree(copy.pid, 'SIGCONT');
  log.warn('resumed a committed copy: the previous agent died before resuming it', { pid: copy.pid });
}

function pagerOf(j: JournaledSession, copyPid: number | undefined): RevivedPager | undefined {
  if (j.pagerPid === undefined || j.pagerStartTime === undefined) return undefined;
  return { pager: { pid: j.pagerPid, startTime: j.pagerStartTime }, copy: copyPid !== undefined ? { pid: copyPid, startTime: j.restoredStartTime ?? 0 } : undefined };
}

/** A journaled pager that still runs, for a session that ended: it kills its copy (if any is left) and exits. */
function stopOrphanPager(j: JournaledSession, log: Logger): void {
  if (j.pagerPid === undefined || j.pagerStartTime === undefined) return;
  if (abortPager({ pid: j.pagerPid, startTime: j.pagerStartTime })) log.warn('stopped the pager of an ended session', { pager: j.pagerPid });
}

/** The pager a restore started before its restored entry (none is journaled then): found by its status file. */
async function stopPagerOf(sessionDir: string, log: Logger): Promise<void> {
  const status = await readPagerStatus(join(sessionDir, 'pager', 'status')).catch(() => undefined);
  const pid = status?.pid;
  if (pid === undefined || !Number.isSafeInteger(pid) || pid <= 1) return;
  // Only that very process: a ferry_pager started on this session's plan.
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes('ferry_pager') || !cmdline.includes(join(sessionDir, 'pager', 'plan'))) return;
  process.kill(pid, 'SIGTERM');
  log.warn('stopped the pager of an interrupted restore', { pager: pid });
}

/**
 * A restore the previous agent started: criu runs to its end (killing it half-way would orphan a half-made
 * tree), bounded; then whatever it restored is killed (the source never heard "restored", so it never commits).
 */
async function finishOrphanRestore(dir: string, restoringAt: number, log: Logger): Promise<void> {
  const criu = criuProcessesFor(join(dir, 'images'));
  if (criu.length > 0) {
    log.warn('waiting for a criu restore left running by the previous agent', { criu });
    await waitGoneOrKill(criu, ORPHAN_CRIU_WAIT_MS);
  }
  const pid = Number((await readFile(join(dir, RESTORED_PID_FILE), 'utf8').catch(() => '')).trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  const st = readStat(pid);
  // Only a process born after the restore began can be its copy: an older one merely reuses the pid.
  if (st && startedAtMs(st) >= restoringAt - 1_000) {
    signalTree(pid, 'SIGKILL');
    log.warn('killed the copy an interrupted restore made', { pid });
  }
}
