import { FerryError } from '../../shared/errors/ferry-error.js';

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new FerryError('NOT_ROOT');
}

/**
 * Resolves on SIGINT or SIGTERM: daemons then roll back what is in flight and exit. Call it before the agent
 * starts: a signal that came during the start (or just after the listening line, before a later call could
 * install the handler) would otherwise kill the process with nothing closed.
 */
export function untilStopped(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
