/**
 * The cgroup throttle (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), for a tree that has a cpu cgroup of its own
 * (shared/kernel/cgroups.ts says when): a lower CFS quota is precise and invisible to the task; the old
 * value is written back on release.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { cfsQuotaFile, MIN_QUOTA_US, quotaCpus, readCfsLimit, type CfsLimit } from '../../shared/kernel/cfs-quota.js';
import type { CpuCgroup } from '../../shared/kernel/cgroups.js';
import { allowedCpuCount } from '../../shared/kernel/cpu-list.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import type { Logger } from '../../shared/logging/logger.js';
import { asError, ThrottleBase, type TaskThrottle, type ThrottleMethod } from './task-throttle.js';

/**
 * The quota that takes `percent` of the task's CPU away: the most CPU the task can use (its thread count, at
 * most the CPUs it may run on, at most what the cgroup and its ancestors already allow) times (1 - percent).
 * One thread on an unlimited cgroup gives `period * (1 - percent/100)`; never more than the quota in force,
 * so a throttle can only take away, and v1 (which refuses a child quota above its parent's) accepts it.
 * Idle threads count as busy ones: a task that keeps fewer CPUs busy than it has threads loses less than
 * `percent` (measuring its usage first would fix that at the cost of a sampling window before each set).
 */
export function throttledQuotaUs(percent: number, periodUs: number, taskCpus: number, limitCpus: number): number {
  const cpus = Math.min(taskCpus, limitCpus);
  return Math.max(MIN_QUOTA_US, Math.floor(cpus * periodUs * (1 - percent / 100)));
}

/** The most CPUs the tree can keep busy: its threads, at most the CPUs the root may run on. */
function taskCpus(rootPid: number): number {
  const tree = readProcessTree(rootPid);
  const threads = tree?.processes.reduce((n, p) => n + p.threads.length, 0) ?? 1;
  const cpus = allowedCpuCount(rootPid) || availableParallelism();
  return Math.max(1, Math.min(threads, cpus));
}

class CgroupThrottle extends ThrottleBase {
  readonly method: ThrottleMethod;
  private readonly file: string;
  private written: string;

  constructor(
    rootPid: number,
    log: Logger,
    private readonly cg: CpuCgroup,
    /** The file's content before the throttle, written back on release. */
    private readonly original: string,
    private readonly limit: CfsLimit,
  ) {
    super(rootPid, log);
    this.method = cg.version === 2 ? 'cgroup-v2' : 'cgroup-v1';
    this.file = cfsQuotaFile(cg);
    this.written = original;
  }

  protected async apply(percent: number): Promise<void> {
    let value = this.original;
    if (percent > 0) {
      // Re-read each time: threads come and go, and an ancestor's limit may have changed.
      const quota = throttledQuotaUs(percent, this.limit.periodUs, taskCpus(this.rootPid), quotaCpus(this.cg));
      value = this.cg.version === 2 ? `${quota} ${this.limit.periodUs}` : String(quota);
    }
    if (value === this.written) return;
    await writeFile(this.file, value);
    this.written = value;
  }

  protected async restore(): Promise<void> {
    if (this.written === this.original) return;
    try {
      await writeFile(this.file, this.original);
      this.written = this.original;
    } catch (e) {
      // The cgroup was removed (its task gone): nothing is left to restore.
      const code = (e as { code?: unknown }).code;
      if (code !== 'ENOENT' && code !== 'ENODEV') throw e;
    }
  }
}

/** Probes the cgroup (reads the quota, writes it back unchanged); the reason when it cannot be used. */
export async function openCgroupThrottle(rootPid: number, log: Logger, cg: CpuCgroup): Promise<TaskThrottle | string> {
  const file = cfsQuotaFile(cg);
  try {
    const original = readFileSync(file, 'utf8').trim();
    const limit = readCfsLimit(cg.dir, cg.version);
    if (!limit) return `cannot read the CFS period of ${cg.dir}`;
    // Read-only cgroupfs (many containers) or a delegated tree we may not write: find out now, not mid-round.
    await writeFile(file, original);
    return new CgroupThrottle(rootPid, log, cg, original, limit);
  } catch (e) {
    return `cannot use ${file}: ${asError(e).message}`;
  }
}
