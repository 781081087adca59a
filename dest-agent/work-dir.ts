/**
 * The dest's work dir is Ferry's alone, and Ferry removes only what it made there. A directory Ferry creates
 * (or finds empty) gets the marker `.ferry-work-dir`; a non-empty directory without it is refused
 * (WORK_DIR_FOREIGN) before anything is touched, so `--work-dir /var/lib` never wipes /var/lib. Inside, a
 * session dir is named by its migration id (MIGRATION_ID) and holds its own marker naming that id: only such a
 * dir is ever removed as a session left by a previous agent.
 */
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { MIGRATION_ID } from './request-bounds.js';

export const WORK_DIR_MARKER = '.ferry-work-dir';
export const SESSION_MARKER = '.ferry-session';
/** CRIU's logs: kept across sessions; only the oldest of those Ferry named are removed, past their bound (criu-log-files.ts). */
export const LOGS_DIR = 'logs';

const foreign = (dir: string, why: string): FerryError => new FerryError('WORK_DIR_FOREIGN', { side: 'dest', detail: `${dir}: ${why}` });

/**
 * Makes the work dir (mode 0700, marked), adopts an empty one, accepts a marked one; refuses anything else.
 * Idempotent.
 */
export async function openWorkDir(dir: string): Promise<void> {
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } else {
    if (!st.isDirectory()) throw foreign(dir, st.isSymbolicLink() ? 'is a symbolic link' : 'is not a directory');
    const marker = await lstat(join(dir, WORK_DIR_MARKER)).catch(() => undefined);
    if (marker?.isFile()) return;
    const entries = await readdir(dir);
    if (entries.length > 0) throw foreign(dir, `holds ${entries.length} entries and no ${WORK_DIR_MARKER}: Ferry did not make it`);
  }
  await writeFile(join(dir, WORK_DIR_MARKER), 'This directory belongs to a ferry dest agent: it removes the session dirs it made here.\n', { flag: 'w' });
}

/** Marks a new session dir as Ferry's, with the id it is named by. */
export async function markSessionDir(sessionDir: string, id: string): Promise<void> {
  await writeFile(join(sessionDir, SESSION_MARKER), `${id}\n`);
}

/** The session dirs a previous agent left: named like a migration id, a real directory, marked with that id. */
export async function sessionDirsIn(workDir: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(workDir)) {
    if (!MIGRATION_ID.test(name)) continue;
    const dir = join(workDir, name);
    const st = await lstat(dir).catch(() => undefined);
    if (!st?.isDirectory()) continue; // a symbolic link named like a session is never followed
    const marker = await readFile(join(dir, SESSION_MARKER), 'utf8').catch(() => undefined);
    if (marker?.trim() === name) found.push(name);
  }
  return found;
}
