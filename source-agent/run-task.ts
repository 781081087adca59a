/**
 * `ferry run`: starts a command the way CRIU can carry it: pid 1 of its own pid namespace (its pids cannot
 * clash on the dest, and the restored copy can coexist with the stopped original), leader of its own session
 * and process group (CRIU recreates the session; the group lets one SIGCONT thaw the tree), stdio on log files
 * (a terminal or a pipe to an outside reader would not survive the move), and no inherited descriptors.
 * On request also its own IPC and mount namespaces (task-isolation.ts).
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { readStat } from '../shared/kernel/proc-status.js';
import { HOST_ISOLATION, launcher, type TaskIsolation } from './task-isolation.js';

export interface RunTaskOptions {
  command: string;
  args: string[];
  name: string;
  logDir: string;
  /** Default: the host's IPC and mount namespaces. */
  isolation?: TaskIsolation;
}

export interface RunningTask {
  /** Host pid of the task (pid 1 in its namespace): the PID to give `ferry migrate`. */
  pid: number;
  /** Host pid of the `unshare` process that waits for it. */
  launcherPid: number;
  stdout: string;
  stderr: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export async function runTask(o: RunTaskOptions): Promise<RunningTask> {
  if (!NAME.test(o.name)) throw new FerryError('BAD_ARGUMENT', { message: `--name must be letters, digits, '.', '_' or '-' (got "${o.name}")` });
  const executable = findExecutable(o.command);
  mkdirSync(o.logDir, { recursive: true });
  const stdout = join(o.logDir, `${o.name}.out`);
  const stderr = join(o.logDir, `${o.name}.err`);
  const out = openSync(stdout, 'a');
  const err = openSync(stderr, 'a');
  const start = launcher(o.isolation ?? HOST_ISOLATION, o.command, o.args, stdout, stderr);
  let launcherPid: number | undefined;
  try {
    const [program, ...argv] = start as [string, ...string[]];
    const child = spawn(program, argv, {
      detached: true,
      stdio: ['ignore', out, err], // Node opens everything else close-on-exec: no other fd is inherited
    });
    launcherPid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (e) => reject(new FerryError('BAD_ARGUMENT', { message: `cannot start unshare: ${e.message}` })));
    });
    child.unref();
    const pid = await firstChild(launcherPid, 5_000);
    await sessionLeader(pid, 5_000);
    await commandRuns(pid, executable, 5_000);
    return { pid, launcherPid, stdout, stderr };
  } catch (e) {
    if (launcherPid !== undefined) process.kill(launcherPid, 'SIGKILL');
    throw e;
  } finally {
    closeSync(out);
    closeSync(err);
  }
}

/** The task is unshare's only child; it appears right after the fork. */
async function firstChild(launcherPid: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(`/proc/${launcherPid}/task/${launcherPid}/children`, 'utf8').trim();
    } catch {
      throw new FerryError('BAD_ARGUMENT', { message: 'the command exited at once', detail: `unshare (${launcherPid}) is gone; see the task's .err log` });
    }
    if (text) return Number(text.split(' ')[0]);
    if (Date.now() > deadline) throw new FerryError('INTERNAL', { message: `unshare (${launcherPid}) did not start the command within ${timeoutMs} ms` });
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The task's last step before the command is setsid: once it leads its session, its namespaces are set up. */
async function sessionLeader(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stat = readStat(pid);
    if (stat === undefined) throw new FerryError('BAD_ARGUMENT', { message: 'the command exited at once', detail: `the task (${pid}) is gone; see its .err log` });
    if (stat.session === pid) return;
    if (Date.now() > deadline) throw new FerryError('INTERNAL', { message: `the task (${pid}) did not become a session leader within ${timeoutMs} ms` });
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * The command as setsid will exec it, checked before anything starts: a command that cannot be executed must be
 * refused here, not reported later as a task that started (setsid fails only after it leads its session).
 */
export function findExecutable(command: string, path = process.env.PATH ?? ''): string {
  const runnable = (p: string): boolean => {
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes('/')) {
    const p = isAbsolute(command) ? command : resolve(command);
    if (runnable(p)) return p;
    throw new FerryError('BAD_ARGUMENT', { message: `the command ${command} is not an executable file`, detail: p });
  }
  for (const dir of path.split(delimiter).filter(Boolean)) {
    const p = join(dir, command);
    if (runnable(p)) return p;
  }
  throw new FerryError('BAD_ARGUMENT', { message: `the command ${command} is not found in PATH`, detail: `PATH=${path}` });
}

/** setsid has exec'd the command once the task's executable is no longer setsid's; gone meanwhile: exec failed. */
async function commandRuns(pid: number, executable: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let exe: string;
    try {
      exe = readlinkSync(`/proc/${pid}/exe`);
    } catch {
      throw new FerryError('BAD_ARGUMENT', { message: `the command ${executable} exited at once or could not be executed`, detail: `the task (${pid}) is gone; see its .err log` });
    }
    if (!/\/setsid$/.test(exe)) return; // the command, or its script's interpreter
    if (Date.now() > deadline) throw new FerryError('INTERNAL', { message: `the task (${pid}) did not exec ${executable} within ${timeoutMs} ms` });
    await new Promise((r) => setTimeout(r, 10));
  }
}
