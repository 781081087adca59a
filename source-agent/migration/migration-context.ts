/** What every phase of one migration shares: its identity, options, the world it acts on, and its undo stack. */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../shared/logging/logger.js';
import type { Phase, SourceState } from '../../shared/phases.js';
import type { MigrationAnnouncer } from './announcer.js';
import type { CompiledMigrateOptions } from '../config/migrate-options.js';
import type { JournalPort, SourceHost } from './ports.js';
import type { RollbackStack } from './rollback-stack.js';

/**
 * The dest session's epoch: 64 random bits drawn once per migration (never 0, proto3's "unset"). Every call
 * of the migration carries it and the dest refuses any other, so a peer that guessed or saw the migration id
 * still cannot drive or abort its session.
 */
export function drawEpoch(): string {
  for (;;) {
    const e = randomBytes(8).readBigUInt64LE();
    if (e !== 0n) return e.toString();
  }
}

export interface MigrationContext {
  readonly migrationId: string;
  /** The dest session's epoch (drawEpoch), as the proto's uint64 in decimal. */
  readonly epoch: string;
  readonly opts: CompiledMigrateOptions;
  readonly host: SourceHost;
  readonly log: Logger;
  readonly signal: AbortSignal;
  readonly rollback: RollbackStack;
  readonly announcer: MigrationAnnouncer;
  /** Written at the decision points (source-journal.ts); opened once negotiate succeeded. */
  journal: JournalPort;
  /** The phase in progress; only the orchestrator moves it. */
  readonly phase: Phase;
  /** The pre-copy round in progress (0-based), on every log line with the phase; precopy moves it, a new phase clears it. */
  round: number | undefined;
  /** Whether the original runs, is frozen or is gone: reported with any failure. */
  sourceState: SourceState;
}
