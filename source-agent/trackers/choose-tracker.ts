/**
 * --tracker auto|soft-dirty|uffd-wp|hash. `auto` prefers soft-dirty (pagemap bit 55: pre-copy rounds read only the
 * pages written since the last round, no injection into the task), then uffd-wp (the same exactness through a
 * userfaultfd injected into the task, Linux >= 6.7), then hash (reads all present memory each round, works
 * everywhere). Each is probed for real on this kernel, and a fallback says why in words.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { SoftDirtyTracker } from './soft-dirty/soft-dirty-tracker.js';
import type { TrackerChoice, TrackerName } from './tracker.js';
import { UffdWpTracker } from './uffd-wp/uffd-wp-tracker.js';

export interface TrackerAvailability {
  name: TrackerName;
  ok: boolean;
  /** Why it is or is not available, in words. */
  reason: string;
}

export async function trackerAvailability(): Promise<TrackerAvailability[]> {
  const soft = await SoftDirtyTracker.probe();
  const uffd = await UffdWpTracker.probe();
  return [
    { name: 'soft-dirty', ok: soft.ok, reason: soft.ok ? `clear_refs and pagemap bit 55 work here (${soft.method === 'scan' ? 'PAGEMAP_SCAN' : 'pagemap read'})` : soft.reason },
    { name: 'uffd-wp', ok: uffd.ok, reason: uffd.ok ? 'userfaultfd write-protect (async) and PAGEMAP_SCAN work here' : uffd.reason },
    { name: 'hash', ok: true, reason: 'works on any kernel; reads all present memory each round' },
  ];
}

/** The names of the trackers that work on this host, for Negotiate and `ferry check`. */
export async function availableTrackers(): Promise<TrackerName[]> {
  return (await trackerAvailability()).filter((t) => t.ok).map((t) => t.name);
}

function unavailable(name: TrackerName, reason: string): FerryError {
  return new FerryError('TRACKER_UNAVAILABLE', { phase: 'negotiate', side: 'source', sourceState: 'running', detail: `${name}: ${reason}` });
}

export async function chooseTracker(choice: TrackerChoice): Promise<{ name: TrackerName; note: string }> {
  if (choice === 'hash') return { name: 'hash', note: 'hash tracker (as asked)' };
  const skipped: string[] = [];
  if (choice === 'auto' || choice === 'soft-dirty') {
    const soft = await SoftDirtyTracker.probe();
    if (soft.ok) return { name: 'soft-dirty', note: choice === 'auto' ? 'soft-dirty tracker (auto: soft-dirty works on this kernel)' : 'soft-dirty tracker (as asked)' };
    if (choice === 'soft-dirty') throw unavailable('soft-dirty', soft.reason);
    skipped.push(`soft-dirty is not available here: ${soft.reason}`);
  }
  const uffd = await UffdWpTracker.probe();
  if (uffd.ok) {
    const why = choice === 'auto' ? `auto: ${skipped[0]}; exact write tracking by uffd-wp works here` : 'as asked';
    return { name: 'uffd-wp', note: `uffd-wp tracker (${why})` };
  }
  if (choice === 'uffd-wp') throw unavailable('uffd-wp', uffd.reason);
  skipped.push(`uffd-wp is not available here: ${uffd.reason}`);
  return { name: 'hash', note: `hash tracker (auto: ${skipped.join('; ')})` };
}
