/**
 * End to end, post-copy (issue 12): the copy resumes on the dest before the dest holds its memory, and the
 * pages it lacks come from the frozen original after the resume (the fill). Between two network-namespace
 * hosts over a 100 Mbit/s link, with the memory-verifying workload rewriting 64 MiB/s (faster than the link):
 * - `--post-copy auto` switches when pre-copy does not converge; the copy checks every page the instant it
 *   resumes (racing the fill: each missing page is a fault served from the original) and again after the last
 *   page arrived (SIGUSR1 once `ferry migrate` returned);
 * - recovery during the fill (after the `fill` phase event, before the summary): the link cut (`ip link set
 *   down` on the veth) for 5 s, and for 60 s (FERRY_FAULT_MATRIX=full, `npm run test:faults`); the dest agent
 *   killed -9 and restarted; `ferry migrate` killed -9, then `ferry migrate --resume ID`. The copy waits on its
 *   missing pages meanwhile (never killed, never given a wrong page) and the migration completes;
 * - the one unrecoverable case: the frozen original killed during the fill: ORIGINAL_LOST, exit 3, the copy named
 *   (and left waiting: the operator kills it).
 * Every other case: exit 0, post-copied with remote pages, the copy's memory verified, exactly one copy running (the
 * original, frozen until the dest held every page, gone after), no pager and no session left.
 *
 * The recovery cases use `--post-copy always` (post-copy right after round 0): they need a long fill, not auto's
 * decision, which the first case covers. The task is fully hot, so after round 0 nearly every page is dirty again
 * and the fill carries about the whole task over the slow link: seconds, long enough to act inside it. Its memory
 * also grows (memtest --cold-mib/--grow-mib-per-s: pages first touched after the rounds that could have sent them),
 * so the dest lacks some pages altogether at the resume (remote pages: the frozen original is their only copy).
 *
 * While the fill runs nothing here reads a copy's argv (taskCopies, pgrep -f): that faults on its stack page,
 * which may be missing for as long as a cut lasts. Copies are counted by comm (memtestsIn) until the summary.
 */
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeLazyRestore } from '../../dest-agent/lazy/lazy-restore-support.js';
import { pagersOf } from '../../testbed/dest-agent.js';
import { canRun, hasCommand, hasMigrateFlag, isRoot } from '../../testbed/requirements.js';
import { memtestsIn, taskCopies } from '../../testbed/task-copies.js';
import {
  createTwoHosts,
  describeResult,
  eventually,
  hasCriu,
  makeTempDir,
  requireBuilt,
  startDestAgent,
  startFerry,
  startMigrate,
  type DestAgentHandle,
  type FerryLine,
  type FerryResult,
  type FerryRun,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle, type VerifyReport } from '../../testbed/workloads/memtest.js';

