/**
 * Ferry's pager (native/pager/ferry-pager.c) serving a real `criu restore --lazy-pages`: one normal dump of the
 * memtest workload, its pages turned into the pager's store, then one restore per case, the test acting as the
 * agent over the control socket where a case needs one. Every case checks memtest's own verify (0 bad pages)
 * and the pager's stats; the fault cases check that the restored copy is killed, never run on a zero page.
 * Correctness only: this VM faults fresh memory slowly, so nothing here asserts on time.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPager, type PagerControl, type PagerStats, type PagerWant } from '../../dest-agent/lazy/pager-control.js';
import { pagerAlive, readPagerStatus, type StartedPager } from '../../dest-agent/lazy/pager-process.js';
import {
  dumpForLazy,
  lazyRestore,
  pagerSessionPaths,
  prepareLazyImages,
  readStorePages,
  startTestPager,
  waitDead,
  writeLazyPlan,
  type LazyImages,
  type LazyTaskImages,
  type PagerSessionPaths,
  type PlanChoices,
} from '../../testbed/pager-restore.js';
import { processStartTime, readPidState } from '../../testbed/process-probes.js';
import { canRun, criuPath, hasCommand, hasCriu, isRoot, type Requirement } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { waitFor } from '../../testbed/wait-for.js';
import { startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';
import { existsSync } from 'node:fs';
import { repoRoot } from '../../shared/repo-root.js';

const MIB = 96;
const CHURN_MIB = 8;

function uffdNoncoop(): Requirement {
  const criu = criuPath();
  if (!criu) return { ok: false, reason: 'needs CRIU' };
  try {
    execFileSync(criu, ['check', '--feature', 'uffd-noncoop'], { stdio: 'ignore', timeout: 30_000 });
    return { ok: true, reason: '' };
  } catch {
    return { ok: false, reason: 'needs userfaultfd with the non-cooperative events (`criu check --feature uffd-noncoop`)' };
  }
}

const pagerBuilt: Requirement = { ok: existsSync(join(repoRoot(), 'build/Release/ferry_pager')), reason: 'needs build/Release/ferry_pager (`npx node-gyp rebuild` or `npm ci`)' };
const runnable = canRun('e2e pager', isRoot(), hasCommand('gcc'), hasCommand('unshare'), pagerBuilt) && canRun('e2e pager (CRIU)', hasCriu(), uffdNoncoop());

describe.skipIf(!runnable)('the pager serves a lazy restore', () => {
  let root: string;
  let memtest: MemtestHandle;
  let lazy: LazyImages;
  let task: LazyTaskImages;
  let criu: string;
  let runs = 0;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    criu = criuPath() as string;
    root = makeTempDir('ferry-pager-');
    const images = join(root, 'images');
    const store = join(root, 'store');
    mkdirSync(images);
    mkdirSync(store);
    memtest = await startMemtest({ name: 'pager', mib: MIB, dirtyMibPerSec: 4, churnMib: CHURN_MIB, stateDir: join(root, 'state') });
    await dumpForLazy(criu, memtest.rootPid, images);
    // The original goes: only restored copies run from here on (memtest.stop() still reaps its launcher).
    const start = processStartTime(memtest.rootPid);
    process.kill(memtest.rootPid, 'SIGKILL');
    await waitDead(memtest.rootPid, start, 15_000);
    lazy = await prepareLazyImages(images, store);
    task = lazy.tasks[0] as LazyTaskImages;
    console.log(`pager e2e: ${lazy.tasks.length} task(s); pid ${task.nsPid}: ${task.nPages} manifest pages, ${task.ranges.length} ranges, ${task.rangePages} lazy pages`);
  }, 300_000);

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => console.warn(`cleanup: ${String(e)}`));
    await memtest?.stop();
    if (root && !process.env.FERRY_KEEP_PAGER_E2E) rmSync(root, { recursive: true, force: true });
  }, 120_000);

  interface Run {
    s: PagerSessionPaths;
    pager: StartedPager;
    restored: number;
    restoredStart: string | undefined;
    /** The test as the agent, connected before the restore: CRIU's restorer itself faults on a lazy page or two
     * (the thread's TLS, where sys_rseq writes), so an unconfirmed one must be answered or the restore blocks. */
    control: PagerControl;
    wants: PagerWant[];
    /** While true, every WANT is answered at once (CONFIRM, or REPLACE with the store's bytes for BYTES). */
    answering: boolean;
    /** WANTs that came while criu restore ran (the restorer's own faults on unconfirmed pages). */
    wantsDuringRestore: number;
  }

  /** Pages of the plan with no bytes (post-copy): only the store's bytes sent as REPLACE serve them. */
  let remoteOf: ((k: number) => boolean) | undefined;

  /** A fresh session dir, plan, pager, control connection and restore; the restored tree stays stopped. */
  async function restore(choices: PlanChoices, threads?: number): Promise<Run> {
    const s = pagerSessionPaths(join(root, `run-${runs++}`));
    mkdirSync(s.dir);
    await writeLazyPlan(lazy, s.planFile, choices);
    const pager = await startTestPager(lazy, s, threads);
    const run: Partial<Run> = { s, pager, wants: [], answering: true };
    cleanups.push(async () => {
      run.control?.close();
      if (pagerAlive(pager)) process.kill(pager.pid, 'SIGKILL');
      await Promise.race([pager.exited, new Promise((r) => setTimeout(r, 5000))]);
      if (run.restored !== undefined && processStartTime(run.restored) === run.restoredStart) {
        process.kill(run.restored, 'SIGKILL');
        await waitDead(run.restored, run.restoredStart, 15_000);
      }
    });
    const control = await connectPager(s.controlPath);
    run.control = control;
    control.on('want', (w) => {
      run.wants?.push(w);
      if (!run.answering) return;
      const bytes = w.bytes || (remoteOf !== undefined && Array.from({ length: w.count }, (_, i) => w.index + i).some(remoteOf));
      const answer = bytes ? control.replace(w.task, w.index, readStorePages(task.storeFile, w.index, w.count)) : control.confirm(w.task, w.index, w.count);
      answer.catch(() => undefined); // the connection may end with the pager's exit
    });
    const restored = await lazyRestore(criu, lazy, s);
    run.wantsDuringRestore = run.wants?.length ?? 0;
    run.restored = restored;
    run.restoredStart = processStartTime(restored);
    memtest.adopt(restored);
    return run as Run;
  }

  async function exitOf(run: Run, timeoutMs = 120_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the pager did not exit in ${timeoutMs} ms`)), timeoutMs).unref());
    return Promise.race([run.pager.exited, timeout]);
  }

  function expectStatsAddUp(stats: PagerStats, forks = 0): void {
    expect(stats.filledPages + stats.droppedPages).toBe(stats.totalPages);
    if (forks === 0) {
      expect(stats.totalPages).toBe(task.rangePages);
      expect(stats.filledPages).toBe(task.rangePages);
    }
  }

  /** Confirms the unconfirmed pages in the background, 1024 at a time, until done or the connection ends. */
  async function confirmRest(control: PagerControl, unconfirmed: (k: number) => boolean): Promise<void> {
    for (let k = 0; k < task.nPages && !control.closed; ) {
      if (!unconfirmed(k)) {
        k++;
        continue;
      }
      let n = 0;
      while (k + n < task.nPages && n < 1024 && unconfirmed(k + n)) n++;
      await control.confirm(task.nsPid, k, n).catch(() => undefined);
      k += n;
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  const halfUnconfirmed = (k: number): boolean => Math.floor(k / 64) % 2 === 1;

  it('(a) every page confirmed in the plan: the pager fills the stopped copy, the resumed copy verifies clean', async () => {
    const run = await restore({}, 2);
    process.kill(run.restored, 'SIGCONT');
    const exit = await exitOf(run);
    expect(exit).toEqual({ code: 0, signal: null });
    const status = await readPagerStatus(run.s.statusFile);
    expect(status?.state).toBe('filled');
    expectStatsAddUp(status as PagerStats);
    expect(status?.damagedPages).toBe(0);
    expect(status?.exitedTasks).toBe(0);
    const v = await memtest.verify(run.restored);
    expect(v.bad_pages).toBe(0);
    expect(run.wants).toEqual([]);
    const rate = ((status?.filledPages ?? 0) * 4096) / ((status?.fillUs ?? 1) * 1000);
    console.log(`pager e2e (a): ${status?.filledPages} pages filled in ${status?.fillUs} us (${rate.toFixed(2)} GB/s, 2 threads), ${status?.faults} faults`);
  }, 180_000);

  it('(b) half the pages unconfirmed: WANTs are answered, the rest confirmed in the background; verify clean', async () => {
    const run = await restore({ confirmed: (_t, k) => !halfUnconfirmed(k) });
    const { control, wants } = run;
    const done = new Promise<PagerStats>((resolve) => control.once('done', resolve));
    let closedWhy = '';
    control.once('closed', (why: string) => (closedWhy = why));
    process.kill(run.restored, 'SIGCONT');
    // The copy touches everything at once while the confirmations stream: its faults wait for CONFIRMs.
    const verifying = memtest.verify(run.restored, 120_000);
    await confirmRest(control, halfUnconfirmed);
    // Bounded, and saying what the pager and its connection did: a lost DONE must fail with a reason, not hang.
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => {
        void readPagerStatus(run.s.statusFile).then((st) => reject(new Error(`no DONE within 60 s; control ${control.closed ? `closed (${closedWhy})` : 'open'}; pager status ${JSON.stringify(st)}`)));
      }, 60_000).unref(),
    );
    const stats = await Promise.race([done, timeout]);
    expect((await exitOf(run)).code).toBe(0);
    expect((await verifying).bad_pages).toBe(0);
    expectStatsAddUp(stats);
    expect((await memtest.verify(run.restored)).bad_pages).toBe(0);
    console.log(`pager e2e (b): ${wants.length} WANTs, ${stats.faults} faults (${stats.faultsWaited} waited for a CONFIRM)`);
    control.close();
  }, 180_000);

  it('(c) one page damaged in the store: WANT with BYTES, REPLACE, verify clean, damagedPages 1', async () => {
    const damaged = task.ranges[0]?.firstIndex ?? 0;
    const run = await restore({ damaged: [{ nsPid: task.nsPid, index: damaged + 3 }] });
    const { control, wants } = run;
    process.kill(run.restored, 'SIGCONT');
    expect((await exitOf(run)).code).toBe(0);
    const status = await readPagerStatus(run.s.statusFile);
    expect(status?.state).toBe('filled');
    expect(status?.damagedPages).toBe(1);
    expect(status?.replacedPages).toBe(1);
    expectStatsAddUp(status as PagerStats);
    expect(wants).toContainEqual({ task: task.nsPid, index: damaged + 3, count: 1, bytes: true });
    expect((await memtest.verify(run.restored)).bad_pages).toBe(0);
    control.close();
  }, 180_000);

  it('(d) the copy touches all its memory right after the resume (faults race the fill); verify clean', async () => {
    // Nothing confirmed in the plan and one thread: the fill can start only with the CONFIRM sent after the resume
    // (the restore's own faults were WANTed and answered), so the copy's full check races the background fill.
    const run = await restore({ confirmed: () => false }, 1);
    const { control } = run;
    process.kill(run.restored, 'SIGCONT');
    const verifying = memtest.verify(run.restored, 120_000);
    await control.confirm(task.nsPid, 0, task.nPages);
    expect((await verifying).bad_pages).toBe(0);
    expect((await exitOf(run)).code).toBe(0);
    const status = await readPagerStatus(run.s.statusFile);
    expectStatsAddUp(status as PagerStats);
    console.log(`pager e2e (d): ${status?.faults} faults served during the fill (${status?.faultsWaited} waited for a CONFIRM); ${run.wantsDuringRestore} WANT(s) while criu restore ran`);
    control.close();
  }, 180_000);

  it('(e) fork, mremap, munmap and madvise(DONTNEED) while pages stream in: child and parent verify clean', async () => {
    const run = await restore({ confirmed: (_t, k) => !halfUnconfirmed(k) }, 1);
    const { control } = run;
    process.kill(run.restored, 'SIGCONT');
    // Only WANTs are answered until the churn is over: the unconfirmed half is still pending when the scratch is
    // unmapped and zapped, the data moved and the task forked.
    const churn = await memtest.churn(run.restored, 120_000);
    await confirmRest(control, halfUnconfirmed);
    expect(churn.child_exit).toBe(0);
    expect(churn.remapped_to).not.toBe('0x0');
    expect(churn.unmapped_pages).toBeGreaterThan(0);
    expect(churn.zeroed_pages).toBeGreaterThan(0);
    expect(churn.zero_bad_pages).toBe(0);
    expect(churn.scratch_bad_pages).toBe(0);
    expect((await exitOf(run)).code).toBe(0);
    const status = await readPagerStatus(run.s.statusFile);
    expect(status?.state).toBe('filled');
    expect(status?.forks).toBe(1);
    expect(status?.droppedPages).toBeGreaterThan(0);
    expect(status?.exitedTasks).toBe(0); // the child's exit is no task of criu's
    expectStatsAddUp(status as PagerStats, 1);
    expect((await memtest.verify(run.restored)).bad_pages).toBe(0);
    console.log(`pager e2e (e): ${status?.filledPages} filled, ${status?.droppedPages} dropped (unmap, DONTNEED, the child's exit), ${status?.forks} fork`);
    control.close();
  }, 180_000);

  it('(h) the agent goes away mid-fill: the pager carries on, a new connection gets the open WANTs again', async () => {
    const run = await restore({ confirmed: (_t, k) => !halfUnconfirmed(k) }, 1);
    run.answering = false;
    const first = new Promise<PagerWant>((resolve) => run.control.once('want', resolve));
    process.kill(run.restored, 'SIGCONT');
    const verifying = memtest.verify(run.restored, 120_000);
    const asked = await first;
    run.control.close(); // as a kill -9 of the agent would
    await new Promise((r) => setTimeout(r, 200));
    expect(pagerAlive(run.pager)).toBe(true);
    const again = await connectPager(run.s.controlPath);
    const wants: PagerWant[] = [];
    again.on('want', (w) => {
      wants.push(w);
      again.confirm(w.task, w.index, w.count).catch(() => undefined);
    });
    expect(again.hello?.state).toBe('serving');
    await confirmRest(again, halfUnconfirmed);
    expect((await verifying).bad_pages).toBe(0);
    expect((await exitOf(run)).code).toBe(0);
    expect(wants).toContainEqual(asked);
    again.close();
  }, 180_000);

  it('(i) the restored task dies mid-fill: its pages count as dropped and DONE says exitedTasks 1', async () => {
    const run = await restore({ confirmed: (_t, k) => !halfUnconfirmed(k) }, 1);
    run.answering = false;
    process.kill(run.restored, 'SIGKILL');
    await waitDead(run.restored, run.restoredStart, 15_000);
    // The pager may see the exit (ESRCH) before any CONFIRM: the confirmations only help it get there.
    await confirmRest(run.control, halfUnconfirmed);
    expect((await exitOf(run)).code).toBe(0);
    const stats = (await readPagerStatus(run.s.statusFile)) as PagerStats;
    expect(stats).toMatchObject({ state: 'filled' });
    expect(stats.exitedTasks).toBe(1);
    expect(stats.droppedPages).toBeGreaterThan(0);
    expect(stats.filledPages + stats.droppedPages).toBe(stats.totalPages);
  }, 180_000);

  it('(j) post-copy: remote pages block the copy until their REPLACE (a CONFIRM does not serve them); wait stats; no spill file left', async () => {
    // Every other 64-page block of the lazy ranges is remote; the rest is confirmed in the plan.
    const inRange = new Uint8Array(task.nPages);
    for (const r of task.ranges) inRange.fill(1, r.firstIndex, r.firstIndex + r.nPages);
    const remote = (k: number): boolean => inRange[k] === 1 && halfUnconfirmed(k);
    remoteOf = remote;
    let run: Run;
    try {
      run = await restore({ remote: (_t, k) => remote(k) }, 1);
    } finally {
      remoteOf = undefined;
    }
    const { control } = run;
    const remotePages = inRange.reduce((n, v, k) => n + (remote(k) ? 1 : 0), 0);
    expect(control.hello?.remotePages).toBe(remotePages);
    // The spill file is open and mapped, but unlinked: nothing of it is in the session dir.
    const maps = readFileSync(`/proc/${run.pager.pid}/maps`, 'utf8');
    expect(maps).toMatch(/replaced\.pages \(deleted\)/);
    expect(existsSync(join(run.s.dir, 'replaced.pages'))).toBe(false);
    run.answering = false;
    const firstWant = new Promise<PagerWant>((resolve) => control.once('want', resolve));
    process.kill(run.restored, 'SIGCONT');
    let settled = false;
    const verifying = memtest.verify(run.restored, 120_000).finally(() => (settled = true));
    const asked = await Promise.race([firstWant, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no WANT for a remote page')), 60_000))]);
    expect(remote(asked.index)).toBe(true);
    expect(asked.bytes).toBe(false); // the pager does not tell remote from unconfirmed: the source knows
    // No answer: the copy waits (never a timeout, never a zero page).
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    expect(pagerAlive(run.pager)).toBe(true);
    // A CONFIRM over remote pages (the agent refuses to send one: this is the pager's own guard) serves nothing.
    await control.confirm(asked.task, asked.index, asked.count);
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    expect(readFileSync(run.s.logFile, 'utf8')).toMatch(/covers \d+ remote page\(s\): left unready/);
    // Now the bytes, 64 pages a frame; timed from the first frame to the pager's exit.
    const t0 = performance.now();
    for (let k = 0; k < task.nPages; ) {
      if (!remote(k)) {
        k++;
        continue;
      }
      let n = 0;
      while (k + n < task.nPages && n < 1024 && remote(k + n)) n++;
      await control.replace(task.nsPid, k, readStorePages(task.storeFile, k, n));
      k += n;
    }
    expect((await exitOf(run)).code).toBe(0);
    const ms = performance.now() - t0;
    expect((await verifying).bad_pages).toBe(0);
    const status = (await readPagerStatus(run.s.statusFile))!;
    expect(status.state).toBe('filled');
    expectStatsAddUp(status);
    expect(status.remotePages).toBe(remotePages);
    expect(status.replacedPages).toBe(remotePages);
    expect(status.faultsWaited).toBeGreaterThan(0);
    expect(status.waitMaxUs).toBeGreaterThanOrEqual(600_000); // the first fault waited through both pauses
    expect(status.waitP50Us).toBeGreaterThan(0);
    expect(status.waitP50Us).toBeLessThanOrEqual(status.waitP99Us);
    expect(status.waitP99Us).toBeLessThanOrEqual(status.waitMaxUs);
    expect((await memtest.verify(run.restored)).bad_pages).toBe(0);
    expect(existsSync(join(run.s.dir, 'replaced.pages'))).toBe(false);
    const mibs = (remotePages * 4096) / 2 ** 20 / (ms / 1000);
    console.log(
      `pager e2e (j): ${remotePages} remote pages replaced and filled in ${ms.toFixed(0)} ms (${mibs.toFixed(0)} MiB/s over the control socket, 1 thread); ` +
        `${status.faultsWaited} faults waited: p50 ${status.waitP50Us} us, p99 ${status.waitP99Us} us, max ${status.waitMaxUs} us`,
    );
    control.close();
  }, 180_000);

  /** A copy blocked on withheld pages: one thread, half the pages unconfirmed and never confirmed. */
  async function blockedCopy(): Promise<{ run: Run; control: PagerControl }> {
    const run = await restore({ confirmed: (_t, k) => !halfUnconfirmed(k) }, 1);
    const { control } = run;
    run.answering = false; // withheld from here on: the resumed copy blocks on the first unconfirmed page
    const waited = new Promise<void>((resolve) => control.on('progress', (p) => p.faultsWaited > 0 && resolve()));
    process.kill(run.restored, 'SIGCONT');
    memtest.verify(run.restored, 60_000).then(
      (v) => expect.fail(`the copy ran on: verify ${JSON.stringify(v)}`),
      () => undefined, // killed while it waits for a page: what must happen
    );
    await Promise.race([waited, new Promise((_, reject) => setTimeout(() => reject(new Error('no fault waited')), 60_000))]);
    return { run, control };
  }

  it('(f) the pager killed with SIGKILL mid-fill: the guardian kills the copy, the status says failed', async () => {
    const { run, control } = await blockedCopy();
    process.kill(run.pager.pid, 'SIGKILL');
    expect((await exitOf(run)).signal).toBe('SIGKILL');
    await waitDead(run.restored, run.restoredStart, 15_000);
    const status = await waitFor(async () => {
      const s = await readPagerStatus(run.s.statusFile);
      return s?.state === 'failed' ? s : undefined;
    }, 15_000, 'the guardian to write failed');
    expect(status.reason).toBe('pager died');
    expect(readPidState(run.restored) ?? 'gone').toMatch(/^(Z|gone)$/);
    control.close();
  }, 180_000);

  it('(g) SIGTERM to the pager: it kills the copy and exits 4', async () => {
    const { run, control } = await blockedCopy();
    const failed = new Promise<string>((resolve) => control.once('failed', resolve));
    process.kill(run.pager.pid, 'SIGTERM');
    expect((await exitOf(run)).code).toBe(4);
    await waitDead(run.restored, run.restoredStart, 15_000);
    expect(await failed).toMatch(/SIGTERM/);
    const status = await readPagerStatus(run.s.statusFile);
    expect(status?.state).toBe('failed');
    control.close();
  }, 180_000);
});
