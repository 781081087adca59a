/**
 * The CRIU log files Ferry names, and their bound. Each dump and restore leaves its log (and, when criu
 * printed anything or died, its stdout+stderr beside it) in a logs dir kept across migrations for diagnosis:
 * on the source that is `<imagesRoot>/logs`, on /dev/shm by default, so in RAM. About 240 KB per migration,
 * for ever, unless pruned: `pruneCriuLogs` runs before each dump and each restore and keeps the newest.
 */
import { lstat, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export type CriuRunKind = 'dump' | 'restore';

export interface CriuLogBounds {
  maxFiles: number;
  maxBytes: number;
}

/**
 * 64 files are the last 32 migrations or more (a log and sometimes its output each), plenty to diagnose the
 * latest failures; 32 MiB holds well over a hundred typical logs (-v4 dump ~200 KB) and caps the RAM they take
 * on tmpfs even when one run logged a lot (a spinning restorer writes MBs per second).
 */
export const CRIU_LOG_BOUNDS: CriuLogBounds = { maxFiles: 64, maxBytes: 32 * 1024 * 1024 };

/** A migration id (source: a UUID; dest: MIGRATION_ID), the run, `.log`, and `.out` for criu's own output. */
const FERRY_CRIU_LOG = /^[A-Za-z0-9-]{8,64}-(?:dump|restore)\.log(?:\.out)?$/;

/** The log file name of a migration's dump or restore. */
export function criuLogFileName(migrationId: string, run: CriuRunKind): string {
  const name = `${migrationId}-${run}.log`;
  if (!FERRY_CRIU_LOG.test(name)) throw new RangeError(`not a migration id: ${JSON.stringify(migrationId.slice(0, 80))}`);
  return name;
}

/** Where criu's stdout and stderr go: a file, never a pipe that a dead agent would break (SIGPIPE). */
export function criuOutputFile(logFile: string): string {
  return `${logFile}.out`;
}

/** How much of criu's output an error quotes: criu prints little there, its log has the detail. */
const OUTPUT_TAIL_BYTES = 4096;

/** The end of criu's output file as text; empty when it cannot be read. */
export async function readCriuOutputTail(outputFile: string): Promise<string> {
  let fh;
  try {
    fh = await open(outputFile, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, OUTPUT_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, size - length);
    return buf.subarray(0, bytesRead).toString('utf8');
  } catch {
    return '';
  } finally {
    await fh.close();
  }
}

/**
 * Removes the oldest of the CRIU log files Ferry named in `dir` until at most `maxFiles` of them remain, taking
 * at most `maxBytes` together; anything else in `dir` is never touched (nor counted). A missing dir holds
 * nothing. Returns the names removed.
 */
export async function pruneCriuLogs(dir: string, bounds: CriuLogBounds = CRIU_LOG_BOUNDS): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const logs: { name: string; mtimeMs: number; size: number }[] = [];
  for (const name of names.filter((n) => FERRY_CRIU_LOG.test(n))) {
    const st = await lstat(join(dir, name)).catch(() => undefined); // removed meanwhile: nothing to count
    if (st?.isFile()) logs.push({ name, mtimeMs: st.mtimeMs, size: st.size });
  }
  logs.sort((a, b) => b.mtimeMs - a.mtimeMs || a.name.localeCompare(b.name));
  const removed: string[] = [];
  let files = 0;
  let bytes = 0;
  for (const log of logs) {
    // Newest first: once one does not fit, neither does anything older.
    if (removed.length === 0 && files + 1 <= bounds.maxFiles && bytes + log.size <= bounds.maxBytes) {
      files += 1;
      bytes += log.size;
      continue;
    }
    await rm(join(dir, log.name), { force: true });
    removed.push(log.name);
  }
  return removed;
}