const lazy = await probeLazyRestore();
const runnable =
  canRun('e2e post-copy', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare'), hasCommand('pgrep'), hasCommand('bash'), hasCommand('tc')) &&
  canRun('e2e post-copy (CRIU)', hasCriu()) &&
  canRun('e2e post-copy (pager)', { ok: lazy.ok, reason: lazy.ok ? '' : `lazy restore is not possible here: ${lazy.reason}` }) &&
  canRun('e2e post-copy (this build)', hasMigrateFlag('--post-copy'));
const FULL = process.env.FERRY_FAULT_MATRIX === 'full';

const LINK = '100mbit';
const DIRTY_MIB_PER_S = 64;
interface TaskShape {
  mib: number;
  /** Untouched at start, then first-touched at growMibPerSec: still growing when the copy resumes. */
  coldMib: number;
  growMibPerSec: number;
}
/** auto: round 0 (~4 s) and whatever rounds the policy needs to see it does not converge (~4 s each), then a fill
 * of ~4 s; it grows for 32 s, so the pages touched after the last round are remote. */
const AUTO_TASK: TaskShape = { mib: 64, coldMib: 16, growMibPerSec: 0.5 };
/** always: round 0 (~9 s), then a fill of ~12 s, the window the recovery cases act in; what grows after round 0
 * read the task (~20 MiB) is remote. */
const RECOVERY_TASK: TaskShape = { mib: 128, coldMib: 32, growMibPerSec: 2 };
const AUTO = ['--post-copy', 'auto', '--restore', 'lazy'];
const ALWAYS = ['--post-copy', 'always', '--restore', 'lazy'];
/** Into the fill before acting: the page stream is busy by then. */
const INTO_FILL_MS = 1_000;
/** From round 0's start to the fill's: the memtest's round 0 over the link, with room for a loaded host. */
const FILL_STARTS_MS = 120_000;
/** The copy's and the original's process states after the migration (a killed original is reaped within ~2 s). */
const SETTLE_MS = 15_000;

/** From `ip link set up` to the fill's next progress: the reconnect, bounded (grpc-js's own backoff reaches 120 s). */
const MOVES_AGAIN_MS = 10_000;

/** When the source's log (JSON lines) first showed the fill moving at or after `after` (ms since the epoch). */
function firstFillLogAfter(stderr: string, after: number): number | undefined {
  for (const line of stderr.split('\n')) {
    if (!line.includes('"msg":"fill progress"') && !line.includes('"msg":"fill done')) continue;
    const ts = Date.parse((JSON.parse(line) as { ts: string }).ts);
    if (ts >= after) return ts;
  }
  return undefined;
}

const isFill = (l: FerryLine): boolean => l.kind === 'phase' && l.phase === 'fill';
/** The migration ended one way or the other (the summary, or the error). */
const ended = (run: FerryRun): boolean => run.lines.some((l) => l.kind === 'done' || l.kind === 'summary' || l.kind === 'failed' || l.kind === 'error');

function figures(r: FerryResult): string {
  const s = r.summary!;
  const mibs = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return (
    `downtime ${Math.round(s.downtimeMs)} ms, fill ${Math.round(s.fillMs)} ms, total ${Math.round(s.totalMs)} ms; ${s.rounds.length} rounds (${s.decision}); ` +
    `bytes pre-copy ${mibs(s.precopyBytes)}, downtime ${mibs(s.downtimeBytes)}, post-copy ${mibs(s.postcopyBytes)}; ${s.remotePages} remote pages; ` +
    `${s.fillFaults} faults, ${s.fillFaultsWaited} waited (p50 ${s.faultWaitP50Us} µs, p99 ${s.faultWaitP99Us} µs)`
  );
}

describe.skipIf(!runnable)(`post-copy between two network-namespace hosts (${LINK}, ${DIRTY_MIB_PER_S} MiB/s dirtying${FULL ? '' : '; the 60 s cut only with FERRY_FAULT_MATRIX=full'})`, () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];
  let n = 0;

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-postcopy-');
    hosts = await createTwoHosts();
    await hosts.shape(LINK);
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    // A failed case may leave the link down: the namespaces go anyway, but the agents' stop must not wait on it.
    await hosts?.upLink().catch(() => undefined);
    for (const t of tasks) await t.stop();
    // A case that failed before it learned its copy's pid leaves that copy: every memtest in either namespace goes.
    for (const ns of [hosts?.dst.netns, hosts?.src.netns]) {
      for (const pid of ns ? memtestsIn(ns) : []) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
    }
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  }, 60_000);

  async function memtest(shape: TaskShape): Promise<MemtestHandle> {
    const t = await startMemtest({ name: `pc-${process.pid}-${++n}`, ...shape, dirtyMibPerSec: DIRTY_MIB_PER_S, stateDir: stateDir!, netns: hosts!.src.netns, onResume: 'verify' });
    tasks.push(t);
    return t;
  }

  /**
   * Waits for the fill to start, then INTO_FILL_MS more; fails when the migration ended meanwhile (the case would
   * not test what it says). Returns the copy (the one new memtest on the dest host) and the migration id.
   */
  async function intoTheFill(run: FerryRun, earlier: ReadonlySet<number>): Promise<{ copy: number; migrationId: string }> {
    await run.waitForLine(isFill, FILL_STARTS_MS);
    await sleep(INTO_FILL_MS);
    expect(ended(run), 'the fill ended before the case could act in it: the task is too small for the link').toBe(false);
    const started = run.lines.find((l): l is Extract<FerryLine, { kind: 'started' }> => l.kind === 'started');
    const copies = memtestsIn(hosts!.dst.netns).filter((pid) => !earlier.has(pid));
    expect(copies, 'exactly one copy on the dest during the fill').toHaveLength(1);
    return { copy: copies[0]!, migrationId: started!.migrationId };
  }

  /** During the fill: the copy runs (or waits on a page) on the dest, the original is frozen: one copy runs. */
  function expectOneCopyDuringFill(task: MemtestHandle, copy: number): void {
    expect(readPidState(copy), `the copy (pid ${copy}) during the fill`).toMatch(/^[RSD]$/);
    expect(readPidState(task.rootPid), `the original (pid ${task.rootPid}) during the fill`).toBe('T');
  }

  /**
   * After `ferry migrate` (or its --resume) returned: the copy checked every page at its resume and checks them
   * again now that the last page is in; the original is gone; exactly one copy runs; no pager, no session.
   */
  async function expectVerifiedCopy(task: MemtestHandle, copy: number): Promise<VerifyReport> {
    task.adopt(copy);
    const atResume = (await task.resumeReport(copy)) as VerifyReport;
    expect(atResume).toMatchObject({ host_pid: copy, bad_pages: 0, bad_words: 0 });
    const after = await task.verify(copy);
    expect(after).toMatchObject({ host_pid: copy, bad_pages: 0, bad_words: 0 });
    expect(after.writes, 'the copy keeps writing').toBeGreaterThan(atResume.writes);
    await eventually(() => readPidState(task.rootPid) === undefined, SETTLE_MS, 'the original to be gone');
    await eventually(() => readPidState(copy) !== undefined, SETTLE_MS, 'the copy');
    const copies = taskCopies(hosts!, task.name);
    expect(copies.map((c) => `${c.pid}@${c.host}`), 'exactly one copy').toEqual([`${copy}@dst`]);
    expect(copies[0]!.state).toMatch(/^[RSD]$/);
    await eventually(() => pagersOf(dest!.workDir).length === 0 && dest!.leftovers().length === 0, SETTLE_MS, () => `the pager to exit and the session to be removed (left: ${dest!.leftovers().join(', ')})`);
    return atResume;
  }

  /** Exit 0 with a summary that says post-copied, with remote pages; then the copy as expectVerifiedCopy. */
  async function expectPostCopied(task: MemtestHandle, r: FerryResult, asked: 'auto' | 'always'): Promise<VerifyReport> {
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    expect(s).toMatchObject({ postCopy: asked, postCopied: true, restoreMode: 'lazy' });
    expect(s.remotePages, describeResult(r)).toBeGreaterThan(0);
    expect(s.postcopyBytes).toBeGreaterThan(0);
    return expectVerifiedCopy(task, s.restoredPid);
  }

  it(`--post-copy auto: ${AUTO_TASK.mib} MiB rewritten at ${DIRTY_MIB_PER_S} MiB/s migrates, every page verified at the resume and after the last page`, async () => {
    const task = await memtest(AUTO_TASK);
    const r = await startMigrate(hosts!, task.rootPid, dest, { args: AUTO, timeoutMs: 240_000 }).done;
    const atResume = await expectPostCopied(task, r, 'auto');
    const decision = r.lines.findLast((l): l is Extract<FerryLine, { kind: 'decision' }> => l.kind === 'decision');
    expect(decision?.message, 'the decision says why, in words').toMatch(/post-copy/);
    console.info(`post-copy auto ${AUTO_TASK.mib} MiB: ${figures(r)}; the copy's check at its resume took ${Math.round(atResume.verify_ms)} ms (${atResume.grown_pages} pages touched by then)`);
  }, 300_000);

  const cuts = FULL ? [5, 60] : [5];
  for (const seconds of cuts) {
    it(`the link cut (ip link set down) for ${seconds} s during the fill, then restored: the copy waits, the migration completes`, async () => {
      const h = hosts!;
      const task = await memtest(RECOVERY_TASK);
      const earlier = new Set(memtestsIn(h.dst.netns));
      const startedAt = Date.now();
      // debug: the source logs each progress event of the fill, which tells when the fill moved again.
      const run = startMigrate(h, task.rootPid, dest, { args: ALWAYS, env: { FERRY_LOG_LEVEL: 'debug' }, timeoutMs: 240_000 + seconds * 1000 });
      const { copy } = await intoTheFill(run, earlier);
      let upAt: number;
      await h.downLink();
      try {
        await sleep(seconds * 1000);
        // The copy was never killed for want of a page, the original stays frozen.
        expectOneCopyDuringFill(task, copy);
        expect(ended(run), `the migration ended during a ${seconds} s cut: ${JSON.stringify(run.lines.at(-1))}`).toBe(false);
      } finally {
        upAt = Date.now();
        await h.upLink();
      }
      const r = await run.done;
      await expectPostCopied(task, r, 'always');
      expect(r.summary!.fillMs, 'the cut lay inside the fill').toBeGreaterThanOrEqual(seconds * 1000);
      // Not a reconnect in a long backoff: the fill moves again within a few seconds of the link's return.
      const moved = firstFillLogAfter(r.stderr, upAt);
      expect(moved, `a fill progress line after the link came back\n${describeResult(r)}`).toBeDefined();
      expect(moved! - upAt, 'from the link\'s return to the fill moving again').toBeLessThanOrEqual(MOVES_AGAIN_MS);
      console.info(
        `post-copy, link cut ${seconds} s: ${figures(r)}; the fill moved again ${moved! - upAt} ms after the link came back, ferry migrate returned ${((r.durationMs + startedAt - upAt) / 1000).toFixed(1)} s after it`,
      );
    }, 360_000 + seconds * 1000);
  }

  it('the dest agent killed -9 during the fill and restarted: the pager carries on, the migration completes', async () => {
    const task = await memtest(RECOVERY_TASK);
    const earlier = new Set(memtestsIn(hosts!.dst.netns));
    const run = startMigrate(hosts!, task.rootPid, dest, { args: ALWAYS, timeoutMs: 240_000 });
    const { copy } = await intoTheFill(run, earlier);
    await dest!.kill('SIGKILL');
    try {
      expectOneCopyDuringFill(task, copy);
    } finally {
      await dest!.restart();
    }
    const r = await run.done;
    await expectPostCopied(task, r, 'always');
    console.info(`post-copy, dest agent killed and restarted: ${figures(r)}`);
  }, 360_000);

  it('the frozen original killed during the fill: ORIGINAL_LOST (exit 3) names the copy, which Ferry leaves waiting (never killed for it)', async () => {
    const h = hosts!;
    // A dest agent of its own: what this case may leave behind on a failure stays out of the other cases' checks.
    const lostDest = await startDestAgent(h);
    try {
      const task = await memtest(RECOVERY_TASK);
      const earlier = new Set(memtestsIn(h.dst.netns));
      const run = startMigrate(h, task.rootPid, lostDest, { args: ALWAYS, timeoutMs: 240_000 });
      const { copy } = await intoTheFill(run, earlier);
      task.adopt(copy); // stop() kills it: here it is the test that plays the operator
      process.kill(task.rootPid, 'SIGKILL');
      const r = await run.done;
      expect(r.exitCode, describeResult(r)).toBe(3);
      expect(r.error).toMatchObject({ code: 'FERRY-7006', sourceState: 'gone' });
      expect(r.error?.message).toContain(`pid ${copy}`);
      expect(r.error?.hint).toContain(`kill -9 ${copy}`);
      // The copy still waits on the pages the original took with it: nothing killed it, nothing gave it a page.
      await sleep(INTO_FILL_MS);
      expect(readPidState(copy), `the copy (pid ${copy}) after ORIGINAL_LOST`).toMatch(/^[RSD]$/);
      // The operator's part: kill it; then no pager and no session are left.
      process.kill(copy, 'SIGKILL');
      await eventually(() => readPidState(copy) === undefined || readPidState(copy) === 'Z', SETTLE_MS, `the copy (pid ${copy}) to die`);
      await eventually(() => pagersOf(lostDest.workDir).length === 0, SETTLE_MS, () => `the pager to exit after the copy's kill (pagers ${pagersOf(lostDest.workDir).join(', ')})`);
      await eventually(() => lostDest.leftovers().length === 0, SETTLE_MS, () => `the dest session to be removed once its copy and pager are gone (left: ${lostDest.leftovers().join(', ')})`);
      console.info(`post-copy, the original killed in the fill: exit 3, ${r.error?.code}: ${r.error?.message}`);
    } finally {
      await lostDest.stop(); // and its pagers
    }
  }, 360_000);

  it('ferry migrate killed -9 during the fill, then ferry migrate --resume ID: the migration completes, one copy', async () => {
    const h = hosts!;
    const task = await memtest(RECOVERY_TASK);
    const earlier = new Set(memtestsIn(h.dst.netns));
    const run = startMigrate(h, task.rootPid, dest, { args: ALWAYS, timeoutMs: 240_000 });
    const { copy, migrationId } = await intoTheFill(run, earlier);
    run.child.kill('SIGKILL');
    const killed = await run.done;
    expect(killed.signal, describeResult(killed)).toBe('SIGKILL');
    // Nothing thaws the original after the Commit: the copy runs, the original waits for --resume, frozen.
    await sleep(INTO_FILL_MS);
    expectOneCopyDuringFill(task, copy);
    const resumed = await startFerry(['migrate', '--resume', migrationId, '--json'], { host: h.src, timeoutMs: 240_000 }).done;
    expect(resumed.exitCode, describeResult(resumed)).toBe(0);
    const resolved = resumed.lines.find((l) => (l as { kind: string }).kind === 'resolved') as { outcome?: string; detail?: string } | undefined;
    expect(resolved?.outcome, describeResult(resumed)).toBe('migrated');
    await expectVerifiedCopy(task, copy);
    console.info(`post-copy, ferry migrate killed in the fill: --resume ${migrationId} said "${resolved?.detail}" after ${(resumed.durationMs / 1000).toFixed(1)} s`);
  }, 360_000);
});
