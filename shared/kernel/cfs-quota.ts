/**
 * CFS bandwidth limits of a cpu cgroup: v2 `cpu.max`, v1 `cpu.cfs_quota_us` with `cpu.cfs_period_us`. A quota
 * is CPU time per period, so quota / period is the number of CPUs' worth the cgroup may use.
 */
import { posix } from 'node:path';
import { readCgroupFile, type CpuCgroup } from './cgroups.js';

/** The kernel refuses CFS quotas below 1 ms. */
export const MIN_QUOTA_US = 1000;

export interface CfsLimit {
  /** Microseconds per period, or undefined for no limit. */
  quotaUs: number | undefined;
  periodUs: number;
}

/** v2 `cpu.max`: "max 100000" or "50000 100000". */
export function parseCpuMax(text: string): CfsLimit {
  const [quota, period] = text.trim().split(/\s+/);
  const periodUs = Number(period);
  if (!Number.isInteger(periodUs) || periodUs <= 0 || quota === undefined || (quota !== 'max' && !/^\d+$/.test(quota))) {
    throw new Error(`malformed cpu.max: '${text.trim()}'`);
  }
  return { quotaUs: quota === 'max' ? undefined : Number(quota), periodUs };
}

/** v1 `cpu.cfs_quota_us` (-1 = no limit) and `cpu.cfs_period_us`. */
export function parseCfsV1(quotaText: string, periodText: string): CfsLimit {
  const quota = Number(quotaText.trim());
  const periodUs = Number(periodText.trim());
  if (!Number.isInteger(quota) || !Number.isInteger(periodUs) || periodUs <= 0) {
    throw new Error(`malformed cfs quota/period: '${quotaText.trim()}' '${periodText.trim()}'`);
  }
  return { quotaUs: quota < 0 ? undefined : quota, periodUs };
}

/** The file that holds the quota: what a throttle writes. */
export function cfsQuotaFile(cg: CpuCgroup): string {
  return posix.join(cg.dir, cg.version === 2 ? 'cpu.max' : 'cpu.cfs_quota_us');
}

/** The limit of cgroup directory `dir`; undefined when it cannot be read. Throws on malformed files. */
export function readCfsLimit(dir: string, version: 1 | 2): CfsLimit | undefined {
  if (version === 2) {
    const text = readCgroupFile(dir, 'cpu.max');
    return text === undefined ? undefined : parseCpuMax(text);
  }
  const quota = readCgroupFile(dir, 'cpu.cfs_quota_us');
  const period = readCgroupFile(dir, 'cpu.cfs_period_us');
  return quota === undefined || period === undefined ? undefined : parseCfsV1(quota, period);
}

/** CPUs allowed by the quotas of the cgroup and of every ancestor up to the mount (Infinity when none limits). */
export function quotaCpus(cg: CpuCgroup): number {
  let min = Infinity;
  for (let dir = cg.dir; ; dir = posix.dirname(dir)) {
    const limit = readCfsLimit(dir, cg.version);
    if (limit?.quotaUs !== undefined) min = Math.min(min, limit.quotaUs / limit.periodUs);
    if (dir === cg.mountDir || dir === '/' || !dir.startsWith(cg.mountDir)) return min;
  }
}
