/**
 * A python task started by `ferry run` with its own IPC and mount namespaces (issue 13, item 3). At the start
 * it creates a SysV shared memory segment (key FERRY_SHM_KEY; not with `shm: false`: CRIU refuses a segment
 * in the host's IPC namespace) and writes a token into it; on SIGUSR1 it
 * reports what it sees: the segment (found again by key, read through a fresh attach), its IPC and mount
 * namespaces, and its /proc (what /proc/self resolves to, what /proc/1 is, the fs type mounted at /proc).
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runFerry, describeResult } from '../ferry-process.js';
import type { Host } from '../netns-hosts.js';
import { waitFor } from '../wait-for.js';

/** 'FRY1': a fixed key, so that the report finds the segment again the way another process of the task would. */
export const FERRY_SHM_KEY = 0x46525931;

const PYTHON = `
import ctypes, json, os, signal, sys, time
out, token, key = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
if key:
    shmid = libc.shmget(key, 4096, 0o1000 | 0o600)  # IPC_CREAT
    if shmid < 0: sys.exit('shmget: errno %d' % ctypes.get_errno())
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr, token, len(token))
want = [False]
signal.signal(signal.SIGUSR1, lambda s, f: want.__setitem__(0, True))
def report():
    r = {'shmid': libc.shmget(key, 0, 0) if key else -1}
    if r['shmid'] >= 0:
        a = libc.shmat(r['shmid'], None, 0o10000)  # SHM_RDONLY, a second attach
        r['shm'] = ctypes.string_at(a, len(token)).decode(errors='replace')
        libc.shmdt(ctypes.c_void_p(a))
    r['ipcNs'] = os.readlink('/proc/self/ns/ipc')
    r['mntNs'] = os.readlink('/proc/self/ns/mnt')
    r['procSelf'] = os.readlink('/proc/self')
    r['proc1'] = open('/proc/1/cmdline', 'rb').read().split(b'\\0')[0].decode()
    r['procFs'] = [l.split(' - ')[1].split()[0] for l in open('/proc/self/mountinfo') if l.split()[4] == '/proc']
    r['sysvShm'] = len(open('/proc/sysvipc/shm').read().splitlines()) - 1
    with open(out + '.tmp', 'w') as f: f.write(json.dumps(r))
    os.rename(out + '.tmp', out)
with open(out + '.ready', 'w') as f: f.write(str(os.getpid()))
while True:
    if want[0]:
        want[0] = False
        report()
    time.sleep(0.01)
`;

export interface IsolatedTaskReport {
  /** shmget(key) of the segment; -1 when it is gone. */
  shmid: number;
  /** The token read back from the segment. */
  shm?: string;
  ipcNs: string;
  mntNs: string;
  /** readlink /proc/self: the task's pid in the pid namespace of the proc mounted at /proc. */
  procSelf: string;
  /** argv[0] of /proc/1. */
  proc1: string;
  /** The fs types mounted at /proc, bottom first. */
  procFs: string[];
  /** How many SysV shm segments the task's IPC namespace holds. */
  sysvShm: number;
}

export interface IsolatedTaskHandle {
  /** Host pid of python (pid 1 of its namespaces): the pid to migrate. */
  pid: number;
  launcherPid: number;
  token: string;
  report(hostPid: number, timeoutMs?: number): Promise<IsolatedTaskReport>;
  /** Host pids of the python processes running with this task's token: the original and any copy. */
  instances(): number[];
  /** SIGKILL to the task, its launcher and every pid given (copies); removes its files. */
  stop(more?: readonly number[]): void;
}

export async function startIsolatedTask(host: Host, dir: string, name: string, runArgs: readonly string[], shm = true): Promise<IsolatedTaskHandle> {
  const out = join(dir, `${name}.report.json`);
  const token = `ferry-${name}-${process.pid}-${Date.now()}`;
  const run = await runFerry(['run', '--json', '--name', name, '--log-dir', dir, ...runArgs, '--', 'python3', '-c', PYTHON, out, token, String(shm ? FERRY_SHM_KEY : 0)], { host, timeoutMs: 20_000 });
  if (run.exitCode !== 0) throw new Error(`ferry run: ${describeResult(run)}`);
  const task = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { pid: number; launcherPid: number };
  const stop = (more: readonly number[] = []): void => {
    for (const pid of [...more, task.pid, task.launcherPid]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const f of ['', '.ready', '.tmp']) rmSync(out + f, { force: true });
    for (const f of ['.out', '.err']) rmSync(join(dir, name + f), { force: true });
  };
  try {
    await waitFor(() => existsSync(`${out}.ready`), 20_000, `the isolated task ${name} to start`);
    return {
      ...task,
      token,
      stop,
      instances: () => pythonsWith(token),
      report: async (hostPid, timeoutMs = 20_000) => {
        rmSync(out, { force: true });
        const asked = Date.now();
        process.kill(hostPid, 'SIGUSR1');
        await waitFor(() => existsSync(out) && statSync(out).mtimeMs >= asked - 1000, timeoutMs, `the isolated task (pid ${hostPid}) to report`);
        return JSON.parse(readFileSync(out, 'utf8')) as IsolatedTaskReport;
      },
    };
  } catch (e) {
    stop();
    throw e;
  }
}

function pythonsWith(token: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone
    }
    if (/python3?$/.test(argv[0] ?? '') && argv.includes(token)) found.push(Number(name));
  }
  return found;
}
