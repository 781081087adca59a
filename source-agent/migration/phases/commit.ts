/**
 * commit, in the order that keeps at most one copy runnable at every instant:
 *   dest restored, stopped -> disarm the freeze lease -> Commit (the dest resumes its copy) -> kill the original.
 * Commit is idempotent on the dest, so an unanswered one is retried; if it stays unanswered the outcome is
 * unknown and the original stays frozen (never thawed, never killed) for the operator to decide.
 */
import { FerryError } from '../../../shared/errors/ferry-error.js';
import type { Logger } from '../../../shared/logging/logger.js';
import type { MigrationContext } from '../migration-context.js';
import type { DestPort } from '../ports.js';
import type { Frozen } from './freeze.js';
import type { Negotiated } from './negotiate.js';
import type { Prepared } from './prepare.js';

const COMMIT_ATTEMPTS = 5;

export interface Committed {
  restoredPid: number;
  /** From the freeze to the dest's copy resumed. */
  downtimeMs: number;
  commitMs: number;
}

export async function commit(ctx: MigrationContext, n: Negotiated, p: Prepared, f: Frozen): Promise<Committed> {
  const t0 = performance.now();
  await f.lease.disarm(); // from here the guard never thaws; the decision is ours
  p.dropStream.release();
  let restoredPid: number;
  try {
    ({ restoredPid } = await commitWithRetry(n.dest, ctx.migrationId, ctx.epoch, ctx.log));
  } catch (e) {
    if (e instanceof FerryError && e.key === 'COMMIT_UNCONFIRMED') {
      // The dest may be running the copy: resuming the original could make two. It stays frozen.
      f.thaw.release();
      p.abortDestSession.release();
    }
    throw e;
  }
  // The copy runs on the dest: nothing may resume the original any more.
  f.thaw.release();
  p.abortDestSession.release();
  const done = performance.now();
  ctx.host.signalTree(n.target.rootPid, 'SIGKILL');
  ctx.sourceState = 'gone';
  return { restoredPid, downtimeMs: done - f.frozenAt, commitMs: done - t0 };
}

async function commitWithRetry(dest: DestPort, migrationId: string, epoch: string, log: Logger): Promise<{ restoredPid: number }> {
  let last: unknown;
  for (let attempt = 1; attempt <= COMMIT_ATTEMPTS; attempt++) {
    try {
      return await dest.commit({ migrationId, epoch });
    } catch (e) {
      // The dest answered and refused (it holds no restored copy of ours under this epoch): safe to thaw.
      // Not SESSION_NOT_FOUND: a dest that restarted after committing no longer knows the session.
      if (e instanceof FerryError && (e.key === 'COMMIT_REJECTED' || e.key === 'SESSION_EPOCH_MISMATCH')) throw e;
      last = e;
      log.warn('commit unanswered, retrying', { attempt, err: e });
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
  throw new FerryError('COMMIT_UNCONFIRMED', { phase: 'commit', side: 'source', sourceState: 'frozen', cause: last });
}
