/**
 * A python3 task that checks its own memory: 32 MiB of pages, each holding (index, version), 50 random pages
 * rewritten every 10 ms; SIGUSR1 makes it compare every page with its version table and write the result. It
 * runs as pid 1 of its own pid namespace in the given network namespace, like memtest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../wait-for.js';

const PYTHON = `
import os, signal, struct, time, random, json, sys
N = 8192
ba = bytearray(N * 4096)
ver = [0] * N
def fill(i, v):
    ba[i * 4096:(i + 1) * 4096] = struct.pack('<II', i, v) * 512
for i in range(N):
    fill(i, 0)
want = [False]
def on_usr1(s, f):
    want[0] = True
signal.signal(signal.SIGUSR1, on_usr1)
out = sys.argv[1]
with open(out + '.ready', 'w') as f:
    f.write(str(os.getpid()))
while True:
    for _ in range(50):
        i = random.randrange(N)
        ver[i] += 1
        fill(i, ver[i])
    if want[0]:
        want[0] = False
        bad = sum(1 for i in range(N) if ba[i * 4096:(i + 1) * 4096] != struct.pack('<II', i, ver[i]) * 512)
        with open(out + '.tmp', 'w') as f:
            f.write(json.dumps({'bad': bad, 'writes': sum(ver)}))
        os.rename(out + '.tmp', out)
    time.sleep(0.01)
`;

export interface PythonCheckHandle {
  /** Host pid of python (pid 1 of its namespace): the pid to migrate. */
  pid: number;
  /** SIGUSR1 to `hostPid`, then its report of a check begun after the request. */
  check(hostPid: number, timeoutMs?: number): Promise<{ bad: number; writes: number }>;
  /** SIGKILL to the launcher and to every pid given (copies). */
  stop(more?: readonly number[]): void;
}

export async function startPythonCheck(netns: string, dir: string, name: string): Promise<PythonCheckHandle> {
  const out = join(dir, `${name}.check.json`);
  const launcher: ChildProcess = spawn('nsenter', [`--net=${netns}`, 'unshare', '--pid', '--fork', 'setsid', 'python3', '-c', PYTHON, out], { stdio: 'ignore', detached: true });
  const stop = (more: readonly number[] = []): void => {
    for (const pid of [...more, launcher.pid]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  try {
    await waitFor(() => existsSync(`${out}.ready`), 20_000, 'python to fill its memory');
    // nsenter execs unshare, whose only child is python (pid 1 of its namespace).
    const pid = Number(readFileSync(`/proc/${launcher.pid}/task/${launcher.pid}/children`, 'utf8').trim().split(' ')[0]);
    return {
      pid,
      stop,
      check: async (hostPid, timeoutMs = 20_000) => {
        rmSync(out, { force: true });
        const asked = Date.now();
        process.kill(hostPid, 'SIGUSR1');
        await waitFor(() => existsSync(out) && statSync(out).mtimeMs >= asked - 1000, timeoutMs, `python (pid ${hostPid}) to check itself`);
        return JSON.parse(readFileSync(out, 'utf8')) as { bad: number; writes: number };
      },
    };
  } catch (e) {
    stop();
    throw e;
  }
}
