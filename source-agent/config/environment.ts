/**
 * The environment variables that configure the source, read and validated once (at option compile time), so
 * that nothing deeper in the code looks at process.env. The config file's [paths] (cli/config/) is the layer
 * below them: a command that read the file passes its values in. Test-only switches (FERRY_FAULT,
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

/** The config file's [paths]: a layer below the variables (an operator's FERRY_STATE_DIR=... still wins). */
export interface SourcePathsConfig {
  imagesDir?: string | undefined;
  stateDir?: string | undefined;
}

export const DEFAULT_STATE_DIR = '/var/lib/ferry';

export function defaultImagesRoot(): string {
  return process.platform === 'linux' ? '/dev/shm/ferry' : tmpdir();
}

export function readSourceEnvironment(env: NodeJS.ProcessEnv = process.env, file: SourcePathsConfig = {}): SourceEnvironment {
  return {
    imagesRoot: nonEmpty(env.FERRY_IMAGES_DIR) ?? file.imagesDir ?? defaultImagesRoot(),
    stateDir: nonEmpty(env.FERRY_STATE_DIR) ?? file.stateDir ?? DEFAULT_STATE_DIR,
    dumpMode: dumpMode(nonEmpty(env.FERRY_DUMP)),
  };
}

/** Where the source's migrations journal their decisions (source-journal.ts). */
/** Whether a variable sets this (an empty one does not), for `ferry config check`'s "where from". */
export function setInEnvironment(env: NodeJS.ProcessEnv, name: 'FERRY_IMAGES_DIR' | 'FERRY_STATE_DIR'): boolean {
  return nonEmpty(env[name]) !== undefined;
}

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
