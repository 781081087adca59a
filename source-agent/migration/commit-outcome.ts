/**
 * Asking the dest whether a migration committed, by sending Commit until it answers (Commit is idempotent on
 * the dest: a committed session answers again, for as long as the dest keeps its journal). The answer is one of
 *   committed    the dest runs the copy: the original must die
 *   refused      the dest holds no copy of ours and never will (it aborted, its lease ran out, it never had
 *                the session): thawing the original is safe
 *   undelivered  no attempt could have reached the dest (the channel never connected): nothing resumed there
 *   unanswered   an attempt may have reached it and none was answered: the outcome is the dest's to tell
 * Only the process that sent every attempt may trust "undelivered"; a resolver after a crash may not (the dead
 * process may have delivered one), so it treats it as unanswered.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import type { Logger } from '../../shared/logging/logger.js';
import type { DestPort } from './ports.js';

/**
 * How long the dest keeps a restored, stopped copy waiting for Commit (the Restore request tells it). It covers
 * the source's patience for an unreachable dest with room to spare; past it the dest removes the copy, and a
 * later Commit is refused, so that a source that died leaves no stopped duplicate for long.
 */
export const COMMIT_LEASE_MS = 30_000;
const REACHABLE_WAIT_MS = 2_000;

export type CommitOutcome =
  | { kind: 'committed'; restoredPid: number }
  | { kind: 'refused'; error: FerryError }
  | { kind: 'undelivered'; error: FerryError }
  | { kind: 'unanswered'; error: FerryError };

export interface CommitTarget {
  migrationId: string;
  epoch: string;
  /** For the messages: the original and where the copy is. */
  rootPid: number;
  to: string;
}

export interface AskOptions {
  signal?: AbortSignal | undefined;
  /** Return "undelivered" once the dest stayed unreachable this long at every attempt (only the sender may). */
  undeliveredPatienceMs: number | undefined;
  /** Return "unanswered" after this long. */
  answerPatienceMs: number;
}

/** Keys of an answer that proves the dest holds no copy of this migration and will never resume one. */
const REFUSALS = new Set(['COMMIT_REJECTED', 'SESSION_EPOCH_MISMATCH', 'SESSION_NOT_FOUND']);

export async function askCommit(dest: DestPort, t: CommitTarget, log: Logger, o: AskOptions): Promise<CommitOutcome> {
  const started = Date.now();
  const patience = o.answerPatienceMs;
  let maybeDelivered = false;
  let last: unknown;
  for (let attempt = 1; ; attempt++) {
    const waited = Date.now() - started;
    if (!maybeDelivered && o.undeliveredPatienceMs !== undefined && (waited >= o.undeliveredPatienceMs || o.signal?.aborted)) {
      return {
        kind: 'undelivered',
        error: new FerryError('COMMIT_UNDELIVERED', { phase: 'commit', side: 'source', detail: `${t.to} unreachable for ${waited} ms; no Commit left this host`, cause: last }),
      };
    }
    if (waited >= patience || o.signal?.aborted) return { kind: 'unanswered', error: unresolvedError(t, last) };
    if (!(await dest.reachable(REACHABLE_WAIT_MS))) {
      last = new Error(`${t.to} unreachable`);
      continue; // reachable() waited: no busy loop
    }
    maybeDelivered = true;
    try {
      const r = await dest.commit({ migrationId: t.migrationId, epoch: t.epoch });
      return { kind: 'committed', restoredPid: r.restoredPid };
    } catch (e) {
      if (e instanceof FerryError && REFUSALS.has(e.key)) {
        return { kind: 'refused', error: e.key === 'COMMIT_REJECTED' ? e : new FerryError('COMMIT_REJECTED', { phase: 'commit', side: 'dest', detail: e.message, cause: e }) };
      }
      last = e;
      log.warn('commit unanswered, asking again', { attempt, err: e });
      await new Promise((r) => setTimeout(r, Math.min(2_000, 200 * attempt)));
    }
  }
}

/** The error of a Commit that may have been delivered and was not answered: what exists where, and what to run. */
export function unresolvedError(t: CommitTarget, cause: unknown): FerryError {
  return new FerryError('COMMIT_UNCONFIRMED', {
    phase: 'commit',
    side: 'source',
    sourceState: 'frozen',
    detail:
      `the original (pid ${t.rootPid}) is frozen on this host; a Commit may have reached the dest ${t.to}, which resumes its copy only on a Commit ` +
      `and removes it when its lease ends. Run \`ferry migrate --resume ${t.migrationId}\` once the dest is reachable: it asks the dest, then kills or thaws the original.`,
    cause,
  });
}

/**
 * The error of a lazy restore's fill that the dest stopped answering: the copy runs on the dest, its pages not
 * all in; the original stays frozen here until the dest says the fill is done (kill it) or failed (thaw it).
 */
export function fillUnresolvedError(t: CommitTarget & { restoredPid: number }, cause: unknown): FerryError {
  return new FerryError('MIGRATION_UNRESOLVED', {
    phase: 'fill',
    side: 'source',
    sourceState: 'frozen',
    detail:
      `the dest ${t.to} runs the copy (pid ${t.restoredPid}) and has not reported every page in; the original (pid ${t.rootPid}) stays frozen on this host until it does. ` +
      `Run \`ferry migrate --resume ${t.migrationId}\` once the dest is reachable: it finishes the fill, then kills the original (or thaws it if the dest says the fill failed).`,
    cause,
  });
}

/**
 * The error of a fill whose frozen original is gone while pages are still owed (post-copy: the only full copy of
 * the remote pages; lazy: the only proof of the unconfirmed ones): the copy on the dest waits on them forever.
 */
export function originalLostError(t: CommitTarget & { restoredPid: number }, cause: unknown): FerryError {
  const pid = t.restoredPid > 0 ? String(t.restoredPid) : '?';
  return new FerryError('ORIGINAL_LOST', {
    phase: 'fill',
    side: 'source',
    sourceState: 'gone',
    message: `the frozen original is gone before the dest held every page: the copy on ${t.to} (pid ${pid}) waits on pages that exist nowhere now and cannot be completed`,
    hint: `Kill that copy on the dest (\`kill -9 ${pid}\` on ${t.to}) and restart the task from its own persistent state: migration ${t.migrationId} cannot be completed.`,
    detail: `the original (pid ${t.rootPid}) was frozen on this host until the dest held every page; it is gone (${cause instanceof Error ? cause.message : String(cause)})`,
    cause,
  });
}
