/**
 * `ferry run`'s start: a command that cannot be executed is refused before anything starts (setsid would fail
 * only after leading its session, and the task would look started), and one that can runs as pid 1 of its own
 * pid namespace, leading its session, with the command itself (not setsid) as its executable.
 */
import { chmodSync, existsSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { findExecutable, runTask } from '../../source-agent/run-task.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { waitFor } from '../../testbed/wait-for.js';

const dir = makeTempDir('ferry-run-task-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function refusal(f: () => unknown): FerryError {
  try {
    f();
  } catch (e) {
    if (e instanceof FerryError) return e;
    throw e;
  }
  throw new Error('not refused');
}

describe('findExecutable', () => {
  it('finds a command in PATH and refuses one that is not there', () => {
    expect(findExecutable('sh', '/nonexistent-dir:/bin')).toBe('/bin/sh');
    const e = refusal(() => findExecutable('no-such-command-ferry', '/bin:/usr/bin'));
    expect(e.code).toBe('FERRY-0001');
    expect(e.message).toContain('not found in PATH');
  });

  it('refuses a path that is not an executable file', () => {
    const plain = join(dir, 'plain.txt');
    writeFileSync(plain, 'not a program\n');
    chmodSync(plain, 0o644);
    expect(refusal(() => findExecutable(plain)).message).toContain('is not an executable file');
    expect(refusal(() => findExecutable(dir)).message).toContain('is not an executable file'); // a directory
    expect(findExecutable('/bin/sh')).toBe('/bin/sh');
  });
});

describe.skipIf(!canRun('ferry run starts a task', isRoot(), hasCommand('unshare'), hasCommand('setsid')))('runTask', () => {
  it('refuses a command that does not exist before it creates its logs', async () => {
    const logDir = join(dir, 'refused-logs');
    await expect(runTask({ command: '/nonexistent/ferry-cmd', args: [], name: 'refused', logDir })).rejects.toMatchObject({ code: 'FERRY-0001' });
    expect(existsSync(logDir)).toBe(false);
  });

  it('starts the command itself as pid 1 of its pid namespace, leading its session', async () => {
    const t = await runTask({ command: 'sleep', args: ['30'], name: 'sleeper', logDir: join(dir, 'logs') });
    try {
      expect(readlinkSync(`/proc/${t.pid}/exe`)).toMatch(/\/sleep$/);
      expect(readStat(t.pid)?.session).toBe(t.pid);
      const nspid = readFileSync(`/proc/${t.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('NSpid:'));
      expect(nspid?.split(/\s+/).at(-1)).toBe('1');
    } finally {
      process.kill(t.launcherPid, 'SIGKILL'); // both: unshare has no --kill-child, its child outlives it
      process.kill(t.pid, 'SIGKILL');
      await waitFor(() => !existsSync(`/proc/${t.pid}`) || readStat(t.pid)?.state === 'Z' || undefined, 5_000, 'the sleeper to exit');
    }
  });
});
