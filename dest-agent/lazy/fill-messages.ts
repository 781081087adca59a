/** The Fill stream's messages on the dest: each request checked against the session's manifests, the end in wire form. */
import { FerryError } from '../../shared/errors/ferry-error.js';
import type * as m from '../../shared/transport/messages.js';
import { bitAt } from '../../shared/pages/page-bitmap.js';
import { checkMigrationId } from '../request-bounds.js';
import { MAX_REPLACE_PAGES, type PagerStats } from './pager-control.js';

/** Pages one FillRequest may name (the proto's bound). */
export const MAX_FILL_PAGES = 1024;

const invalid = (detail: string): FerryError => new FerryError('REQUEST_INVALID', { side: 'dest', phase: 'commit', detail });

/** What the Fill stream checks a request against: the restore's manifests. */
export interface FillBounds {
  /** Pages of each task's manifest. */
  pages: ReadonlyMap<number, number>;
  /** Each task's remote bitmap (post-copy: pages the dest has no bytes of), LSB first; absent or empty: none. */
  remote?: ReadonlyMap<number, Buffer>;
}

/** What one request asks of the pager, in its frames: confirmed runs, and bytes in frames of at most 64 pages. */
export type FillStep = { kind: 'confirm'; first: number; count: number } | { kind: 'replace'; first: number; count: number; data: Buffer };

/**
 * Checks a request and splits it into the pager's frames: a task of the restore, a run inside its manifest, and
 * per page either confirmed or its bytes. `with_data` (one bit per page, ceil(count/8) bytes, no bit past count)
 * says which; without it, no data means all confirmed and data means all bytes. The data must be exactly the
 * pages with bytes; a remote page is never confirmed (the dest has nothing to confirm). REQUEST_INVALID
 * otherwise. No steps for the opening message, which only names the session.
 */
export function checkFillRequest(req: m.FillRequest, bounds: FillBounds | undefined, pageSize: number): FillStep[] {
  checkMigrationId(req.migrationId, 'commit');
  const count = req.count;
  const withData = req.withData ?? Buffer.alloc(0);
  if (count === 0 && req.data.length === 0 && withData.length === 0) return [];
  if (!Number.isInteger(count) || count < 1 || count > MAX_FILL_PAGES) throw invalid(`count ${count}: 1..${MAX_FILL_PAGES}`);
  const total = bounds?.pages.get(req.task);
  if (total === undefined) throw invalid(`task ${req.task} is not in the restore`);
  const first = Number(req.firstIndex);
  if (!Number.isSafeInteger(first) || first < 0 || first + count > total) throw invalid(`pages ${req.firstIndex}+${count} outside the ${total} of task ${req.task}`);
  const mixed = withData.length > 0;
  if (mixed) {
    if (withData.length !== Math.ceil(count / 8)) throw invalid(`with_data has ${withData.length} bytes for ${count} pages`);
    if (count % 8 !== 0 && withData[withData.length - 1]! >>> (count % 8) !== 0) throw invalid(`with_data has bits past the request's ${count} pages`);
  }
  const hasData = (i: number): boolean => (mixed ? bitAt(withData, i) : req.data.length > 0);
  let withBytes = 0;
  for (let i = 0; i < count; i++) if (hasData(i)) withBytes++;
  if (req.data.length !== withBytes * pageSize) throw invalid(`${req.data.length} bytes of data for ${withBytes} pages with data`);
  const remote = bounds?.remote?.get(req.task);
  const steps: FillStep[] = [];
  let at = 0; // pages of data used so far
  for (let i = 0; i < count; ) {
    const bytes = hasData(i);
    let n = 1;
    while (i + n < count && hasData(i + n) === bytes) n++;
    if (!bytes) {
      for (let k = i; k < i + n; k++) {
        if (bitAt(remote, first + k)) throw invalid(`task ${req.task} page ${first + k} is remote: it takes the original's bytes, not a confirmation`);
      }
      steps.push({ kind: 'confirm', first: first + i, count: n });
    } else {
      for (let k = 0; k < n; k += MAX_REPLACE_PAGES) {
        const c = Math.min(MAX_REPLACE_PAGES, n - k);
        steps.push({ kind: 'replace', first: first + i + k, count: c, data: req.data.subarray((at + k) * pageSize, (at + k + c) * pageSize) });
      }
      at += n;
    }
    i += n;
  }
  return steps;
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
    remotePages: n(s.remotePages),
    waitP50Us: n(s.waitP50Us),
    waitP99Us: n(s.waitP99Us),
    waitMaxUs: n(s.waitMaxUs),
  };
}
