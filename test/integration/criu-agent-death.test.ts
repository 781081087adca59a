/**
 * CRIU under the agent's control, against the real CRIU: an agent (a stand-in process, test/support/
 * agent-stand-in.ts, with a real freeze lease) is killed -9 while criu works for it. A dump runs to its end
 * (killing it while it injects its parasite kills the task) and the lease's guard thaws the task once criu is
 * gone, never before; a restore runs to its end (pid file written, tree stopped) for a restarted agent to find.
 * The task is the memtest workload (256 MiB, so that a dump or a restore lasts long enough to be caught
 * running), which checks its own memory afterwards.
 * Needs root, gcc, a CRIU >= 4.2 and vite-node; skips with the reason otherwise.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { probeCriu, type CriuProbe } from '../../shared/criu/criu-binary.js';
import { lazyDumpSupported, startLazyDump } from '../../shared/criu/criu-lazy-dump.js';
import { readCriuLogErrors } from '../../shared/criu/criu-log.js';
import { criuOutputFile } from '../../shared/criu/criu-log-files.js';
import { criuProcessesFor, waitGoneOrKill } from '../../shared/criu/criu-processes.js';
import { criuDump } from '../../shared/criu/criu-runner.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { waitTreeStopped } from '../../shared/kernel/process-wait.js';
import { killTreeAndWait, signalTree, treePids } from '../../shared/kernel/signal-tree.js';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';
import { startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';
import { standInRequirement, startStandIn, type StandIn } from '../support/agent-stand-in-process.js';

const host = [isRoot(), hasCommand('gcc'), hasCommand('unshare'), hasCommand('setsid')];
const probe: CriuProbe | undefined = host.every((r) => r.ok) ? await probeCriu() : undefined;
const criuReq: Requirement = { ok: probe?.ok === true, reason: probe && !probe.ok ? `needs a working CRIU >= 4.2: ${probe.reason}` : 'needs a working CRIU >= 4.2' };
const runnable = canRun('criu under the agent (agent killed -9)', ...host, criuReq, standInRequirement);
const lazy = runnable && probe?.ok === true && (await lazyDumpSupported(probe.path));
if (runnable && !lazy) console.warn('SKIP lazy dump cases: this CRIU or kernel has no uffd-noncoop');

const MIB = 256;
/** The guard thaws within this once criu is gone (it polls every 50 ms). */
const GONE_MS = 2000;
/** Running this long without a stop: the guard's SIGCONT came (a stop still pending lands within a few ms). */
const STEADY_MS = 200;
/** A dump of MIB left to finish without its agent ends within this. */
const DUMP_END_MS = 60_000;

const dirs: string[] = [];
const tasks: MemtestHandle[] = [];
const standIns: StandIn[] = [];
/** Pid files of restores: what criu restored (a child of nothing here) is killed with its tree at the end. */
const pidFiles: string[] = [];

function tmpDir(prefix: string): string {
  // tmpfs where there is one, like the images root by default.
  const d = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), prefix));
  dirs.push(d);
  return d;
}

async function memtask(name: string): Promise<MemtestHandle> {
  const t = await startMemtest({ name, mib: MIB, dirtyMibPerSec: 0, stateDir: tmpDir('ferry-criu-death-state-') });
  tasks.push(t);
  return t;
}

function standIn(args: string[]): StandIn {
  const s = startStandIn(args);
  standIns.push(s);
  return s;
}

/** Polls `cond` every 2 ms for up to `ms`; returns the ms it took, or undefined if it never held. */
async function within(ms: number, cond: () => boolean): Promise<number | undefined> {
  const t0 = performance.now();
  for (;;) {
    if (cond()) return performance.now() - t0;
    if (performance.now() - t0 > ms) return undefined;
    await sleep(2);
  }
}

const state = (pid: number): string | undefined => readStat(pid)?.state;
const stopped = (pid: number): boolean => state(pid) === 'T' || state(pid) === 't';

/** Every state letter the task shows over `ms`. */
async function statesFor(pid: number, ms: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (const end = Date.now() + ms; Date.now() < end; await sleep(10)) seen.add(state(pid) ?? 'gone');
  return seen;
}

/**
 * After its agent died mid-dump: criu ran to its end on its own (not killed), and only then did the lease's
 * guard thaw the task, which runs for good with its memory intact.
 */
