/**
 * End to end, issue 3's policy on real links: a task that dirties memory faster than a 100 Mbit/s link can
 * carry is brought to converge by auto-converge (the throttle), is left untouched by --on-no-converge abort,
 * and is never left throttled (success, rollback, Ctrl-C); --bandwidth holds pre-copy at the cap.
 */
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MigrationEvent } from '../../source-agent/migration/events.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  hasCriu,
  makeTempDir,
  requireBuilt,
  runMigrate,
  startDestAgent,
  startMigrate,
  type DestAgentHandle,
  type FerryLine,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const runnable =
  canRun('e2e convergence', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('tc'), hasCommand('gcc'), hasCommand('unshare')) &&
  canRun('e2e convergence (CRIU)', hasCriu());

const PAGE = 4096;
const MiB = 2 ** 20;
/** 32 MiB task rewriting its first 8 MiB at 32 MiB/s: on 100 Mbit/s (~12 MB/s) every round finds all 8 MiB dirty. */
const HOT = { mib: 32, hotMib: 8, dirtyMibPerSec: 32 };

const decisions = (lines: readonly FerryLine[]): Extract<MigrationEvent, { kind: 'decision' }>[] =>
  lines.filter((l): l is Extract<MigrationEvent, { kind: 'decision' }> => l.kind === 'decision');

/** Pages written per second over ~1 s, as a share of what the task is set to write. */
async function workRate(task: MemtestHandle, hostPid: number, dirtyMibPerSec: number): Promise<number> {
  const a = await task.stats(hostPid);
  await sleep(1000);
  const b = await task.stats(hostPid);
  const pagesPerSec = ((b.writes - a.writes) * 1000) / (b.mono_ms - a.mono_ms);
  return pagesPerSec / ((dirtyMibPerSec * MiB) / PAGE);
}

describe.skipIf(!runnable)('convergence on a 100 Mbit/s link', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-conv-');
    hosts = await createTwoHosts();
    await hosts.shape('100mbit');
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    for (const t of tasks) await t.stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  const start = async (name: string): Promise<MemtestHandle> => {
    const t = await startMemtest({ name: `${name}-${process.pid}`, ...HOT, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(t);
    return t;
  };

  it('throttle (the default) makes it converge; the restored copy is intact and runs unthrottled', async () => {
    const task = await start('conv-throttle');
    const r = await runMigrate(hosts!, task.rootPid, dest, { timeoutMs: 120_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    const ds = decisions(r.lines);
    const firstThrottle = ds.findIndex((d) => d.action === 'throttle');
    expect(firstThrottle, JSON.stringify(ds.map((d) => d.message))).toBeGreaterThan(0);
    expect(ds[firstThrottle]!.message).toMatch(/throttling task to 80 % of its CPU/);
    expect(s.throttle?.maxPercent).toBeGreaterThanOrEqual(20);
    console.log(`throttle: ${ds.map((d) => d.message).join(' | ')}`);
    // It converged because of the throttle: the dirty set under the heaviest throttle is smaller than before it.
    const before = s.rounds[firstThrottle]!.dirtyPages;
    const last = s.rounds.at(-1)!.dirtyPages;
    expect(last).toBeLessThan(before);
    task.adopt(s.restoredPid);
    const v = await task.verify(s.restoredPid);
    expect(v.bad_pages).toBe(0);
    // Released at the freeze: the copy writes at its full rate (duty cycling would show as a share well below 1).
    expect(await workRate(task, s.restoredPid, HOT.dirtyMibPerSec)).toBeGreaterThan(0.8);
  }, 150_000);

  it('--on-no-converge abort: exit 1 with FERRY-3005, the task untouched and never throttled', async () => {
    const task = await start('conv-abort');
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--on-no-converge', 'abort'], timeoutMs: 120_000 });
    expect(r.exitCode, describeResult(r)).toBe(1);
    expect(r.error?.code).toBe('FERRY-3005');
    expect(r.error?.sourceState).toBe('running');
    const ds = decisions(r.lines);
    expect(ds.at(-1)?.action).toBe('abort');
    expect(ds.some((d) => d.action === 'throttle')).toBe(false);
    expect(readPidState(task.rootPid)).toMatch(/^[RSD]$/);
    expect((await task.verify()).bad_pages).toBe(0);
    expect(await workRate(task, task.rootPid, HOT.dirtyMibPerSec)).toBeGreaterThan(0.8);
    expect(dest!.leftovers()).toEqual([]);
  }, 150_000);

  it('Ctrl-C while throttled: exit 130, the task runs again at its full rate', async () => {
    const task = await start('conv-ctrlc');
    const run = startMigrate(hosts!, task.rootPid, dest, { timeoutMs: 120_000 });
    await run.waitForLine((l) => l.kind === 'decision' && l.action === 'throttle', 90_000);
    await run.waitForLine((l) => l.kind === 'round' && l.round.throttlePercent > 0, 30_000);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.exitCode, describeResult(r)).toBe(130);
    expect(readPidState(task.rootPid)).toMatch(/^[RSD]$/);
    expect((await task.verify()).bad_pages).toBe(0);
    expect(await workRate(task, task.rootPid, HOT.dirtyMibPerSec)).toBeGreaterThan(0.8);
    expect(dest!.leftovers()).toEqual([]);
  }, 150_000);
});

describe.skipIf(!runnable)('--bandwidth', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  let task: MemtestHandle | undefined;

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-bw-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts);
    task = await startMemtest({ name: `bw-${process.pid}`, mib: 48, dirtyMibPerSec: 0, stateDir, netns: hosts.src.netns });
  }, 60_000);

  afterAll(async () => {
    await task?.stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('holds the pre-copy rate within 10 % of the cap on an unshaped link', async () => {
    const cap = 16 * MiB;
    const r = await runMigrate(hosts!, task!.rootPid, dest, { args: ['--bandwidth', '16MiB'], timeoutMs: 60_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const round0 = r.summary!.rounds[0]!;
    const rate = (round0.bytesSent * 1000) / round0.durationMs;
    console.log(`bandwidth cap 16 MiB/s: round 0 moved ${(round0.bytesSent / MiB).toFixed(1)} MiB at ${(rate / MiB).toFixed(2)} MiB/s`);
    expect(rate / cap).toBeGreaterThan(0.9);
    expect(rate / cap).toBeLessThan(1.1);
    task!.adopt(r.summary!.restoredPid);
    expect((await task!.verify(r.summary!.restoredPid)).bad_pages).toBe(0);
  }, 90_000);
});
