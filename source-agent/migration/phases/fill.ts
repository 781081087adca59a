/**
 * fill (lazy restore only), after the Commit was confirmed: the copy runs on the dest while its pager pages its
 * memory in; the source confirms the pages it trusted to its tracker against the frozen original
 * (pages/confirm-pages.ts) and the dest says when every page is in. Then, and only then, the original dies:
 *   done         journal `filled` -> SIGKILL the original -> (the orchestrator journals done)
 *   FILL_FAILED  the dest killed its copy (its pager died or failed): the original is thawed, exactly one copy
 *                runs again, from the freeze point (what the copy did since its resume is lost)
 *   no answer    for --commit-patience since the dest's last event: the original stays frozen, the journal at
 *                `committed` with the fill pending, exit 3 naming `ferry migrate --resume ID`
 *   lost         the original is gone while the dest still lacks pages: ORIGINAL_LOST, exit 3, the copy on the
 *                dest named for the operator to kill (post-copy's one unrecoverable case)
 * The downtime ended at the Commit's answer; nothing here is inside it.
 */
import { injectFault } from '../../../shared/fault-injection.js';
import { FerryError } from '../../../shared/errors/ferry-error.js';
import type { FillResult } from '../../pages/confirm-pages.js';
import type { MigrationContext } from '../migration-context.js';
import type { Committed } from './commit.js';
import type { Frozen } from './freeze.js';
import type { Negotiated } from './negotiate.js';
import type { Restored } from './restore.js';
import { killOriginal, type OriginalExit } from '../kill-original.js';

export interface Filled extends FillResult {
  /** From the Commit's answer to the dest's done. */
  fillMs: number;
  originalExit: OriginalExit;
}

export async function fill(ctx: MigrationContext, n: Negotiated, r: Restored, c: Committed, f: Frozen): Promise<Filled> {
  const rootPid = n.target.rootPid;
  if (!r.fill) throw new FerryError('INTERNAL', { phase: 'fill', side: 'source', detail: 'a lazy restore without its fill' });
  // Opened beside the Restore (phases/restore.ts); from the Commit's answer on it sweeps every unconfirmed page.
  r.fill.startSweep();
  const outcome = await r.fill.outcome;
  if (outcome.kind === 'failed') {
    // The dest killed its copy: the original is the one copy left, and it must run again.
    await f.resume();
    ctx.log.warn('the dest fill failed: its copy was killed; the original thawed', { err: outcome.error });
    const e = outcome.error.key === 'FILL_FAILED' ? outcome.error : new FerryError('FILL_FAILED', { cause: outcome.error });
    e.phase = 'fill';
    e.sourceState = 'running';
    throw e;
  }
  if (outcome.kind === 'unanswered') throw outcome.error;
  if (outcome.kind === 'lost') {
    // Nothing to thaw, nothing to kill: the one unrecoverable case; the error names the copy to kill on the dest.
    ctx.sourceState = 'gone';
    throw outcome.error;
  }
  const { result } = outcome;
  const fillMs = performance.now() - c.answeredAt;
  const d = result.done;
  await ctx.journal
    .record('filled', { filledPages: Number(d.filledPages), faults: Number(d.faults), faultsWaited: Number(d.faultsWaited), replacedPages: result.replacedPages, fillUs: Number(d.fillUs) })
    .catch((e: unknown) => ctx.log.error('journal write failed after the fill', { err: e }));
  injectFault('source.before-kill-original');
  const originalExit = await killOriginal(ctx, rootPid);
  ctx.sourceState = 'gone';
  ctx.log.info('fill done: the original killed', {
    fillMs: Math.round(fillMs),
    confirmedPages: result.confirmedPages,
    replacedPages: result.replacedPages,
    wantedPages: result.wantedPages,
    faults: Number(d.faults),
    faultsWaited: Number(d.faultsWaited),
    calls: result.calls,
  });
  return { ...result, fillMs, originalExit };
}
