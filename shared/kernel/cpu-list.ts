/** Kernel CPU lists ("0-3,8,10-11"), as in Cpus_allowed_list of /proc/PID/status. */
import { readProcText } from './proc-status.js';

/** "0-3,8,10-11" -> 7. */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    if (a === undefined || Number.isNaN(a)) continue;
    n += b === undefined || Number.isNaN(b) ? 1 : b - a + 1;
  }
  return n;
}

/** How many CPUs the task may run on; undefined when it is gone or its status has no Cpus_allowed_list. */
export function allowedCpuCount(pid: number): number | undefined {
  const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(readProcText(`/proc/${pid}/status`) ?? '')?.[1];
  return list === undefined ? undefined : countCpuList(list);
}
