/** The cgroup, CFS quota and CPU list parsers on fixtures, and the cgroup throttle's quota arithmetic. */
import { describe, expect, it } from 'vitest';
import { MIN_QUOTA_US, parseCfsV1, parseCpuMax } from '../../shared/kernel/cfs-quota.js';
import { parseCgroupMounts, parseProcCgroup } from '../../shared/kernel/cgroups.js';
import { countCpuList } from '../../shared/kernel/cpu-list.js';
import { throttledQuotaUs } from '../../source-agent/throttle/cgroup-throttle.js';

// A hybrid host (v1 cpu hierarchy, v2 unified), a container's sub-tree mount, and lines of other filesystems.
const MOUNTINFO = [
  '25 1 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct',
  '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:7 master:3 - cgroup2 cgroup2 rw,nsdelegate',
  '52 41 0:38 /docker/abc /mnt/my\\040cgroup rw,relatime - cgroup2 cgroup2 rw',
  'not a mountinfo line',
  '',
].join('\n');

describe('parseCgroupMounts', () => {
  const mounts = parseCgroupMounts(MOUNTINFO);

  it('finds the v1 and v2 mounts, with the v1 controllers from the super options', () => {
    expect(mounts).toEqual([
      { version: 1, root: '/', mountPoint: '/sys/fs/cgroup/cpu,cpuacct', controllers: ['rw', 'cpu', 'cpuacct'] },
      { version: 1, root: '/', mountPoint: '/sys/fs/cgroup/systemd', controllers: ['rw', 'xattr', 'name=systemd'] },
      { version: 2, root: '/', mountPoint: '/sys/fs/cgroup/unified', controllers: [] },
      { version: 2, root: '/docker/abc', mountPoint: '/mnt/my cgroup', controllers: [] },
    ]);
  });

  it('unescapes octal escapes in the root and the mount point', () => {
    const [m] = parseCgroupMounts('60 1 0:40 /a\\134b\\011c /x\\012y rw - cgroup2 cgroup2 rw');
    expect(m).toMatchObject({ root: '/a\\b\tc', mountPoint: '/x\ny' });
  });
});

describe('parseProcCgroup', () => {
  it('reads v1 lines with their controllers and the v2 line with none', () => {
    const text = '9:name=systemd:/\n1:cpu,cpuacct:/ferry/task\n4:memory:/process_api/26430\n0::/user.slice/session-1.scope\n';
    expect(parseProcCgroup(text)).toEqual([
      { hierarchyId: 9, controllers: ['name=systemd'], path: '/' },
      { hierarchyId: 1, controllers: ['cpu', 'cpuacct'], path: '/ferry/task' },
      { hierarchyId: 4, controllers: ['memory'], path: '/process_api/26430' },
      { hierarchyId: 0, controllers: [], path: '/user.slice/session-1.scope' },
    ]);
  });

  it('keeps a path that itself contains colons, and skips lines that are not memberships', () => {
    expect(parseProcCgroup('0::/a:b:c\ngarbage\n')).toEqual([{ hierarchyId: 0, controllers: [], path: '/a:b:c' }]);
  });
});

describe('CFS limits', () => {
  it('parses v2 cpu.max, with and without a quota', () => {
    expect(parseCpuMax('max 100000\n')).toEqual({ quotaUs: undefined, periodUs: 100000 });
    expect(parseCpuMax('50000 100000\n')).toEqual({ quotaUs: 50000, periodUs: 100000 });
  });

  it('refuses a malformed cpu.max', () => {
    for (const bad of ['', 'max', '50000', '-1 100000', 'max 0', 'max x', '1.5 100000']) expect(() => parseCpuMax(bad), bad).toThrow(/malformed cpu.max/);
  });

  it('parses v1 cfs_quota_us (-1 is no limit) with cfs_period_us', () => {
    expect(parseCfsV1('-1\n', '100000\n')).toEqual({ quotaUs: undefined, periodUs: 100000 });
    expect(parseCfsV1('25000\n', '50000\n')).toEqual({ quotaUs: 25000, periodUs: 50000 });
    expect(() => parseCfsV1('x', '100000')).toThrow(/malformed cfs/);
    expect(() => parseCfsV1('1000', '0')).toThrow(/malformed cfs/);
  });
});

describe('countCpuList', () => {
  it('counts single CPUs and ranges', () => {
    expect(countCpuList('0-1\n')).toBe(2);
    expect(countCpuList('0-3,8,10-11')).toBe(7);
    expect(countCpuList('5')).toBe(1);
  });
});

describe('throttledQuotaUs', () => {
  it('takes the percent of one CPU from a one-thread task on an unlimited cgroup', () => {
    expect(throttledQuotaUs(50, 100000, 1, Infinity)).toBe(50000);
    expect(throttledQuotaUs(75, 100000, 1, Infinity)).toBe(25000);
  });

  it('scales with the CPUs the task can use, at most what the quotas in force allow', () => {
    expect(throttledQuotaUs(50, 100000, 4, Infinity)).toBe(200000);
    expect(throttledQuotaUs(50, 100000, 4, 0.6)).toBe(30000);
  });

  it('never goes below the kernel minimum', () => {
    expect(throttledQuotaUs(99, 10000, 1, Infinity)).toBe(MIN_QUOTA_US);
  });
});
