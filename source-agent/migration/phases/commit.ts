/**
 * commit, in the order that keeps at most one copy runnable at every instant:
 *   dest restored, stopped -> disarm the freeze lease -> journal "committing" -> Commit (the dest resumes its
 *   copy) -> journal "committed" -> kill the original, and wait until it is gone (kill-original.ts).
 * The lease goes first: once "committing" is on disk a restart asks the dest, and a guard that thawed the
 * original on our death would then make two copies. A crash between the two leaves the journal at
 * "restored" and the original frozen: the resolver thaws it (no Commit was sent).
 * From "committing" on, only the dest's answer decides (commit-outcome.ts asks for it): a Commit confirmed kills
 * the original; refused (the dest aborted, or its lease ran out) or never delivered (the dest unreachable at
 * every attempt) rolls back; maybe delivered and unanswered leaves the original frozen and the journal at
 * "committing", for `ferry migrate --resume` or the daemon to finish.
 * A lazy restore grows the rule by one step: once the Commit is confirmed the original is NOT killed but stays
 * frozen (journaled `committed` with `fill: 'pending'`) until the dest reports every page in its copy
 * (phases/fill.ts); from here nothing may resume it unless the dest reports FILL_FAILED. The downtime still
 * ends at the Commit's answer.
 */
import { injectFault } from '../../../shared/fault-injection.js';
import { askCommit } from '../commit-outcome.js';
import { killOriginal, type OriginalExit } from '../kill-original.js';
import type { MigrationContext } from '../migration-context.js';
import type { Frozen } from './freeze.js';
import type { Negotiated } from './negotiate.js';
import type { Prepared } from './prepare.js';

export interface Committed {
  restoredPid: number;
  /** From the freeze to the dest's copy resumed. */
  downtimeMs: number;
  commitMs: number;
  /** performance.now() at the Commit's answer: a lazy restore's fill counts from here. */
  answeredAt: number;
  /** Eager restore: the original killed and waited for (a lazy one's fill kills it). */
  originalExit?: OriginalExit;
}

export async function commit(ctx: MigrationContext, n: Negotiated, p: Prepared, f: Frozen): Promise<Committed> {
  const t0 = performance.now();
  await f.lease.disarm(); // from here the guard never thaws; the decision is ours, then the dest's answer
  injectFault('source.lease-disarmed');
  await ctx.journal.record('committing');
  injectFault('source.commit-recorded');
  p.dropStream.release();
  const outcome = await askCommit(n.dest, { migrationId: ctx.migrationId, epoch: ctx.epoch, rootPid: n.target.rootPid, to: ctx.opts.to }, ctx.log, {
    signal: ctx.signal,
    undeliveredPatienceMs: ctx.opts.undeliveredPatienceMs,
    answerPatienceMs: ctx.opts.commitPatienceMs,
  });
  if (outcome.kind !== 'committed') {
    if (outcome.kind === 'unanswered') {
      // The dest may be running the copy: resuming the original could make two. It stays frozen.
      f.thaw.release();
      p.abortDestSession.release();
    }
    throw outcome.error; // refused or undelivered: the rollback thaws the original and aborts the dest session
  }
  const { restoredPid } = outcome;
  // The copy runs on the dest: nothing may resume the original any more.
  f.thaw.release();
  p.abortDestSession.release();
  const done = performance.now();
  const committed = { restoredPid, downtimeMs: done - f.frozenAt, commitMs: done - t0, answeredAt: done };
  if (n.restore.mode === 'lazy') {
    // The copy runs on pages still coming in: the original waits, frozen, for the fill's end (phases/fill.ts).
    // A failed write leaves "committing" with the restore journaled lazy: a resolver asks, then fills too.
    await ctx.journal.record('committed', { restoredPid, fill: 'pending' }).catch((e: unknown) => ctx.log.error('journal write failed after the commit', { err: e }));
    return committed;
  }
  await ctx.journal.record('committed', { restoredPid }).catch((e: unknown) => ctx.log.error('journal write failed after the commit', { err: e }));
  injectFault('source.before-kill-original');
  const originalExit = await killOriginal(ctx, n.target.rootPid);
  ctx.sourceState = 'gone';
  return { ...committed, originalExit };
}
