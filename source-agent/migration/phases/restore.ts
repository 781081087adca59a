/**
 * restore: the dest rebuilds the images from its page store and restores the tree, stopped. Beside it, when the
 * tracker's word decided what was sent, every dumped page is read back and compared (a missed write rolls back).
 */
import { COMMIT_LEASE_MS } from '../commit-outcome.js';
import type { MigrationContext } from '../migration-context.js';
import { verifyDumpedPages } from '../../pages/final-delta-pages.js';
import type { DeltaSent } from './final-delta.js';
import type { Frozen } from './freeze.js';
import type { Negotiated } from './negotiate.js';

export interface Restored {
  restoredPid: number;
  rebuildMs: number;
  restoreMs: number;
}

export async function restore(ctx: MigrationContext, n: Negotiated, f: Frozen, d: DeltaSent): Promise<Restored> {
  const { opts } = ctx;
  const restoring = n.dest.restore(
    { migrationId: ctx.migrationId, epoch: ctx.epoch, pages: d.delta.manifests, timeoutMs: opts.restoreTimeoutMs, commitLeaseMs: COMMIT_LEASE_MS },
    ctx.signal,
  );
  const checking = d.delta.trustedPages > 0 ? verifyDumpedPages(f.imagesDir, d.delta.manifests, ctx.host.pageSize, d.readTask) : Promise.resolve(0);
  const [restored, checked] = await Promise.allSettled([restoring, checking]);
  // A missed write outranks whatever the restore did: the rollback removes the dest's copy either way.
  if (checked.status === 'rejected') throw checked.reason;
  if (restored.status === 'rejected') throw restored.reason;
  if (checked.value > 0) ctx.log.info('tracker checked', { pages: checked.value, trustedPages: d.delta.trustedPages });
  const r = restored.value;
  return { restoredPid: r.restoredPid, rebuildMs: Number(r.rebuildUs) / 1000, restoreMs: Number(r.restoreUs) / 1000 };
}
