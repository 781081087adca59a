/**
 * negotiate (local half): is PID a task Ferry can carry? Everything here only reads /proc; a refusal leaves
 * the task untouched.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { readFileSync } from 'node:fs';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { readProcessTree, type TreeProcess } from '../../shared/kernel/process-tree.js';
import { readStat, readStatus, statusIsPidNamespaceRoot } from '../../shared/kernel/proc-status.js';

export interface TargetTree {
  rootPid: number;
  name: string;
  /** Pid-namespace root: its pids are private, so they cannot clash on the dest. */
  pidNamespaceRoot: boolean;
  tasks: TreeProcess[];
  /** Resident plus swapped bytes of the whole tree: what pre-copy will send (the dest budgets it). */
  residentBytes: number;
  /** VMAs of the whole tree (lines of /proc/PID/maps): the freeze's cost grows with them (cost-model.ts). */
  vmas: number;
}

export function inspectTarget(pid: number): TargetTree {
  const refuse = (key: ConstructorParameters<typeof FerryError>[0], detail: string): never => {
    throw new FerryError(key, { phase: 'negotiate', side: 'source', sourceState: 'running', detail });
  };
  if (pid === 1) refuse('TASK_IS_HOST_INIT', 'pid 1 of this host');
  const status = readStatus(pid);
  const stat = readStat(pid);
  if (!status || !stat) return refuse('TASK_NOT_FOUND', `/proc/${pid} does not exist`);
  if (status.kthread || (stat.flags & 0x00200000) !== 0) refuse('TASK_IS_KERNEL_THREAD', `${pid} (${status.name}) is a kernel thread`);
  if (status.tgid !== pid) refuse('BAD_ARGUMENT', `${pid} is a thread of process ${status.tgid}; give the process's pid`);
  for (let p: number | undefined = process.pid; p !== undefined && p > 1; p = readStatus(p)?.ppid) {
    if (p === pid) refuse('TASK_IS_FERRY', `${pid} is this Ferry process or one of its ancestors`);
  }
  if (status.state === 'T' || status.state === 't') refuse('TASK_STOPPED', `${pid} is in state ${status.state}`);

  const tasks = readProcessTree(pid)?.processes ?? [];
  if (tasks.length === 0) refuse('TASK_NOT_FOUND', `${pid} exited`);
  // CRIU needs the session leader inside the tree (it recreates the session); the same for the process group.
  const pids = new Set(tasks.map((t) => t.hostPid));
  if (!pids.has(stat.session)) {
    refuse('TASK_SESSION_OUTSIDE_TREE', `the session leader of ${pid} is ${stat.session}, which is not in the task's tree`);
  }
  // Swapped pages are sent too: the dest's budget and free-space check must count them.
  const residentBytes = tasks.reduce((n, t) => n + residentPages(t.hostPid) * PAGE_SIZE + swappedBytes(t.hostPid), 0);
  const vmas = tasks.reduce((n, t) => n + vmaCount(t.hostPid), 0);
  return { rootPid: pid, name: status.name, pidNamespaceRoot: statusIsPidNamespaceRoot(status), tasks, residentBytes, vmas };
}

/** Lines of /proc/PID/maps; 0 once the task is gone. */
function vmaCount(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/maps`, 'latin1');
    let n = 0;
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
    return n;
  } catch {
    return 0;
  }
}

/** VmSwap of /proc/PID/status in bytes; 0 without swap or once the task is gone. */
function swappedBytes(pid: number): number {
  try {
    const m = /^VmSwap:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Second field of /proc/PID/statm; 0 once the task is gone. */
function residentPages(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) || 0;
  } catch {
    return 0;
  }
}
