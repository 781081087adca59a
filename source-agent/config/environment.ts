/**
 * The environment variables that configure the source, read and validated once (at option compile time), so
 * that nothing deeper in the code looks at process.env. Test-only switches (FERRY_FAULT,
 * FERRY_TEST_PROTOCOL_VERSIONS) and the log level stay where they act.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';

export type DumpMode = 'auto' | 'full';

export interface SourceEnvironment {
  /** FERRY_IMAGES_DIR: where the final dump's images go (tmpfs keeps the freeze short). */
  imagesRoot: string;
  /** FERRY_STATE_DIR: what the source keeps between migrations (the learned cost model, locks, journals). */
  stateDir: string;
  /** FERRY_DUMP: `full` forces a plain criu dump; `auto` (default) dumps lazily when CRIU and the kernel can. */
  dumpMode: DumpMode;
}

export function readSourceEnvironment(env: NodeJS.ProcessEnv = process.env): SourceEnvironment {
  return {
    imagesRoot: nonEmpty(env.FERRY_IMAGES_DIR) ?? (process.platform === 'linux' ? '/dev/shm/ferry' : tmpdir()),
    stateDir: nonEmpty(env.FERRY_STATE_DIR) ?? '/var/lib/ferry',
    dumpMode: dumpMode(nonEmpty(env.FERRY_DUMP)),
  };
}

/** Where the source's migrations journal their decisions (source-journal.ts). */
export function sourceJournalDir(env: SourceEnvironment): string {
  return join(env.stateDir, 'source', 'journal');
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function dumpMode(v: string | undefined): DumpMode {
  if (v === undefined || v === 'auto') return 'auto';
  if (v === 'full') return 'full';
  throw new FerryError('BAD_ARGUMENT', { message: `FERRY_DUMP must be auto or full (got "${v}")`, hint: 'Unset it to dump lazily when possible.' });
}
