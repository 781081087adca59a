/**
 * `ferry run`: starts a command the way CRIU can carry it: pid 1 of its own pid namespace (its pids cannot
 * clash on the dest, and the restored copy can coexist with the stopped original), leader of its own session
 * and process group (CRIU recreates the session; the group lets one SIGCONT thaw the tree), stdio on log files
 * (a terminal or a pipe to an outside reader would not survive the move), and no inherited descriptors (not
 * even those this process was started with).
 * On request also its own IPC and mount namespaces (task-isolation.ts), and its own network identity
 * (task-network-setup.ts): a namespace with a veth on a bridge, entered by nsenter before the unshare.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { injectFault } from '../shared/fault-injection.js';
import { readStat } from '../shared/kernel/proc-status.js';
import { setCloseOnExec } from '../shared/native/libc.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import { HOST_ISOLATION, launcher, type TaskIsolation } from './task-isolation.js';
import { announceTaskNet, checkTaskNet, compileTaskNetOptions, makeTaskNet, type MadeTaskNet, type TaskNetOptions } from './task-network-setup.js';

export interface RunTaskOptions {
  command: string;
  args: string[];
  name: string;
  logDir: string;
  /** Default: the host's IPC and mount namespaces. */
  isolation?: TaskIsolation;
  /** `--net`: a network namespace of its own. Default: the host's. */
  network?: TaskNetOptions | undefined;
  /** Aborted (ferry run's SIGINT/SIGTERM) before the task is handed back: it is killed and all that was made removed. */
  signal?: AbortSignal | undefined;
}

export interface RunningTask {
  /** Host pid of the task (pid 1 in its namespace): the PID to give `ferry migrate`. */
  pid: number;
  /** Host pid of the `unshare` process that waits for it. */
  launcherPid: number;
  stdout: string;
  stderr: string;
  /** With `network`: what was made (the veth's ends, the MAC, the address, the bridge). */
  network?: TaskNetwork;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export async function runTask(o: RunTaskOptions): Promise<RunningTask> {
  if (!NAME.test(o.name)) throw new FerryError('BAD_ARGUMENT', { message: `--name must be letters, digits, '.', '_' or '-' (got "${o.name}")` });
  const executable = findExecutable(o.command);
  const net = o.network && compileTaskNetOptions(o.network);
  const plan = net && (await checkTaskNet(net, o.signal));
  mkdirSync(o.logDir, { recursive: true });
  const stdout = join(o.logDir, `${o.name}.out`);
  const stderr = join(o.logDir, `${o.name}.err`);
  const out = openSync(stdout, 'a');
  const err = openSync(stderr, 'a');
  let made: MadeTaskNet | undefined;
  let launcherPid: number | undefined;
  let pid: number | undefined;
  try {
    made = net && plan && (await makeTaskNet(net, plan, o.signal));
    const start = [...(made ? ['nsenter', `--net=${made.netns}`] : []), ...launcher(o.isolation ?? HOST_ISOLATION, o.command, o.args, stdout, stderr)];
    const [program, ...argv] = start as [string, ...string[]];
    closeOnExecAll();
    const child = spawn(program, argv, {
      detached: true,
      stdio: ['ignore', out, err], // and closeOnExecAll: no other fd is inherited
    });
    launcherPid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (e) => reject(new FerryError('BAD_ARGUMENT', { message: `cannot start unshare: ${e.message}` })));
    });
    child.unref();
    pid = await firstChild(launcherPid, 5_000);
    await sessionLeader(pid, 5_000);
    await commandRuns(pid, executable, 5_000);
    if (made && net) {
      await made.release(); // from here only the task holds its namespace
      injectFault('run.task-started');
      await announceTaskNet(pid, net);
    }
    // Interrupted while it was being made or awaited: nobody was told its pid, so nothing of it may stay.
    o.signal?.throwIfAborted();
    return { pid, launcherPid, stdout, stderr, ...(made && { network: made.network }) };
  } catch (e) {
    // The task is pid 1 of its pid namespace: its death takes the tree, and its network namespace with it.
    if (pid !== undefined) killQuietly(pid);
    if (launcherPid !== undefined) killQuietly(launcherPid);
    const errors = made ? await made.remove() : [];
    if (e instanceof FerryError) e.rollbackErrors.push(...errors);
    throw e;
  } finally {
    closeSync(out);
    closeSync(err);
  }
}

/**
 * FD_CLOEXEC on every fd of this process above stdio. Node opens its own close-on-exec, but not those it was
 * started with: a shell's or a supervisor's stray pipe would otherwise reach the task, and CRIU would have to
 * call it external (notes/netns-tcp-lab.md, pitfall 6). This process execs nothing itself, so it loses nothing.
 */
function closeOnExecAll(): void {
  for (const entry of readdirSync('/proc/self/fd')) {
    const fd = Number(entry);
    if (fd <= 2) continue;
    try {
      setCloseOnExec(fd);
    } catch {
      /* the directory's own fd, closed by now */
    }
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
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
