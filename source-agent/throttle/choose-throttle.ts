/**
 * Which throttle a tree gets, chosen once when the throttle is created: the cgroup throttle when the tree has
 * a cpu cgroup of its own (precise, invisible to the task) and it can be written, else the duty cycle (needs
 * nothing from the host). The reason for a duty cycle is logged.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { ownCpuCgroup } from '../../shared/kernel/cgroups.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import { silentLogger, type Logger } from '../../shared/logging/logger.js';
import { openCgroupThrottle } from './cgroup-throttle.js';
import { DEFAULT_DUTY_PERIOD_MS, DutyCycleThrottle } from './duty-cycle-throttle.js';
import type { TaskThrottle } from './task-throttle.js';

export interface TaskThrottleOptions {
  /** Duty-cycle period (default 100 ms). The cgroup methods keep the cgroup's own CFS period. */
  periodMs?: number;
  log?: Logger;
}

/**
 * Creates the throttle for the tree below `rootPid`, taking nothing away yet (percent 0). Throws TASK_EXITED
 * when the task is gone.
 */
export async function createTaskThrottle(rootPid: number, opts: TaskThrottleOptions = {}): Promise<TaskThrottle> {
  const log = opts.log ?? silentLogger;
  const periodMs = opts.periodMs ?? DEFAULT_DUTY_PERIOD_MS;
  if (!Number.isFinite(periodMs) || periodMs < 10) throw new RangeError(`throttle period must be >= 10 ms, not ${periodMs}`);
  const tree = readProcessTree(rootPid);
  const startTime = readStat(rootPid)?.startTime;
  if (!tree || startTime === undefined) {
    throw new FerryError('TASK_EXITED', { phase: 'precopy', side: 'source', sourceState: 'gone', detail: `no process ${rootPid}` });
  }
  let reason: string;
  const cg = ownCpuCgroup(tree, rootPid);
  if (typeof cg === 'string') {
    reason = cg;
  } else {
    const throttle = await openCgroupThrottle(rootPid, log, cg);
    if (typeof throttle !== 'string') {
      log.info('task throttle: cgroup quota', { rootPid, method: throttle.method, cgroup: cg.dir });
      return throttle;
    }
    reason = throttle;
  }
  log.info('task throttle: duty cycle', { rootPid, periodMs, reason });
  return new DutyCycleThrottle(rootPid, log, startTime, periodMs);
}
