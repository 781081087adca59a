/**
 * The harness's process probes against real processes: stop and continue with /proc confirming each, what a
 * process holds, a process found by a path among its arguments, and clear errors for a pid that is gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pidsWithArgUnder } from '../../testbed/leftovers.js';
import { continueProcess, processResources, processStartTime, readPidState, stopProcess, waitUntilStopped } from '../../testbed/process-probes.js';

const children: ChildProcess[] = [];
const dirs: string[] = [];

/** SIGKILL to the shell's group (its sleep too), then waits for the shell. */
async function killSleeper(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const closed = new Promise((r) => c.once('close', r));
  process.kill(-c.pid!, 'SIGKILL');
  await closed;
}

afterEach(async () => {
  for (const c of children.splice(0)) await killSleeper(c);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** `sh -c 'sleep 30; :' ARG0`: a shell (the `:` keeps it from exec'ing sleep) whose $0 is `arg0`, leading its
 * own process group so that one kill ends it and its sleep. */
function sleeper(arg0 = 'sleeper'): ChildProcess {
  const c = spawn('sh', ['-c', 'sleep 30; :', arg0], { stdio: 'ignore', detached: true });
  children.push(c);
  return c;
}

describe('testbed process probes', () => {
  it('stopProcess / continueProcess: T, then not T', async () => {
    const pid = sleeper().pid!;
    await stopProcess(pid);
    expect(readPidState(pid)).toBe('T');
    await waitUntilStopped(pid, 100); // already stopped: at once
    await continueProcess(pid);
    expect(readPidState(pid)).not.toBe('T');
  });

  it('processResources reads VmRSS, the fds and the threads', () => {
    const r = processResources(process.pid);
    expect(r.rssBytes).toBeGreaterThan(1 << 20);
    expect(r.fds).toBeGreaterThanOrEqual(3);
    expect(r.threads).toBeGreaterThanOrEqual(1);
  });

  it('a pid that is gone: undefined state and start time, errors that say so', async () => {
    const c = sleeper();
    const pid = c.pid!;
    expect(processStartTime(pid)).toMatch(/^\d+$/);
    await killSleeper(c);
    expect(readPidState(pid)).toBeUndefined();
    expect(processStartTime(pid)).toBeUndefined();
    await expect(stopProcess(pid, 500)).rejects.toThrow(/ESRCH/);
    await expect(waitUntilStopped(pid, 500)).rejects.toThrow(/gone/);
    expect(() => processResources(pid)).toThrow(/ENOENT/);
  });

  it('pidsWithArgUnder finds a process by a path below a dir among its arguments, and only there', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-probe-'));
    dirs.push(dir);
    const inside = sleeper(join(dir, 'images', 'x')).pid!;
    const flag = sleeper(`--work-dir=${dir}`).pid!;
    sleeper(`${dir}-other/x`);
    expect(pidsWithArgUnder('sh', dir).sort()).toEqual([inside, flag].sort());
    expect(pidsWithArgUnder('sleep', dir)).toEqual([]);
  });
});
