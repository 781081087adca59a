/**
 * End to end with the uffd-wp tracker: a userfaultfd is injected into the running task by ptrace, pre-copy
 * rounds after round 0 read only the pages written since (asserted on the counters), and the restored copy
 * verifies its memory: the C workload, and a python3 process that checks its own data.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UffdWpTracker } from '../../source-agent/trackers/uffd-wp/uffd-wp-tracker.js';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  hasCriu,
  makeTempDir,
  requireBuilt,
  runMigrate,
  startDestAgent,
  type DestAgentHandle,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';
import { startPythonCheck } from '../../testbed/workloads/python-check.js';

const probe = await UffdWpTracker.probe();
const uffd: Requirement = { ok: probe.ok, reason: `needs uffd-wp on this kernel (${probe.ok ? '' : probe.reason})` };
const runnable =
  canRun('e2e uffd-wp', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare'), hasCommand('python3'), uffd) &&
  canRun('e2e uffd-wp (CRIU)', hasCriu());

describe.skipIf(!runnable)('migration with --tracker uffd-wp', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];
  const stops: (() => void)[] = [];
  const extraPids: number[] = [];

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-uffd-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    for (const t of tasks) await t.stop();
    for (const stop of stops) stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('the memory-verifying workload: later rounds read only the written pages', async () => {
    const task = await startMemtest({ name: `uffd-${process.pid}`, mib: 64, dirtyMibPerSec: 4, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--tracker', 'uffd-wp'], timeoutMs: 90_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    task.adopt(s.restoredPid);
    expect(s.tracker).toBe('uffd-wp');
    expect(s.rounds.length).toBeGreaterThanOrEqual(2);
    const [round0, ...later] = s.rounds;
    expect(round0!.bytesRead).toBeGreaterThanOrEqual(64 * 2 ** 20);
    for (const round of later) {
      // 4 MiB/s for a fraction of a second: a few hundred pages, never the whole 64 MiB again.
      expect(round.bytesRead, JSON.stringify(round)).toBeLessThan(round0!.bytesRead / 4);
      expect(round.bytesRead).toBeGreaterThanOrEqual(round.bytesSent);
    }
    console.log(`uffd-wp rounds (pages read / sent): ${s.rounds.map((x) => `${x.bytesRead / 4096}/${x.dirtyPages}`).join(', ')}`);
    expect((await task.verify(s.restoredPid)).bad_pages).toBe(0);
  }, 120_000);

  it('a python3 process keeps its data (it checks itself after the move)', async () => {
    const py = await startPythonCheck(hosts!.src.netns, stateDir!, `uffd-py-${process.pid}`);
    stops.push(() => py.stop(extraPids));
    expect(readPidState(py.pid)).toMatch(/^[RSD]$/);
    const r = await runMigrate(hosts!, py.pid, dest, { args: ['--tracker', 'uffd-wp'], timeoutMs: 90_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const restored = r.summary!.restoredPid;
    extraPids.push(restored);
    expect(r.summary!.tracker).toBe('uffd-wp');
    const check = await py.check(restored);
    expect(check.bad).toBe(0);
    expect(check.writes).toBeGreaterThan(0);
  }, 120_000);
});
