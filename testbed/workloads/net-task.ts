/**
 * A task with its own network identity, started by the compiled `ferry run --net` inside a host of the L2
 * segment (l2-segment.ts): what the issue-16 tests migrate. stop() kills it (pid 1 of its pid namespace: its
 * tree and network namespace go with it) and waits, bounded, until the veth's outer end is gone from the host.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TaskNetwork } from '../../shared/kernel/task-network.js';
import { describeResult, runFerry, type FerryResult } from '../ferry-process.js';
import type { Host } from '../netns-hosts.js';
import { ip } from '../netns-names.js';
import { waitFor } from '../wait-for.js';

export interface NetTaskOptions {
  /** ADDRESS/PREFIX. */
  net: string;
  /** More flags of `ferry run` (--bridge, --mac, --gateway, --mounts private, ...). */
  runArgs?: readonly string[];
  /** The command and its arguments; default sleep 600. */
  command?: readonly string[];
  /** Aborted: `ferry run` gets SIGTERM (runFerry). */
  signal?: AbortSignal;
}

export interface NetTaskHandle {
  /** Host pid of the task (what `ferry migrate` takes). */
  pid: number;
  launcherPid: number;
  network: TaskNetwork;
  host: Host;
  /** SIGKILL to the task and its launcher, then waits until its outer link is gone from its host; removes its logs. */
  stop(): Promise<void>;
}

/** `ferry run --net ...` as it ended (for tests of its refusals): exit code, error, stdout. */
export function runNetTask(host: Host, dir: string, name: string, o: NetTaskOptions): Promise<FerryResult> {
  const command = o.command ?? ['sleep', '600'];
  return runFerry(['run', '--json', '--name', name, '--log-dir', dir, '--net', o.net, ...(o.runArgs ?? []), '--', ...command], { host, timeoutMs: 30_000, signal: o.signal });
}

export async function startNetTask(host: Host, dir: string, name: string, o: NetTaskOptions): Promise<NetTaskHandle> {
  const run = await runNetTask(host, dir, name, o);
  if (run.exitCode !== 0) throw new Error(`ferry run --net: ${describeResult(run)}`);
  const task = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { pid: number; launcherPid: number; network: TaskNetwork };
  const outerPresent = async (): Promise<boolean> => (await ip(['-n', host.name, '-j', 'link', 'show'])).includes(`"ifname":"${task.network.outerLink}"`);
  return {
    ...task,
    host,
    stop: async () => {
      for (const pid of [task.pid, task.launcherPid]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await waitFor(() => !existsSync(`/proc/${task.pid}`), 10_000, `the net task ${task.pid} to exit`);
      await waitFor(async () => !(await outerPresent()), 10_000, `${task.network.outerLink} to leave ${host.name} with the task`);
      for (const f of ['.out', '.err']) rmSync(join(dir, name + f), { force: true });
    },
  };
}
