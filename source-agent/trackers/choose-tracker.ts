/**
 * --tracker auto|uffd-wp|hash. `auto` prefers uffd-wp (exact write tracking: pre-copy rounds read only the
 * pages written since the last round), probed for real on this kernel, and falls back to hash (reads all
 * present memory each round, works everywhere), saying why in words. Soft-dirty is not built yet.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import type { TrackerChoice, TrackerName } from './tracker.js';
import { UffdWpTracker } from './uffd-wp/uffd-wp-tracker.js';

export interface TrackerAvailability {
  name: TrackerName | 'soft-dirty';
  ok: boolean;
  /** Why it is or is not available, in words. */
  reason: string;
}

export async function trackerAvailability(): Promise<TrackerAvailability[]> {
  const uffd = await UffdWpTracker.probe();
  return [
    { name: 'soft-dirty', ok: false, reason: 'not built yet in this release' },
    { name: 'uffd-wp', ok: uffd.ok, reason: uffd.ok ? 'userfaultfd write-protect (async) and PAGEMAP_SCAN work here' : uffd.reason },
    { name: 'hash', ok: true, reason: 'works on any kernel; reads all present memory each round' },
  ];
}

export async function chooseTracker(choice: TrackerChoice): Promise<{ name: TrackerName; note: string }> {
  if (choice === 'hash') return { name: 'hash', note: 'hash tracker (as asked)' };
  const uffd = await UffdWpTracker.probe();
  if (uffd.ok) return { name: 'uffd-wp', note: choice === 'auto' ? 'uffd-wp tracker (auto: exact write tracking works here)' : 'uffd-wp tracker (as asked)' };
  if (choice === 'uffd-wp') {
    throw new FerryError('TRACKER_UNAVAILABLE', { phase: 'negotiate', side: 'source', sourceState: 'running', detail: `uffd-wp: ${uffd.reason}` });
  }
  return { name: 'hash', note: `hash tracker (auto: uffd-wp is not available here: ${uffd.reason})` };
}
