/**
 * End to end, lazy restore (issue 11): the dest's pager pages the restored copy in after the resume, faulted
 * pages first, each confirmed against the frozen original by the source. Between two network-namespace hosts:
 * the memory-verifying workload at 256 MiB and 1 GiB (it checks every page the instant it resumes, racing the
 * fill, and again after it), a python process, a fork + mremap + munmap + madvise in the task while its pages
 * stream in; and the faults: a page the tracker missed (found in the fill, its bytes sent from the original),
 * the dest agent killed during the fill (the pager carries on; the restarted agent adopts it), the pager killed
 * during the fill (its guardian kills the copy: no copy runs on a zero page; the original resumes), and a
 * failure right after the pager started (the original resumes with verified memory).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  eventually,
  hasCriu,
  makeTempDir,
  requireBuilt,
  runMigrate,
  startDestAgent,
  startMigrate,
  type DestAgentHandle,
  type FerryResult,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { continueProcess } from '../../testbed/process-probes.js';
import { pagersOf } from '../../testbed/dest-agent.js';
import { memtestsIn, taskCopies } from '../../testbed/task-copies.js';
import { startPythonCheck } from '../../testbed/workloads/python-check.js';
import { readPidState, startMemtest, type ChurnReport, type MemtestHandle, type VerifyReport } from '../../testbed/workloads/memtest.js';
import { probeLazyRestore } from '../../dest-agent/lazy/lazy-restore-support.js';

const lazy = await probeLazyRestore();
const runnable =
  canRun('e2e lazy restore', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare'), hasCommand('python3'), hasCommand('pgrep')) &&
  canRun('e2e lazy restore (CRIU)', hasCriu()) &&
  canRun('e2e lazy restore (pager)', { ok: lazy.ok, reason: lazy.ok ? '' : `lazy restore is not possible here: ${lazy.reason}` });

const FAULTS = { FERRY_TEST_FAULTS: '1' };

function figures(r: FerryResult): string {
  const s = r.summary!;
  const p = s.phases;
  const ms = (x: number | undefined): string => `${Math.round(x ?? 0)} ms`;
  return (
    `downtime ${ms(s.downtimeMs)} (dump ${ms(p.dumpMs)}, final delta ${ms(p.finalDeltaMs)}, rebuild ${ms(p.rebuildMs)}, restore ${ms(p.restoreMs)}, commit ${ms(p.commitMs)}); ` +
    `fill ${ms(s.fillMs)} after the resume (${s.fillFaults} faults, ${s.fillFaultsWaited} waited for the source; ${s.confirmedPages} confirmed, ${s.replacedPages} replaced)`
  );
}

describe.skipIf(!runnable)('lazy restore between two network-namespace hosts', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];
  const stops: (() => void)[] = [];

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-lazy-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts, { env: FAULTS });
  }, 60_000);

  afterAll(async () => {
    for (const t of tasks) await t.stop();
    for (const stop of stops) stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  async function memtest(name: string, mib: number, more: Partial<Parameters<typeof startMemtest>[0]> = {}): Promise<MemtestHandle> {
    const t = await startMemtest({ name: `lazy-${name}-${process.pid}`, mib, dirtyMibPerSec: 8, stateDir: stateDir!, netns: hosts!.src.netns, ...more });
    tasks.push(t);
    return t;
  }

  /** Exit 0, lazily restored, exactly one copy (the dest's), running, every page intact, no pager left. */
  async function expectMigrated(task: MemtestHandle, r: FerryResult): Promise<number> {
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    task.adopt(s.restoredPid);
    expect(s.restoreMode).toBe('lazy');
    expect(s.fillMs).toBeGreaterThan(0);
    expect(readPidState(s.restoredPid)).toMatch(/^[RSD]$/);
    expect((await task.verify(s.restoredPid)).bad_pages).toBe(0);
    await eventually(() => readPidState(task.rootPid) === undefined, 10_000, 'the original to be gone');
    expect(taskCopies(hosts!, task.name).map((c) => c.pid)).toEqual([s.restoredPid]);
    await eventually(() => pagersOf(dest!.workDir).length === 0 && dest!.leftovers().length === 0, 10_000, 'the pager to exit and the session to be removed');
    return s.restoredPid;
  }

  for (const mib of [256, 1024]) {
    it(`memtest at ${mib} MiB: checks every page the instant it resumes (racing the fill) and after it`, async () => {
      const task = await memtest(`m${mib}`, mib, { onResume: 'verify' });
      const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], timeoutMs: 180_000 });
      const copy = await expectMigrated(task, r);
      const atResume = (await task.resumeReport(copy)) as VerifyReport;
      expect(atResume).toMatchObject({ host_pid: copy, bad_pages: 0, bad_words: 0 });
      console.log(`lazy ${mib} MiB: ${figures(r)}; the copy's check at its resume took ${Math.round(atResume.verify_ms)} ms`);
    }, 240_000);
  }

  it('a python process keeps its data', async () => {
    const py = await startPythonCheck(hosts!.src.netns, stateDir!, `lazy-py-${process.pid}`);
    const copies: number[] = [];
    stops.push(() => py.stop(copies));
    const r = await runMigrate(hosts!, py.pid, dest, { args: ['--restore', 'lazy'], timeoutMs: 90_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    copies.push(r.summary!.restoredPid);
    expect(r.summary!.restoreMode).toBe('lazy');
    const check = await py.check(r.summary!.restoredPid);
    expect(check.bad).toBe(0);
    expect(check.writes).toBeGreaterThan(0);
  }, 120_000);

  it('fork, mremap, munmap and madvise(DONTNEED) in the task while its pages stream in', async () => {
    const task = await memtest('churn', 128, { churnMib: 16, onResume: 'churn' });
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], timeoutMs: 90_000 });
    const copy = await expectMigrated(task, r);
    const churn = (await task.resumeReport(copy)) as ChurnReport;
    expect(churn).toMatchObject({ host_pid: copy, child_exit: 0, zero_bad_pages: 0, scratch_bad_pages: 0 });
    expect(churn.unmapped_pages).toBeGreaterThan(0);
  }, 120_000);

  it('a write the tracker missed is found in the fill and its bytes sent from the frozen original', async () => {
    const task = await memtest('missed', 64);
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], env: { ...FAULTS, FERRY_FAULT: 'source.tracker-misses-page' }, timeoutMs: 90_000 });
    await expectMigrated(task, r);
    expect(r.summary!.replacedPages, describeResult(r)).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('the dest agent killed -9 during the fill: the pager carries on, the restarted agent adopts it', async () => {
    const task = await memtest('kill-dest', 128);
    await dest!.restart({ env: { ...FAULTS, FERRY_FAULT: 'dest.commit-resumed:kill' } });
    const run = startMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], timeoutMs: 120_000 });
    let pagers: number[];
    try {
      await eventually(() => dest!.exited(), 60_000, 'the dest agent to die at the resume');
      pagers = pagersOf(dest!.workDir); // it outlives the agent
    } finally {
      await dest!.restart({ env: FAULTS });
    }
    expect(pagers).toHaveLength(1);
    const r = await run.done;
    await expectMigrated(task, r);
    expect(dest!.stderr()).toContain('took over a resumed copy whose pager is filling its pages');
  }, 180_000);

  it('the dest agent stopped (SIGTERM) during the fill: it leaves its pager filling, never reports a failed fill', async () => {
    const task = await memtest('term-dest', 128);
    await dest!.restart({ env: { ...FAULTS, FERRY_FAULT: 'dest.commit-resumed:stop' } });
    const run = startMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], timeoutMs: 120_000 });
    try {
      await eventually(() => dest!.stderr().includes('"point":"dest.commit-resumed"'), 60_000, 'the dest agent to stop at the resume');
      await eventually(() => readPidState(dest!.pid) === 'T', 10_000, 'the dest agent to be stopped');
      process.kill(dest!.pid, 'SIGTERM');
      await continueProcess(dest!.pid);
      await eventually(() => dest!.exited(), 30_000, 'the dest agent to exit on SIGTERM');
      expect(pagersOf(dest!.workDir)).toHaveLength(1);
    } finally {
      await dest!.restart({ env: FAULTS });
    }
    const r = await run.done;
    await expectMigrated(task, r);
  }, 180_000);

  it('the pager killed during the fill: its guardian kills the copy, the original resumes (FILL_FAILED)', async () => {
    const task = await memtest('kill-pager', 64);
    const earlier = new Set(memtestsIn(hosts!.dst.netns)); // copies earlier tests left running
    // The source stops as the fill begins: unconfirmed pages stay unconfirmed, so the fill cannot end by itself.
    const run = startMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], env: { ...FAULTS, FERRY_FAULT: 'source.fill:stop' }, timeoutMs: 120_000 });
    await eventually(() => run.stderr().includes('"point":"source.fill"'), 60_000, 'the source to stop at the fill');
    const pagers = pagersOf(dest!.workDir);
    expect(pagers).toHaveLength(1);
    // Not by its command line: reading it would fault on the copy's stack page, which the pager holds back.
    const copy = memtestsIn(hosts!.dst.netns).filter((pid) => !earlier.has(pid))[0]!;
    expect(copy).toBeDefined();
    task.adopt(copy);
    process.kill(pagers[0]!, 'SIGKILL');
    const diag = (): string => {
      const read = (f: string): string => {
        try {
          return readFileSync(f, 'utf8').trim();
        } catch (e) {
          return String(e);
        }
      };
      const status = execFileSync('sh', ['-c', `cat ${dest!.workDir}/*/pager/status 2>&1; ps -eo pid,ppid,stat,wchan:30,cmd | grep -E 'ferry_pager|memtest' | grep -v grep`], { encoding: 'utf8' });
      return `the guardian to kill the copy (${copy}: ${read(`/proc/${copy}/stat`)} wchan ${read(`/proc/${copy}/wchan`)}; ${status}; dest log ${dest!.stderr().slice(-2000)})`;
    };
    await eventually(() => readPidState(copy) === undefined || readPidState(copy) === 'Z', 10_000, diag);
    await continueProcess(run.child.pid!);
    const r = await run.done;
    expect(r.exitCode, describeResult(r)).toBe(1);
    expect(r.error?.code).toBe('FERRY-7005');
    expect(r.error?.sourceState).toBe('running');
    // Exactly one copy: the original, running, its memory intact.
    await eventually(() => /^[RSD]$/.test(readPidState(task.rootPid) ?? ''), 10_000, 'the original to run again');
    expect(taskCopies(hosts!, task.name).map((c) => c.pid)).toEqual([task.rootPid]);
    expect((await task.verify()).bad_pages).toBe(0);
    await eventually(() => dest!.leftovers().length === 0, 10_000, 'the dest session to be removed');
  }, 180_000);

  it('a failure right after the pager started rolls back: the original resumes with verified memory, no pager left', async () => {
    const task = await memtest('pager-started', 64);
    await dest!.restart({ env: { ...FAULTS, FERRY_FAULT: 'dest.pager-started' } });
    try {
      const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--restore', 'lazy'], timeoutMs: 90_000 });
      expect(r.exitCode, describeResult(r)).toBe(1);
      expect(r.error?.sourceState).toBe('running');
      expect(readPidState(task.rootPid)).toMatch(/^[RSD]$/);
      expect((await task.verify()).bad_pages).toBe(0);
      expect(taskCopies(hosts!, task.name).map((c) => c.pid)).toEqual([task.rootPid]);
      await eventually(() => pagersOf(dest!.workDir).length === 0 && dest!.leftovers().length === 0, 10_000, () => `the pager and the session to be gone (pagers ${pagersOf(dest!.workDir).join(', ')}, left ${dest!.leftovers().join(', ')})`);
    } finally {
      await dest!.restart({ env: FAULTS });
    }
  }, 120_000);
});