async function expectDumpFinishedThenTaskThawed(dir: string, task: MemtestHandle): Promise<void> {
  const goneIn = await within(DUMP_END_MS, () => criuProcessesFor(dir).length === 0);
  console.info(`criu ended ${goneIn?.toFixed(0)} ms after its agent was killed`);
  expect(goneIn).toBeDefined();
  // The guard, not the test, thaws it. Between criu's detach and the guard's SIGCONT (it polls criu every 50 ms)
  // the task may show running for an instant before its pending group stop lands again: wait for it to run
  // steadily, then it must never stop again.
  let runningSince: number | undefined;
  const thawed = await within(GONE_MS, () => {
    if (stopped(task.rootPid)) runningSince = undefined;
    else runningSince ??= performance.now();
    return runningSince !== undefined && performance.now() - runningSince >= STEADY_MS;
  });
  expect(thawed).toBeDefined();
  expect([...(await statesFor(task.rootPid, 300))].filter((s) => s === 'T' || s === 't')).toEqual([]);
  const report = await task.verify();
  expect(report.bad_pages).toBe(0);
}

/** criu's parasite runs in the task (it logs as "pie: ...") and the dump is not done. */
function parasiteRunning(log: string): boolean {
  const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
  return /^pie: /m.test(text) && !/Dumping finished successfully/.test(text);
}

/** Live processes whose command line names `text` (a task's state dir: the original and any copy of it). */
function processesNaming(text: string): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text) && state(pid) !== 'Z';
      } catch {
        return false;
      }
    });
}

afterEach(async () => {
  for (const s of standIns.splice(0)) await s.kill9();
});

