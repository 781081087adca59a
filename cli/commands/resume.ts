/**
 * `ferry migrate --resume ID|all`: finishes migrations whose `ferry migrate` (or source agent) died, from their
 * journals on this host (source-agent/migration/resolver.ts), and says what exists where once it is done.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createLogger } from '../../shared/logging/logger.js';
import type { TransportSecurity } from '../../shared/transport/transport-security.js';
import { readSourceEnvironment, sourceJournalDir, type SourceEnvironment } from '../../source-agent/config/environment.js';
import { ANSWER_PATIENCE_MS } from '../../source-agent/config/migrate-options.js';
import { connectGrpcDest } from '../../source-agent/migration/ports.js';
import { resolveMigration, unresolvedMigrations, type Resolution } from '../../source-agent/migration/resolver.js';
import { EXIT, exitCodeFor } from '../exit-codes.js';
import { formatError } from '../render.js';

export async function resumeCommand(
  which: string,
  security: TransportSecurity,
  json: boolean,
  answerPatienceMs = ANSWER_PATIENCE_MS,
  environment: SourceEnvironment = readSourceEnvironment(),
): Promise<number> {
  const journalDir = sourceJournalDir(environment);
  const log = createLogger({ side: 'source' }, undefined, 'silent');
  const ids = which === 'all' ? (await unresolvedMigrations(journalDir, log)).map((m) => m.migrationId) : [which];
  if (ids.length === 0 && !json) console.log('nothing to resume: every migration journaled on this host has ended');
  const controller = new AbortController();
  const onSignal = (): void => controller.abort(new FerryError('CANCELLED', { side: 'source' }));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let exit: number = EXIT.ok;
  try {
    for (const id of ids) {
      try {
        const r = await resolveMigration(id, {
          journalDir,
          connectDest: (address, timeoutMs, signal) => connectGrpcDest(address, timeoutMs, signal, security),
          log,
          signal: controller.signal,
          answerPatienceMs,
        });
        if (r.outcome === 'rolled-back' && exit === EXIT.ok) exit = EXIT.failed;
        if (r.outcome === 'original-lost') exit = EXIT.unknown;
        print(r, json);
      } catch (e) {
        // One migration's failure is reported and the others still resolve; `ferry migrate --resume ID` fails whole.
        if (ids.length === 1) throw e;
        const code = exitCodeFor(e);
        exit = code === EXIT.unknown || exit === EXIT.unknown ? EXIT.unknown : Math.max(exit, code);
        if (json) console.log(JSON.stringify({ kind: 'error', migrationId: id, error: e instanceof FerryError ? e.toJSON() : { message: String(e) } }));
        else console.error(e instanceof FerryError ? formatError(e) : String(e));
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return exit;
}

function print(r: Resolution, json: boolean): void {
  if (json) console.log(JSON.stringify({ kind: 'resolved', ...r }));
  else console.log(`migration ${r.migrationId}: ${r.alreadyDone ? 'had already ended: ' : ''}${r.outcome === 'migrated' ? 'migrated' : r.outcome === 'original-lost' ? 'the original was lost' : 'rolled back'}; ${r.detail}`);
}
