/** The phases of a migration: one union used in logs, metrics, errors and the proto enum. */
export const PHASES = [
  'negotiate',
  'prepare',
  'precopy',
  'freeze',
  'final-delta',
  'restore',
  'commit',
  // After the commit of a lazy restore: the source confirms its trusted pages and the dest fills the copy.
  // Its errors are in the commit family (FILL_FAILED is FERRY-7005).
  'fill',
  'rollback',
] as const;
export type Phase = (typeof PHASES)[number];

export type Side = 'source' | 'dest';

/** What the operator most needs to know after a failure: is the task still running at the source? */
export type SourceState = 'running' | 'frozen' | 'gone' | 'unknown';
