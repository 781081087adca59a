/**
 * End to end, `ferry run` isolation that CRIU can carry (issue 13, item 3): a task started with its own IPC
 * namespace, its own mount namespace, or both, holding a SysV shared memory segment with a token in it, is
 * migrated between two network-namespace hosts and checked after the move: the copy is in an IPC namespace of
 * its own that still holds the segment and the token (read through a fresh attach), and it reads its own
 * /proc (/proc/self is its own pid 1, /proc/1 is itself, one proc at /proc). A rollback (a failed restore,
 * or a failure at the commit once the dest restored its copy) leaves the original running with its namespaces
 * and its segment, no copy, and no mount on the host.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { twoHostFixture } from '../support/two-host-fixture.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { describeResult, eventually, hasCriu, runMigrate, startDestAgent } from '../../testbed/two-hosts.js';
import { readMountInfo } from '../../shared/kernel/mount-info.js';
import { FERRY_SHM_KEY, startIsolatedTask, type IsolatedTaskHandle, type IsolatedTaskReport } from '../../testbed/workloads/isolated-task.js';

const runnable = canRun('e2e isolation', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'), hasCommand('python3')) && canRun('e2e isolation (CRIU)', hasCriu());

const hostIpcNs = (): string => readlinkSync('/proc/self/ns/ipc');
const hostMntNs = (): string => readlinkSync('/proc/self/ns/mnt');
/** The host IPC namespace's segments with the task's key (the key column of /proc/sysvipc/shm is decimal). */
const hostSegments = (): number => readFileSync('/proc/sysvipc/shm', 'utf8').split('\n').slice(1).filter((l) => l.trim().split(/\s+/)[0] === String(FERRY_SHM_KEY)).length;
/**
 * This host's mounts but nsfs ones (other tests on the machine add and remove `ip netns` names at any time):
 * a mount CRIU or the rollback left here would show up among them.
 */
const hostMounts = (): string[] => (readMountInfo('self') ?? []).filter((m) => m.fsType !== 'nsfs').map((m) => `${m.mountPoint} ${m.fsType}`);

function expectIsolation(r: IsolatedTaskReport, t: IsolatedTaskHandle, runArgs: readonly string[]): void {
  const json = JSON.stringify(r);
  if (runArgs.includes('--ipc')) {
    expect(r.shm, json).toBe(t.token);
    expect(r.ipcNs, json).not.toBe(hostIpcNs());
    expect(r.sysvShm, json).toBe(1);
  }
  if (runArgs.includes('--mounts')) {
    expect(r.mntNs, json).not.toBe(hostMntNs());
    expect(r.procSelf, json).toBe('1');
    expect(r.proc1, json).toMatch(/python3$/);
    expect(r.procFs, json).toEqual(['proc']);
  }
}

describe.skipIf(!runnable)('ferry run isolation that CRIU carries, between two network-namespace hosts', () => {
  const fx = twoHostFixture('ferry-e2e-isolation-');

  async function task(name: string, runArgs: string[], shm = true): Promise<{ t: IsolatedTaskHandle; copies: number[] }> {
    const t = await startIsolatedTask(fx.hosts.src, fx.dir, `${name}-${process.pid}`, runArgs, shm);
    const copies: number[] = [];
    fx.stops.push(() => t.stop(copies));
    return { t, copies };
  }

  it.each([
    ['ipc', ['--ipc', 'private']],
    ['mounts', ['--mounts', 'private']],
    ['both', ['--ipc', 'private', '--mounts', 'private']],
  ])('ferry run %s: the copy keeps its namespaces, its SysV segment and its own /proc', async (name, runArgs) => {
    const mountsBefore = hostMounts();
    // Without --ipc private a segment would be the host's, which CRIU refuses: that task makes none.
    const { t, copies } = await task(name, runArgs, runArgs.includes('--ipc'));
    const before = await t.report(t.pid);
    expectIsolation(before, t, runArgs);
    expect(hostSegments()).toBe(0);

    const r = await runMigrate(fx.hosts, t.pid, fx.dest, { timeoutMs: 60_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const copy = r.summary!.restoredPid;
    copies.push(copy);
    const after = await t.report(copy);
    expectIsolation(after, t, runArgs);
    expect(hostSegments()).toBe(0);
    expect(hostMounts()).toEqual(mountsBefore);
    console.log(`isolation ${name}: downtime ${Math.round(r.summary!.downtimeMs)} ms, dump ${Math.round(r.summary!.phases.dumpMs ?? 0)} ms, restore ${Math.round(r.summary!.phases.restoreMs ?? 0)} ms`);
  }, 120_000);

  it.each([
    ['dest.restore-fails', 'dest', 'FERRY-6003', 'restore', 'dest'],
    ['source.commit', 'source', 'FERRY-9001', 'commit', 'source'],
  ])('rolled back (FERRY_FAULT=%s on the %s): the original runs on with its namespaces, its segment and its /proc; no copy, no mount left', async (fault, where, code, phase, side) => {
    const runArgs = ['--ipc', 'private', '--mounts', 'private'];
    const mountsBefore = hostMounts();
    const { t } = await task(`rollback-${where}`, runArgs);
    const env = { FERRY_FAULT: fault, FERRY_TEST_FAULTS: '1' };
    const faulty = where === 'dest' ? await startDestAgent(fx.hosts, { env }) : fx.dest;
    try {
      const r = await runMigrate(fx.hosts, t.pid, faulty, { timeoutMs: 60_000, ...(where === 'source' ? { env } : {}) });
      expect(r.exitCode, describeResult(r)).toBe(1);
      expect(r.error, describeResult(r)).toMatchObject({ code, phase, side });
      const after = await t.report(t.pid);
      expectIsolation(after, t, runArgs);
      // source.commit fails after the dest restored a stopped copy in namespaces of its own: the rollback
      // killed it, so the task's token is in no other process's command line.
      await eventually(() => t.instances().every((p) => p === t.pid), 10_000, () => `only the original (${t.pid}) runs with the token: ${t.instances().join(', ')}`);
      expect(t.instances()).toEqual([t.pid]);
      expect(faulty.leftovers()).toEqual([]);
      expect(hostMounts()).toEqual(mountsBefore);
    } finally {
      if (faulty !== fx.dest) await faulty.stop();
    }
  }, 120_000);
});
