/**
 * Numbered-point fault injection for tests (in the spirit of CRIU_FAULT): FERRY_FAULT is a comma-separated
 * list of point names; reaching a listed point throws (or the caller applies the named damage). Production
 * runs never set it; every point is exercised by the end-to-end tests.
 */
import { FerryError } from './errors/ferry-error.js';

export const FAULT_POINTS = [
  // The source fails right after entering the phase: every phase's rollback is tested this way.
  'source.prepare',
  'source.precopy',
  'source.freeze',
  'source.final-delta',
  'source.restore',
  'source.commit',
  // The dest corrupts one stored page before the rebuild: the hash check must refuse the restore.
  'dest.corrupt-store',
  // The dest removes pstree.img before restoring: CRIU itself fails.
  'dest.restore-fails',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

function armed(): Set<string> {
  return new Set((process.env.FERRY_FAULT ?? '').split(',').map((s) => s.trim()).filter(Boolean));
}

export function faultArmed(point: FaultPoint): boolean {
  return armed().has(point);
}

/** Throws an INTERNAL error naming the point when FERRY_FAULT lists it. */
export function injectFault(point: FaultPoint): void {
  if (faultArmed(point)) throw new FerryError('INTERNAL', { message: `Injected fault at ${point}`, detail: 'FERRY_FAULT is set' });
}
