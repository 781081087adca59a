/**
 * Python tasks that the preflight must refuse for a real reason, each beating a counter into a file every
 * 20 ms so that a test sees it runs on after the refusal: `io-uring` holds an io_uring instance (io_uring_setup
 * through ctypes), `bound` listens on TCP at a given local address, `plain` only beats. Each runs as pid 1 of
 * its own pid namespace and session leader in the given network namespace, as ferry run starts a task.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../wait-for.js';

const PYTHON = `
import ctypes, os, socket, sys, time
mode, out, arg = sys.argv[1], sys.argv[2], sys.argv[3]
keep = []
if mode == 'io-uring':
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(425, 4, params)  # io_uring_setup (425 on x86_64 and arm64)
    if fd < 0: raise OSError(ctypes.get_errno(), 'io_uring_setup')
    keep.append(fd)
elif mode == 'bound':
    s = socket.socket(); s.bind((arg, 0)); s.listen(1); keep.append(s)
n = 0
while True:
    n += 1
    with open(out + '.tmp', 'w') as f: f.write(str(n))
    os.rename(out + '.tmp', out)
    time.sleep(0.02)
`;

export type PreflightTaskMode = 'io-uring' | 'bound' | 'plain';

export interface PreflightTaskHandle {
  /** Host pid of python (pid 1 of its namespace). */
  pid: number;
  /** Its beat counter now. */
  beats(): number;
  /** SIGKILL to the task and its launcher; removes its files. */
  stop(): void;
}

/** `arg`: the address `bound` binds to. */
export async function startPreflightTask(mode: PreflightTaskMode, netns: string, dir: string, name: string, arg = ''): Promise<PreflightTaskHandle> {
  const out = join(dir, `${name}.beats`);
  const launcher: ChildProcess = spawn('nsenter', [`--net=${netns}`, 'unshare', '--pid', '--fork', 'setsid', 'python3', '-c', PYTHON, mode, out, arg], { stdio: 'ignore', detached: true });
  let task: number | undefined;
  const stop = (): void => {
    // The task too: it is pid 1 of its own namespace, which the launcher's death does not end.
    for (const pid of [task, launcher.pid]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const f of ['', '.tmp']) rmSync(out + f, { force: true });
  };
  const beats = (): number => {
    try {
      return Number(readFileSync(out, 'utf8')) || 0;
    } catch {
      return 0;
    }
  };
  try {
    await waitFor(() => existsSync(out), 20_000, `the ${mode} task to start`);
    // nsenter execs unshare, whose only child is python (pid 1 of its namespace).
    task = Number(readFileSync(`/proc/${launcher.pid}/task/${launcher.pid}/children`, 'utf8').trim().split(' ')[0]);
    return { pid: task, beats, stop };
  } catch (e) {
    stop();
    throw e;
  }
}
