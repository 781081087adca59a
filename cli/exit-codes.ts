/**
 * Exit codes tell the operator what matters most:
 *   0 migrated; 1 failed and the source runs; 2 bad usage or refused input, nothing touched;
 *   3 state unknown, act now; 130 interrupted and rolled back.
 */
import { FerryError } from '../shared/errors/ferry-error.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, unknown: 3, interrupted: 130 } as const;

export function exitCodeFor(e: unknown): number {
  if (!(e instanceof FerryError)) return EXIT.failed;
  if (e.key === 'CANCELLED') return e.sourceState === 'unknown' ? EXIT.unknown : EXIT.interrupted;
  // The original died before the dest held every page: nothing runs to completion, the operator must act.
  if (e.key === 'ORIGINAL_LOST') return EXIT.unknown;
  if (e.key === 'COMMIT_UNCONFIRMED' || e.sourceState === 'unknown' || e.sourceState === 'frozen') return EXIT.unknown;
  const family = e.code.charAt('FERRY-'.length);
  // Refused before anything changed: the input (pid, address, flags) or the hosts cannot do this migration.
  if ((family === '0' || family === '1') && !e.retryable) return EXIT.usage;
  return EXIT.failed;
}
