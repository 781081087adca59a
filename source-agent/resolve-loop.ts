/**
 * The source agent daemon finishes every migration whose process died (its own before a restart, or a
 * `ferry migrate` killed on this host): at start, then every RESOLVE_INTERVAL_MS while it runs, each journal
 * not done and not locked by a live migration is resolved (migration/resolver.ts). One the dest does not
 * answer stays frozen and is asked again on the next pass, for as long as the daemon runs.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Logger } from '../shared/logging/logger.js';
import type { TransportSecurity } from '../shared/transport/transport-security.js';
import { ANSWER_PATIENCE_MS } from './config/migrate-options.js';
import { connectGrpcDest } from './migration/ports.js';
import { resolveMigration, unresolvedMigrations } from './migration/resolver.js';

export const RESOLVE_INTERVAL_MS = 30_000;

export interface ResolveLoop {
  /** Resolves once the pass in progress (if any) ended. */
  stop(): Promise<void>;
  /** One pass now (tests, and the start); resolves when it ended. */
  pass(): Promise<void>;
}

export function startResolveLoop(o: { journalDir: string; dialSecurity: TransportSecurity; log: Logger; intervalMs?: number }): ResolveLoop {
  const controller = new AbortController();
  const log = o.log.child({ part: 'resolver' });
  let running: Promise<void> = Promise.resolve();
  const onePass = async (): Promise<void> => {
    for (const m of await unresolvedMigrations(o.journalDir, log)) {
      if (controller.signal.aborted) return;
      try {
        const r = await resolveMigration(m.migrationId, {
          journalDir: o.journalDir,
          connectDest: (address, timeoutMs, signal) => connectGrpcDest(address, timeoutMs, signal, o.dialSecurity),
          log,
          signal: controller.signal,
          answerPatienceMs: Math.min(ANSWER_PATIENCE_MS, o.intervalMs ?? RESOLVE_INTERVAL_MS),
        });
        log.info('migration resolved', { migrationId: r.migrationId, outcome: r.outcome, detail: r.detail });
      } catch (e) {
        if (e instanceof FerryError && e.key === 'MIGRATION_IN_PROGRESS') continue; // its own process finishes it
        log.warn('migration not resolved yet: asking again on the next pass', { migrationId: m.migrationId, err: e });
      }
    }
  };
  const pass = (): Promise<void> => {
    running = running.then(onePass).catch((e: unknown) => log.error('resolver pass failed', { err: e }));
    return running;
  };
  const timer = setInterval(() => void pass(), o.intervalMs ?? RESOLVE_INTERVAL_MS);
  timer.unref();
  void pass();
  return {
    pass,
    stop: async () => {
      clearInterval(timer);
      controller.abort();
      await running;
    },
  };
}
