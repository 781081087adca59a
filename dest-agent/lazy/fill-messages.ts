/** The Fill stream's messages on the dest: each request checked against the session's manifests, the end in wire form. */
import { FerryError } from '../../shared/errors/ferry-error.js';
import type * as m from '../../shared/transport/messages.js';
import { checkMigrationId } from '../request-bounds.js';
import type { PagerStats } from './pager-control.js';

/** Pages one FillRequest may name (the proto's bound). */
export const MAX_FILL_PAGES = 1024;

const invalid = (detail: string): FerryError => new FerryError('REQUEST_INVALID', { side: 'dest', phase: 'commit', detail });

/**
 * The pages a request names, after checking it: a task of the restore, a run inside its manifest, and either no
 * data (confirmed) or exactly their bytes. 0 for the opening message, which only names the session.
 */
export function checkFillRequest(req: m.FillRequest, pagesOf: ReadonlyMap<number, number> | undefined, pageSize: number): number {
  checkMigrationId(req.migrationId, 'commit');
  const count = req.count;
  if (count === 0 && req.data.length === 0) return 0;
  if (!Number.isInteger(count) || count < 1 || count > MAX_FILL_PAGES) throw invalid(`count ${count}: 1..${MAX_FILL_PAGES}`);
  const total = pagesOf?.get(req.task);
  if (total === undefined) throw invalid(`task ${req.task} is not in the restore`);
  const first = Number(req.firstIndex);
  if (!Number.isSafeInteger(first) || first < 0 || first + count > total) throw invalid(`pages ${req.firstIndex}+${count} outside the ${total} of task ${req.task}`);
  if (req.data.length !== 0 && req.data.length !== count * pageSize) throw invalid(`${req.data.length} bytes of data for ${count} pages`);
  return count;
}

export function fillDone(st: Partial<PagerStats> | Record<string, number>): m.FillDone {
  const n = (v: unknown): string => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? String(v) : '0');
  const s = st as Record<string, unknown>;
  return {
    filledPages: n(s.filledPages),
    faults: n(s.faults),
    replacedPages: n(s.replacedPages),
    damagedPages: n(s.damagedPages),
    zeroPages: n(s.zeroPages),
    fillUs: n(s.fillUs),
    faultsWaited: n(s.faultsWaited),
  };
}
