/**
 * The dest's journal of each session (shared/journal/journal-file.ts), written through the session's
 * transitions (session.ts), each entry on disk before the step it names acts:
 *
 *   receiving   the session exists (its epoch and its peer: who may drive it after a restart)
 *   restoring   criu restore is about to start (a restart finds criu and its pid file from here; a task in its
 *               own network namespace: `taskNetwork`, its veth's outer end as criu makes it here)
 *   restored    a stopped copy exists and the source is told so (its pid, start time, lease end; for a lazy
 *               restore its pager's pid and start time)
 *   filling     a Commit arrived for a lazy restore: the copy resumes while its pager fills its pages
 *   committed   a Commit arrived (eager), or the pager put every page in (lazy): the copy runs on its own
 *   aborted     the copy will never run: any later Commit is refused
 *
 * The journals of ended sessions are kept (ENDED_RETENTION_MS) so that a source asking after a crash or a
 * long cut still learns how its migration ended; a session with no journal never committed here.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { JournalFile, journalIds, journalPath, readJournal, removeJournal } from '../shared/journal/journal-file.js';
import type { Logger } from '../shared/logging/logger.js';
import { MIGRATION_ID } from './request-bounds.js';
import { isTaskNetwork } from '../shared/kernel/task-network-hold.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';

export const JOURNAL_DIR = 'journal';
/** How long a source may come back and ask how its migration ended. */
export const ENDED_RETENTION_MS = 7 * 24 * 3_600_000;
/** Ended journals kept at most (the newest): a flood of migrations cannot fill the disk with them. */
export const MAX_ENDED_JOURNALS = 10_000;

export type JournaledState = 'receiving' | 'restoring' | 'restored' | 'filling' | 'committed' | 'aborted';

export interface JournaledSession {
  id: string;
  state: JournaledState;
  epoch: bigint;
  peer: string;
  /** When the last entry was written (wall-clock ms). */
  at: number;
  /** When criu restore was about to start. */
  restoringAt?: number;
  restoredPid?: number;
  restoredStartTime?: number;
  /** Wall-clock ms at which the stopped copy's commit lease ends. */
  leaseUntil?: number;
  resumedAtUs?: bigint;
  reason?: string;
  /** The pager of a lazy restore: a restarted agent adopts it by pid and start time. */
  pagerPid?: number;
  pagerStartTime?: number;
  /** The pager's final stats (a repeated Fill of a filled session gets them). */
  fill?: Record<string, number>;
  /** The task's own network as restored here: a resume lets go of its hold, a kill deletes its outer veth. */
  taskNetwork?: TaskNetwork;
}

export function destJournalDir(workDir: string): string {
  return join(workDir, JOURNAL_DIR);
}

/** A new session's journal, locked by this agent; WORK_DIR_FOREIGN-like refusal if another live agent holds it. */
export async function openDestJournal(workDir: string, id: string): Promise<JournalFile> {
  const file = await JournalFile.open(destJournalDir(workDir), id, 'dest.journal-write');
  if (!file) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'prepare', detail: `the journal of ${id} is held by another process: is a second agent using this work dir?` });
  return file;
}

export async function destJournalIds(workDir: string): Promise<string[]> {
  return journalIds(destJournalDir(workDir), (id) => MIGRATION_ID.test(id));
}

/** Folds a session's journal; undefined when it holds no complete "receiving" entry (a crash at its first write). */
export async function readDestJournal(workDir: string, id: string): Promise<JournaledSession | undefined> {
  const entries = await readJournal(journalPath(destJournalDir(workDir), id));
  const first = entries[0];
  if (first?.state !== 'receiving' || typeof first.epoch !== 'string' || typeof first.peer !== 'string') return undefined;
  const s: JournaledSession = { id, state: 'receiving', epoch: BigInt(first.epoch), peer: first.peer, at: first.at };
  for (const e of entries) {
    s.state = e.state as JournaledState;
    s.at = e.at;
    if (e.state === 'restoring') s.restoringAt = e.at;
    if (typeof e.restoredPid === 'number') s.restoredPid = e.restoredPid;
    if (typeof e.startTime === 'number') s.restoredStartTime = e.startTime;
    if (typeof e.leaseUntil === 'number') s.leaseUntil = e.leaseUntil;
    if (typeof e.resumedAtUs === 'string') s.resumedAtUs = BigInt(e.resumedAtUs);
    if (typeof e.reason === 'string') s.reason = e.reason;
    if (typeof e.pagerPid === 'number') s.pagerPid = e.pagerPid;
    if (typeof e.pagerStartTime === 'number') s.pagerStartTime = e.pagerStartTime;
    if (e.fill !== null && typeof e.fill === 'object') s.fill = e.fill as Record<string, number>;
    if (e.state === 'restoring' && isTaskNetwork(e.taskNetwork)) s.taskNetwork = e.taskNetwork;
  }
  return s;
}

/** Removes the journals of sessions that ended longer ago than the retention, and the oldest beyond the cap. */
export async function pruneEndedJournals(workDir: string, ended: readonly JournaledSession[], log: Logger, now = Date.now()): Promise<JournaledSession[]> {
  const newestFirst = [...ended].sort((a, b) => b.at - a.at);
  const kept: JournaledSession[] = [];
  for (const [i, s] of newestFirst.entries()) {
    if (now - s.at <= ENDED_RETENTION_MS && i < MAX_ENDED_JOURNALS) {
      kept.push(s);
      continue;
    }
    const path = journalPath(destJournalDir(workDir), s.id);
    if (await stat(path).catch(() => undefined)) await removeJournal(path);
    log.info('forgot an ended session', { migrationId: s.id, state: s.state });
  }
  return kept;
}
