/**
 * Python tasks that need a CRIU feature to move, each reporting on SIGUSR1 whether it still has what it had:
 * `lock` holds a flock and a POSIX (fcntl) lock on two files and reports its fdinfo "lock:" lines; `tcp` holds
 * both ends of a TCP connection over 127.0.0.1 (ZDTM's socket-tcp-local) and ping-pongs a counter through it
 * every 10 ms, reporting how many round trips went through and the first error; `server` listens on 127.0.0.1
 * (its port in `<out>.port`) and echoes the counters of the one `client` it accepts, which sends one every
 * 10 ms on one connection and checks each echo (and reports the longest wait for one). Each runs as pid 1 of
 * its own pid namespace in the given network namespace, like memtest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../wait-for.js';

const PYTHON = `
import os, sys, json, time, signal, socket, struct, fcntl, select
mode, out = sys.argv[1], sys.argv[2]
want = [False]
signal.signal(signal.SIGUSR1, lambda s, f: want.__setitem__(0, True))
state = {'trips': 0, 'error': None, 'maxGapMs': 0}
if mode == 'lock':
    f1 = open(out + '.flock', 'w'); fcntl.flock(f1, fcntl.LOCK_EX)
    f2 = open(out + '.posix', 'w'); fcntl.lockf(f2, fcntl.LOCK_EX)
elif mode == 'server':
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
    with open(out + '.port.tmp', 'w') as f: f.write(str(srv.getsockname()[1]))
    os.rename(out + '.port.tmp', out + '.port')
    a, _ = srv.accept(); srv.close(); a.setblocking(False); pending = b''
elif mode == 'client':
    # The wait for an echo spans a freeze and the retransmission backoff after it: seconds, not minutes.
    c = socket.create_connection(('127.0.0.1', int(sys.argv[3]))); c.settimeout(60); last = time.monotonic()
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
    if mode == 'server' and state['error'] is None:
        try:
            if select.select([a], [], [], 0)[0]:
                chunk = a.recv(8 - len(pending))
                if not chunk: raise EOFError('connection closed')
                pending += chunk
                if len(pending) == 8:
                    a.sendall(pending); pending = b''; state['trips'] += 1
        except Exception as e:
            state['error'] = repr(e)
    if mode == 'client' and state['error'] is None:
        try:
            n = state['trips']
            c.sendall(struct.pack('<Q', n))
            if recv8(c) != n: raise ValueError('the server echoed a wrong counter')
            now = time.monotonic(); state['maxGapMs'] = max(state['maxGapMs'], round((now - last) * 1000)); last = now
            state['trips'] = n + 1
        except Exception as e:
            state['error'] = repr(e)
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

export type FeatureTaskMode = 'lock' | 'tcp' | 'server' | 'client';

export interface FeatureTaskReport {
  /** Round trips through the connection so far (tcp). */
  trips: number;
  /** The first error on the connection, or null. */
  error: string | null;
  /** client: the longest wait for an echo, ms. */
  maxGapMs: number;
  /** The task's fdinfo "lock:" lines. */
  locks: string[];
}

export interface FeatureTaskHandle {
  /** Host pid of python (pid 1 of its namespace): the pid to migrate. */
  pid: number;
  /** The files `lock` holds its flock and its POSIX lock on. */
  lockFiles: { flock: string; posix: string };
  /** server: the port it listens on, once it does. */
  port(): Promise<number>;
  /** SIGUSR1 to `hostPid`, then its report of the moment after the request. */
  report(hostPid: number, timeoutMs?: number): Promise<FeatureTaskReport>;
  /** SIGKILL to the launcher and to every pid given (copies); removes its files. */
  stop(more?: readonly number[]): void;
}

/** `args`: the client's the server's port. */
export async function startFeatureTask(mode: FeatureTaskMode, netns: string, dir: string, name: string, args: readonly string[] = []): Promise<FeatureTaskHandle> {
  const out = join(dir, `${name}.report.json`);
  const launcher: ChildProcess = spawn('nsenter', [`--net=${netns}`, 'unshare', '--pid', '--fork', 'setsid', 'python3', '-c', PYTHON, mode, out, ...args], { stdio: 'ignore', detached: true });
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
    for (const f of ['', '.ready', '.tmp', '.flock', '.posix', '.port', '.port.tmp']) rmSync(out + f, { force: true });
  };
  const port = async (): Promise<number> => {
    await waitFor(() => existsSync(`${out}.port`), 20_000, `the ${mode} task to listen`);
    return Number(readFileSync(`${out}.port`, 'utf8'));
  };
  try {
    // A server is ready once it has its client: the launcher only waits for it to listen.
    if (mode === 'server') await port();
    else await waitFor(() => existsSync(`${out}.ready`), 20_000, `the ${mode} task to start`);
    // nsenter execs unshare, whose only child is python (pid 1 of its namespace).
    const pid = Number(readFileSync(`/proc/${launcher.pid}/task/${launcher.pid}/children`, 'utf8').trim().split(' ')[0]);
    // Never 0 or NaN: a signal to pid 0 would reach this test's whole process group.
    if (!Number.isSafeInteger(pid) || pid <= 1) throw new Error(`the ${mode} task's pid is unknown (launcher ${launcher.pid})`);
    original = pid;
    return {
      pid,
      lockFiles: { flock: `${out}.flock`, posix: `${out}.posix` },
      port,
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
