/**
 * A dest agent that died (kill -9, crash, reboot of the agent only) leaves its sessions on disk, and maybe a
 * restored copy that was never committed, stopped for ever. At start the agent removes them: the source has
 * rolled back by then (its page stream or Restore call failed), so an uncommitted copy must not survive.
 * A restored copy is identified by pid AND start time, so a recycled pid is never killed. Only session dirs
 * Ferry made are removed (work-dir.ts): anything else in the work dir is left alone and named in the log.
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readStat } from '../shared/kernel/proc-status.js';
import { signalTree } from '../shared/kernel/signal-tree.js';
import type { Logger } from '../shared/logging/logger.js';
import { LOGS_DIR, sessionDirsIn, WORK_DIR_MARKER } from './work-dir.js';

const RESTORED_RECORD = 'restored.json';

interface RestoredRecord {
  pid: number;
  startTime: number;
}

/** Written right after a restore, before the copy can be committed. */
export async function recordRestored(sessionDir: string, pid: number): Promise<void> {
  const startTime = readStat(pid)?.startTime ?? 0;
  await writeFile(join(sessionDir, RESTORED_RECORD), JSON.stringify({ pid, startTime } satisfies RestoredRecord));
}

/** Removes the sessions a previous agent left in `workDir` (which openWorkDir accepted); returns how many. */
export async function removeLeftoverSessions(workDir: string, log: Logger): Promise<number> {
  let names: string[];
  try {
    names = await sessionDirsIn(workDir);
  } catch {
    return 0; // no work dir yet
  }
  for (const name of names) {
    const dir = join(workDir, name);
    try {
      const rec = JSON.parse(await readFile(join(dir, RESTORED_RECORD), 'utf8')) as RestoredRecord;
      const stat = Number.isInteger(rec.pid) && rec.pid > 1 ? readStat(rec.pid) : undefined;
      if (stat && stat.startTime === rec.startTime && (stat.state === 'T' || stat.state === 't')) {
        signalTree(rec.pid, 'SIGKILL');
        log.warn('killed an uncommitted restored copy left by a previous agent', { migrationId: name, pid: rec.pid });
      }
    } catch {
      /* no restored copy recorded: only files to remove */
    }
    await rm(dir, { recursive: true, force: true });
    log.warn('removed a session left by a previous agent', { migrationId: name });
  }
  const others = (await readdir(workDir).catch(() => [])).filter((n) => n !== LOGS_DIR && n !== WORK_DIR_MARKER && !names.includes(n));
  if (others.length > 0) log.warn('left alone in the work dir: not a session Ferry made', { entries: others });
  return names.length;
}
