import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { recordRestored, removeLeftoverSessions } from '../../dest-agent/leftovers.js';
import { markSessionDir } from '../../dest-agent/work-dir.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { waitFor } from '../../testbed/workloads/memtest.js';

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function stoppedSleeper(): Promise<number> {
  const c = spawn('sleep', ['600'], { stdio: 'ignore' });
  children.push(c);
  await new Promise((r) => c.once('spawn', r));
  process.kill(c.pid!, 'SIGSTOP');
  await waitFor(() => readStat(c.pid!)?.state === 'T', 5_000, 'sleep stopped');
  return c.pid!;
}

/** A session dir as the dest makes one (named by its migration id and marked with it). */
async function sessionDir(work: string, id: string): Promise<string> {
  const dir = join(work, id);
  await mkdir(dir);
  await markSessionDir(dir, id);
  return dir;
}

describe('dest agent start-up cleanup', () => {
  it('kills an uncommitted restored copy left by a dead agent and removes every session dir', async () => {
    const work = await mkdtemp(join(tmpdir(), 'ferry-left-'));
    dirs.push(work);
    const pid = await stoppedSleeper();
    await recordRestored(await sessionDir(work, 'sess-aaaa'), pid);
    await sessionDir(work, 'sess-bbbb'); // received pages only, no restore yet
    await mkdir(join(work, 'logs'));
    await writeFile(join(work, 'logs', 'x-restore.log'), 'kept');
    expect(await removeLeftoverSessions(work, silentLogger)).toBe(2);
    await waitFor(() => readStat(pid) === undefined || readStat(pid)?.state === 'Z', 5_000, 'left-over copy killed');
    expect(existsSync(join(work, 'sess-aaaa'))).toBe(false);
    expect(existsSync(join(work, 'sess-bbbb'))).toBe(false);
    expect(existsSync(join(work, 'logs', 'x-restore.log'))).toBe(true);
  });

  it('never kills a process that only shares the recorded pid (start time differs)', async () => {
    const work = await mkdtemp(join(tmpdir(), 'ferry-left-'));
    dirs.push(work);
    const pid = await stoppedSleeper();
    await writeFile(join(await sessionDir(work, 'sess-cccc'), 'restored.json'), JSON.stringify({ pid, startTime: 1 }));
    await removeLeftoverSessions(work, silentLogger);
    expect(readStat(pid)?.state).toBe('T');
  });
});