afterAll(async () => {
  for (const s of standIns.splice(0)) await s.kill9();
  // Whatever criu a failed test left running, with all it made, then what restores left.
  for (const d of dirs) for (const c of criuProcessesFor(d)) await killTreeAndWait(c, 5000);
  for (const f of pidFiles) {
    const pid = existsSync(f) ? Number(readFileSync(f, 'utf8').trim()) : 0;
    if (pid > 1) await killTreeAndWait(pid, 5000);
  }
  for (const t of tasks) await t.stop();
  // A copy a failed test let run (no pid file names it): found by its task's state dir.
  for (const t of tasks) for (const p of processesNaming(t.stateDir)) if (p !== t.unsharePid) await killTreeAndWait(p, 5000);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe.skipIf(!runnable)('criu when its agent is killed -9', () => {
  let criu: string;
  beforeAll(() => {
    if (!probe?.ok) throw new Error('unreachable: gated by canRun');
    criu = probe.path;
  });

  it('a dump outlives its agent: criu finishes, then the freeze lease thaws the task, which runs', async () => {
    const task = await memtask('death-dump');
    const dir = tmpDir('ferry-criu-death-images-');
    const agent = standIn(['dump', criu, String(task.rootPid), dir, join(dir, 'dump.log')]);
    expect(await agent.next()).toBe('dumping');
    // Caught while criu's parasite dumps the task's memory: not before criu started, nor once it left the task
    // stopped. Not while it injects the parasite either (its first few ms): a SIGKILL there kills the task
    // (measured: 10 of 50 kills), a hazard of killing criu at all (see criu-runner.ts).
    const caught = await within(10_000, () => criuProcessesFor(dir).length > 0 && parasiteRunning(join(dir, 'dump.log')));
    expect(caught).toBeDefined();
    const running = criuProcessesFor(dir);
    expect(running.length).toBeGreaterThan(0);
    await agent.kill9();
    expect(running.every((p) => readStat(p) !== undefined)).toBe(true); // still at work after its agent died
    await expectDumpFinishedThenTaskThawed(dir, task);
    expect(readFileSync(join(dir, 'dump.log'), 'utf8')).toMatch(/Dumping finished successfully/);
  }, 90_000);

  it.skipIf(!lazy)('a lazy dump outlives its agent the same way, once the tree is frozen under it', async () => {
    const task = await memtask('death-lazy');
    const dir = tmpDir('ferry-criu-death-images-');
    const agent = standIn(['lazy-dump', criu, String(task.rootPid), dir, join(dir, 'dump.log')]);
    expect(await agent.next()).toBe('ready');
    expect(criuProcessesFor(dir).length).toBeGreaterThan(0);
    expect(stopped(task.rootPid)).toBe(true);
    await agent.kill9();
    await expectDumpFinishedThenTaskThawed(dir, task);
  }, 90_000);

  it.skipIf(!lazy)('a lazy dump ends cleanly (fds 3 and 4 reach criu): exit 0, tree stopped, no output file', async () => {
    const task = await memtask('lazy-ok');
    const dir = tmpDir('ferry-criu-death-images-');
    const log = join(dir, 'dump.log');
    const dump = await startLazyDump({ criu, pid: task.rootPid, imagesDir: dir, logFile: log, readyTimeoutMs: 30_000 });
    await dump.finish();
    expect(state(task.rootPid)).toBe('T');
    expect(existsSync(criuOutputFile(log))).toBe(false);
    expect(criuProcessesFor(dir)).toEqual([]);
    signalTree(task.rootPid, 'SIGCONT');
    expect((await task.verify()).bad_pages).toBe(0);
  }, 90_000);

  it('a restore outlives its agent: it runs to its end (pid file, tree stopped) and criuProcessesFor finds it meanwhile', async () => {
    const task = await memtask('death-restore');
    const dir = tmpDir('ferry-criu-death-images-');
    const t0 = performance.now();
    await criuDump({ criu, pid: task.rootPid, imagesDir: dir, logFile: join(dir, 'dump.log'), leaveStopped: true });
    console.info(`criu dump of ${MIB} MiB: ${(performance.now() - t0).toFixed(0)} ms`);
    const pidFile = join(dir, 'restored.pid');
    pidFiles.push(pidFile);
    const log = join(dir, 'restore.log');
    const agent = standIn(['restore', criu, dir, pidFile, log]);
    expect(await agent.next()).toBe('restoring');
    const seenIn = await within(10_000, () => criuProcessesFor(dir).length > 0);
    expect(seenIn).toBeDefined();
    const running = criuProcessesFor(dir);
    await agent.kill9();
    const killedAt = performance.now();
    expect(running.length).toBeGreaterThan(0);
    expect(running.every((p) => readStat(p) !== undefined)).toBe(true); // still at work after its agent died

    // A restarted agent would wait like this, bounded; criu must end on its own, not be killed.
    const { exited, killed } = await waitGoneOrKill(running, 30_000);
    console.info(`criu restore ended ${(performance.now() - killedAt).toFixed(0)} ms after its agent was killed`);
    expect(killed).toEqual([]);
    expect(exited.sort()).toEqual([...new Set(running)].sort());
    expect(criuProcessesFor(dir)).toEqual([]);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    expect(pid).toBeGreaterThan(1);
    expect(await waitTreeStopped(pid, 2000)).toEqual([]);
    expect(await readCriuLogErrors(log)).toEqual([]);

    // What it restored is the task, whole: resumed, it checks its own memory.
    signalTree(pid, 'SIGCONT');
    expect((await task.verify(pid)).bad_pages).toBe(0);
  }, 120_000);

  it('a restore that outlives the wait is killed with the tree it was making: no copy runs', async () => {
    const task = await memtask('death-restore-killed');
    const dir = tmpDir('ferry-criu-death-images-');
    await criuDump({ criu, pid: task.rootPid, imagesDir: dir, logFile: join(dir, 'dump.log'), leaveStopped: true });
    const pidFile = join(dir, 'restored.pid');
    pidFiles.push(pidFile);
    const agent = standIn(['restore', criu, dir, pidFile, join(dir, 'restore.log')]);
    expect(await agent.next()).toBe('restoring');
    // Its children exist: criu has forked the tree it is restoring.
    expect(await within(10_000, () => criuProcessesFor(dir).some((c) => treePids(c).length > 1))).toBeDefined();
    const [criuPid] = criuProcessesFor(dir);
    const making = treePids(criuPid!).slice(1);
    await agent.kill9();
    const { exited, killed } = await waitGoneOrKill([criuPid!], 0);
    expect({ exited, killed }).toEqual({ exited: [], killed: [criuPid] });
    await sleep(300); // a tree left behind would be running by now
    expect(making.filter((p) => state(p) !== undefined && state(p) !== 'Z')).toEqual([]);
    // Nothing else claims to be this task either (a copy shows the task's command line once restored).
    expect(processesNaming(task.stateDir).filter((p) => p !== task.rootPid && p !== task.unsharePid)).toEqual([]);
  }, 120_000);

  it('waitGoneOrKill kills what outlives its timeout, and only that', async () => {
    const task = await memtask('wait-kill');
    const t0 = performance.now();
    const { exited, killed } = await waitGoneOrKill([task.rootPid, 999_999_999], 200);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200);
    expect(killed).toEqual([task.rootPid]);
    expect(exited).toEqual([]);
    expect(await within(GONE_MS, () => state(task.rootPid) === undefined || state(task.rootPid) === 'Z')).toBeDefined();
  }, 60_000);
});
