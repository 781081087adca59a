/**
 * A task with its own network identity on a host of the L2 segment: `ferry run --net ADDRESS/PREFIX --bridge BR
 * --json -- CMD` run in that host (source-agent/task-network-setup.ts makes the namespace, eth0 inside with the
 * MAC, address and default route, `fy` + 8 hex outside on BR; only the task pins the namespace, so that its
 * death takes the veth along). stop() kills the task, its launcher and every copy registered with `also`, by
 * pid, and removes its log files.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describeResult, runFerry } from '../ferry-process.js';
import type { Host } from '../netns-hosts.js';
import type { TaskNetwork } from '../../shared/kernel/task-network.js';

export interface NetTask {
  /** The task's root (pid 1 of its pid namespace), as this host sees it. */
  readonly pid: number;
  readonly address: string;
  readonly network: TaskNetwork;
  readonly outerLink: string;
  /** Kills this pid too at stop() (a restored copy, by the pid the migration reported). */
  also(pid: number): void;
  stop(): void;
}

/** Starts `argv` with `ferry run --net address/prefix --bridge bridge` in `host`; its logs go to `dir`. */
export async function startNetTask(host: Host, dir: string, name: string, bridge: string, address: string, prefix: number, argv: readonly string[]): Promise<NetTask> {
  const run = await runFerry(['run', '--json', '--name', name, '--log-dir', dir, '--net', `${address}/${prefix}`, '--bridge', bridge, '--', ...argv], { host, timeoutMs: 30_000 });
  if (run.exitCode !== 0) throw new Error(`ferry run --net: ${describeResult(run)}`);
  const task = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { pid: number; launcherPid: number; network: TaskNetwork };
  const pids = [task.pid, task.launcherPid];
  return {
    pid: task.pid,
    address,
    network: task.network,
    outerLink: task.network.outerLink,
    also: (p) => pids.push(p),
    stop: () => {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      for (const f of ['.out', '.err']) rmSync(join(dir, name + f), { force: true });
    },
  };
}
