/**
 * The thaw guard and the freeze lease on it, against real stopped processes: disarmed in time it leaves the
 * tree stopped; past its deadline, or when fired, it resumes the group and the pids it was given.
 * (Resuming after the agent is killed is in task-throttle.test.ts.)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { readStat } from '../../shared/kernel/proc-status.js';
import { ThawGuard } from '../../shared/kernel/thaw-guard.js';
import { FreezeLease } from '../../source-agent/freeze-lease.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';

const started: number[] = [];

/** A stopped `sleep` leading its own process group. */
async function stoppedTask(): Promise<number> {
  const child = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error('sleep did not start');
  started.push(pid);
  process.kill(-pid, 'SIGSTOP');
  for (let i = 0; i < 100 && readStat(pid)?.state !== 'T'; i++) await sleep(5);
  return pid;
}

/** The state letter once it has had a moment to change. */
async function settledState(pid: number): Promise<string | undefined> {
  await sleep(30);
  return readStat(pid)?.state;
}

afterAll(() => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

describe.skipIf(!canRun('thaw guard', hasCommand('bash'), hasCommand('sleep')))('thaw guard', () => {
  it('a lease disarmed before its deadline leaves the tree stopped; release() after that does nothing', async () => {
    const pid = await stoppedTask();
    const lease = new FreezeLease(5000, pid, [pid]);
    await lease.disarm();
    await lease.release();
    expect(await settledState(pid)).toBe('T');
  });

  it('a lease past its deadline resumes the tree, and disarm() then throws FREEZE_LEASE_EXPIRED', async () => {
    const pid = await stoppedTask();
    const lease = new FreezeLease(100, pid, [pid]);
    await sleep(250);
    expect(readStat(pid)?.state).not.toBe('T');
    await expect(lease.disarm()).rejects.toMatchObject({ key: 'FREEZE_LEASE_EXPIRED' });
  });

  it('a command given to the guard runs before its SIGCONT, the tree still stopped; a lease release() drops it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-thaw-guard-'));
    try {
      const pid = await stoppedTask();
      const guard = new ThawGuard({ name: 'ferry-test-guard', pgid: pid, pids: [pid], keepAlive: false });
      // What the command sees: the state of the tree it runs before (an argument with a space stays one).
      guard.runBeforeThaw(['bash', '-c', `cut -d' ' -f3 /proc/${pid}/stat > "$0"`, join(dir, 'seen state')]);
      await expect(guard.fire()).resolves.toEqual({ answer: 'fired', exit: 0 });
      expect(readFileSync(join(dir, 'seen state'), 'utf8').trim()).toBe('T');
      expect(await settledState(pid)).not.toBe('T');

      const other = await stoppedTask();
      const lease = new FreezeLease(5000, other, [other]);
      lease.runBeforeThaw(['bash', '-c', `echo ran > "$0"`, join(dir, 'lease')]);
      await lease.release();
      expect(await settledState(other)).not.toBe('T');
      expect(() => readFileSync(join(dir, 'lease'))).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fire() resumes the group and the pids given later; the first end decides', async () => {
    const root = await stoppedTask();
    const other = await stoppedTask(); // in a process group of its own
    const guard = new ThawGuard({ name: 'ferry-test-guard', pgid: root, pids: [], keepAlive: false });
    await guard.spawned;
    guard.update([root, other]);
    await expect(guard.fire()).resolves.toEqual({ answer: 'fired', exit: 0 });
    expect(await settledState(root)).not.toBe('T');
    expect(readStat(other)?.state).not.toBe('T');
    await expect(guard.disarm()).resolves.toEqual({ answer: 'fired', exit: 0 });
  });
});
