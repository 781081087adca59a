/**
 * Python tasks that need a CRIU feature to move, each reporting on SIGUSR1 whether it still has what it had:
 * `lock` holds a flock and a POSIX (fcntl) lock on two files and reports its fdinfo "lock:" lines; `tcp` holds
 * both ends of a TCP connection over 127.0.0.1 (ZDTM's socket-tcp-local) and ping-pongs a counter through it
 * every 10 ms, reporting how many round trips went through and the first error. Each runs as pid 1 of its own
 * pid namespace in the given network namespace, like memtest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../wait-for.js';

const PYTHON = `
import os, sys, json, time, signal, socket, struct, fcntl
mode, out = sys.argv[1], sys.argv[2]
want = [False]
signal.signal(signal.SIGUSR1, lambda s, f: want.__setitem__(0, True))
state = {'trips': 0, 'error': None}
if mode == 'lock':
    f1 = open(out + '.flock', 'w'); fcntl.flock(f1, fcntl.LOCK_EX)
    f2 = open(out + '.posix', 'w'); fcntl.lockf(f2, fcntl.LOCK_EX)
else:
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept(); srv.close()
    for s in (c, a): s.settimeout(5)
def recv8(s):
    b = b''
    while len(b) < 8:
        chunk = s.recv(8 - len(b))
        if not chunk: raise EOFError('connection closed')
        b += chunk
    return struct.unpack('<Q', b)[0]
def report():
    r = dict(state)
    r['locks'] = []
    for fd in os.listdir('/proc/self/fdinfo'):
        try:
            r['locks'] += [l for l in open('/proc/self/fdinfo/' + fd).read().splitlines() if l.startswith('lock:')]
        except OSError:
            pass
    with open(out + '.tmp', 'w') as f: f.write(json.dumps(r))
    os.rename(out + '.tmp', out)
with open(out + '.ready', 'w') as f: f.write(str(os.getpid()))
while True:
    if mode == 'tcp' and state['error'] is None:
        try:
            n = state['trips']
            c.sendall(struct.pack('<Q', n))
            if recv8(a) != n: raise ValueError('server got a wrong counter')
            a.sendall(struct.pack('<Q', n + 1))
            if recv8(c) != n + 1: raise ValueError('client got a wrong counter')
            state['trips'] = n + 1
        except Exception as e:
            state['error'] = repr(e)
    if want[0]:
        want[0] = False
        report()
    time.sleep(0.01)
`;

export type FeatureTaskMode = 'lock' | 'tcp';

export interface FeatureTaskReport {
  /** Round trips through the connection so far (tcp). */
  trips: number;
  /** The first error on the connection, or null. */
  error: string | null;
  /** The task's fdinfo "lock:" lines. */
  locks: string[];
}

export interface FeatureTaskHandle {
  /** Host pid of python (pid 1 of its namespace): the pid to migrate. */
  pid: number;
  /** The files `lock` holds its flock and its POSIX lock on. */
  lockFiles: { flock: string; posix: string };
  /** SIGUSR1 to `hostPid`, then its report of the moment after the request. */
  report(hostPid: number, timeoutMs?: number): Promise<FeatureTaskReport>;
  /** SIGKILL to the launcher and to every pid given (copies); removes its files. */
  stop(more?: readonly number[]): void;
}

export async function startFeatureTask(mode: FeatureTaskMode, netns: string, dir: string, name: string): Promise<FeatureTaskHandle> {
  const out = join(dir, `${name}.report.json`);
  const launcher: ChildProcess = spawn('nsenter', [`--net=${netns}`, 'unshare', '--pid', '--fork', 'setsid', 'python3', '-c', PYTHON, mode, out], { stdio: 'ignore', detached: true });
  let original: number | undefined;
  const stop = (more: readonly number[] = []): void => {
    // The original too: after a refused or rolled-back migration it still runs, and it is pid 1 of its own
    // namespace, which the launcher's death does not end.
    for (const pid of [...more, original, launcher.pid]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const f of ['', '.ready', '.tmp', '.flock', '.posix']) rmSync(out + f, { force: true });
  };
  try {
    await waitFor(() => existsSync(`${out}.ready`), 20_000, `the ${mode} task to start`);
    // nsenter execs unshare, whose only child is python (pid 1 of its namespace).
    const pid = Number(readFileSync(`/proc/${launcher.pid}/task/${launcher.pid}/children`, 'utf8').trim().split(' ')[0]);
    original = pid;
    return {
      pid,
      lockFiles: { flock: `${out}.flock`, posix: `${out}.posix` },
      stop,
      report: async (hostPid, timeoutMs = 20_000) => {
        rmSync(out, { force: true });
        const asked = Date.now();
        process.kill(hostPid, 'SIGUSR1');
        await waitFor(() => existsSync(out) && statSync(out).mtimeMs >= asked - 1000, timeoutMs, `the ${mode} task (pid ${hostPid}) to report`);
        return JSON.parse(readFileSync(out, 'utf8')) as FeatureTaskReport;
      },
    };
  } catch (e) {
    stop();
    throw e;
  }
}
