/**
 * One migration per task at a time: the per-process locks of a tree (real flocks on real processes). A second
 * lock of the same task, or of any process of a locked tree, is refused with its code; a holder that dies
 * leaves no lock behind; a released lock leaves no file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tryLockFile } from '../../shared/kernel/file-lock.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { lockTaskTree } from '../../source-agent/task-lock.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

let dir: string;
const children: ChildProcess[] = [];

function start(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: 'ignore' });
  children.push(c);
  return c;
}

async function reap(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((resolve) => c.once('exit', resolve));
  c.kill('SIGKILL');
  await exited;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-task-lock-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) await reap(c);
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('task locks', () => {
  it('refuses a second migration of the same task until the first releases, and leaves no file', () => {
    const task = start('sleep', ['1000']).pid!;
    const first = lockTaskTree(dir, task, [task]);
    const e = expectFerryError(() => lockTaskTree(dir, task, [task]), 'TASK_ALREADY_MIGRATING');
    expect(e.sourceState).toBe('running');
    first.release();
    first.release(); // twice is harmless
    expect(readdirSync(dir)).toEqual([]);
    lockTaskTree(dir, task, [task]).release();
  });

  it('refuses a tree that shares a process with a locked tree, whichever is its root, and takes nothing of it', () => {
    const root = start('sleep', ['1000']).pid!;
    const member = start('sleep', ['1000']).pid!;
    const other = start('sleep', ['1000']).pid!;
    const held = lockTaskTree(dir, root, [root, member]);
    expectFerryError(() => lockTaskTree(dir, other, [other, member]), 'TASK_ALREADY_MIGRATING');
    // The refused attempt released what it had taken: `other` is free.
    lockTaskTree(dir, other, [other]).release();
    held.release();
  });

  it('a reused pid is another process: the lock names the start time', () => {
    const task = start('sleep', ['1000']).pid!;
    const held = lockTaskTree(dir, task, [task]);
    expect(readdirSync(dir)).toEqual([`pid-${task}-${readStat(task)!.startTime}.lock`]);
    held.release();
  });

  it.skipIf(!canRun('task locks: a dead holder', hasCommand('flock')))('a holder that dies leaves no lock: the kernel drops it', async () => {
    const path = join(dir, 'crash.lock');
    // util-linux flock(1) takes the same flock(2) lock (held by it alone: -o), says so, and waits to be killed;
    // its own process group, so that the whole holder dies at once.
    const holder = spawn('flock', ['-n', '-o', path, '-c', 'echo locked; exec sleep 1000'], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    const killHolder = (): void => {
      try {
        process.kill(-holder.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('flock(1) did not take the lock within 5 s')), 5_000);
        holder.stdout.on('data', (d: Buffer) => {
          if (d.toString().includes('locked')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      expect(tryLockFile(path)).toBeUndefined();
      const exited = new Promise((resolve) => holder.once('exit', resolve));
      killHolder();
      await exited;
      const after = tryLockFile(path);
      expect(after).toBeDefined();
      after!.release();
    } finally {
      killHolder(); // every process of the holder's group, even after a failed assertion
    }
    expect(existsSync(path)).toBe(false);
  });
});
