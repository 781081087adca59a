import { FerryError } from '../../shared/errors/ferry-error.js';

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new FerryError('NOT_ROOT');
}

/** Resolves on SIGINT or SIGTERM: daemons then roll back what is in flight and exit. */
export function untilStopped(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
