/**
 * A stopped process in a network namespace of its own that holds `eth0` (a veth whose peer is in the same
 * namespace: nothing of it appears in the host's), with an address: what a frozen original or a restored,
 * held copy of a `ferry run --net` task looks like to the code that lets go of its hold. stop() kills it and
 * deletes the namespace.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readStat } from '../../shared/kernel/proc-status.js';
import { waitFor } from '../wait-for.js';

export interface NetnsSleeper {
  pid: number;
  /** /proc/PID/ns/net. */
  netns: string;
  stop(): void;
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

export async function startNetnsSleeper(name: string, address: string): Promise<NetnsSleeper> {
  let pid = 0;
  const stop = (): void => {
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
  };
  try {
    ip(['netns', 'add', name]);
    ip(['-n', name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0']);
    ip(['-n', name, 'addr', 'add', address, 'dev', 'eth0']);
    for (const l of ['lo', 'eth0', 'peer0']) ip(['-n', name, 'link', 'set', l, 'up']);
    const c = spawn('nsenter', [`--net=/run/netns/${name}`, 'sleep', '600'], { stdio: 'ignore', detached: true });
    c.unref();
    await new Promise((r) => c.once('spawn', r));
    pid = c.pid!;
    await waitFor(() => readStat(pid)?.comm === 'sleep', 5_000, 'the sleeper in its netns');
    process.kill(pid, 'SIGSTOP');
    await waitFor(() => readStat(pid)?.state === 'T', 5_000, 'the sleeper stopped');
    return { pid, netns: `/proc/${pid}/ns/net`, stop };
  } catch (e) {
    stop();
    throw e;
  }
}
