/**
 * A python process holding both ends of a loopback TCP connection with one end put in TCP repair, as
 * `criu dump --tcp-established --leave-stopped` leaves an original (root: TCP_REPAIR needs CAP_NET_ADMIN). On
 * SIGUSR1 it tries one round trip through the connection and writes the outcome: 'ok', or the error (EPERM
 * while the end is still in repair). For tests of the undo of such a dump, without CRIU.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../wait-for.js';

const PYTHON = `
import socket, signal, sys, time, os
out = sys.argv[1]
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept(); srv.close()
a.setsockopt(socket.IPPROTO_TCP, 19, 1)  # TCP_REPAIR on
def trip(s, f):
    try:
        c.sendall(b'ping'); a.settimeout(5); got = a.recv(4); a.sendall(b'pong'); c.settimeout(5); back = c.recv(4)
        r = 'ok' if (got, back) == (b'ping', b'pong') else repr((got, back))
    except Exception as e:
        r = repr(e)
    open(out + '.tmp', 'w').write(r); os.rename(out + '.tmp', out)
signal.signal(signal.SIGUSR1, trip)
open(out + '.ready', 'w').write('1')
while True: time.sleep(1)
`;

export interface TcpRepairTask {
  pid: number;
  /** SIGUSR1, then the outcome of the round trip it tries ('ok' or the error). */
  trip(): Promise<string>;
  /** SIGKILL; removes its files. */
  stop(): void;
}

export async function startTcpRepairTask(dir: string, name: string): Promise<TcpRepairTask> {
  const out = join(dir, `${name}.trip`);
  const child: ChildProcess = spawn('python3', ['-c', PYTHON, out], { stdio: 'ignore' });
  const stop = (): void => {
    child.kill('SIGKILL');
    for (const f of ['', '.tmp', '.ready']) rmSync(out + f, { force: true });
  };
  try {
    await waitFor(() => existsSync(`${out}.ready`), 10_000, 'the tcp repair task to connect');
  } catch (e) {
    stop();
    throw e;
  }
  return {
    pid: child.pid!,
    stop,
    trip: async () => {
      rmSync(out, { force: true });
      process.kill(child.pid!, 'SIGUSR1');
      await waitFor(() => existsSync(out), 15_000, 'the round trip');
      return readFileSync(out, 'utf8');
    },
  };
}
