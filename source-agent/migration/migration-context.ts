/** What every phase of one migration shares: its identity, options, the world it acts on, and its undo stack. */
import type { Logger } from '../../shared/logging/logger.js';
import type { Phase, SourceState } from '../../shared/phases.js';
import type { MigrationAnnouncer } from './announcer.js';
import type { CompiledMigrateOptions } from '../config/migrate-options.js';
import type { SourceHost } from './ports.js';
import type { RollbackStack } from './rollback-stack.js';

/** The dest session's epoch: one per migration until a restarted source can resume one (a later issue). */
export const EPOCH = '1';

export interface MigrationContext {
  readonly migrationId: string;
  readonly opts: CompiledMigrateOptions;
  readonly host: SourceHost;
  readonly log: Logger;
  readonly signal: AbortSignal;
  readonly rollback: RollbackStack;
  readonly announcer: MigrationAnnouncer;
  /** The phase in progress; only the orchestrator moves it. */
  readonly phase: Phase;
  /** Whether the original runs, is frozen or is gone: reported with any failure. */
  sourceState: SourceState;
}
