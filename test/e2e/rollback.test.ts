/**
 * End to end: every way a migration can fail before the commit must leave the original running with its memory
 * intact, no restored copy anywhere, no images on the source and no session on the dest. Failures come from
 * outside (the dest killed, Ctrl-C) and from the numbered FERRY_FAULT points of shared/fault-injection.ts.
 */
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  eventually,
  hasCriu,
  leftovers,
  makeTempDir,
  pidsWithArgs,
  requireBuilt,
  runMigrate,
  startDestAgent,
  startMigrate,
  type DestAgentHandle,
  type FerryLine,
  type FerryResult,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const runnable =
  canRun('e2e rollback', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('tc'), hasCommand('gcc'), hasCommand('unshare')) &&
  canRun('e2e rollback (CRIU)', hasCriu());

const SMALL_MIB = 16;
const BIG_MIB = 256;
const SMALL = `e2e-rb-small-${process.pid}`;
const BIG = `e2e-rb-big-${process.pid}`;

/** Exit 1 (or 130) means "the source runs": the error must say so. */
function expectFailedWithSourceRunning(r: FerryResult, exitCode: number): void {
  expect(r.exitCode, describeResult(r)).toBe(exitCode);
  expect(r.timedOut).toBe(false);
  expect(r.summary).toBeUndefined();
  expect(r.error, describeResult(r)).toBeDefined();
  expect(r.error!.sourceState).toBe('running');
  expect(r.error!.rollbackErrors ?? []).toEqual([]);
  expect(r.lines.at(-1)?.kind).toBe('error');
}

/** Running (not stopped), every page intact, and still writing. */
async function expectOriginalIntact(task: MemtestHandle): Promise<void> {
  const pid = task.rootPid;
  expect(readPidState(pid)).toMatch(/^[RSD]$/);
  const a = await task.verify();
  expect(a).toMatchObject({ host_pid: pid, bad_pages: 0, bad_words: 0 });
  await sleep(120);
  const b = await task.verify();
  expect(b.bad_pages).toBe(0);
  expect(b.writes).toBeGreaterThan(a.writes);
}

/** No process but the original carries the workload's --name: a restored copy, if any was made, is gone. */
async function expectNoCopy(task: MemtestHandle): Promise<void> {
  await eventually(
    () => {
      const pids = pidsWithArgs('memtest', '--name', task.name);
      return pids.length === 1 && pids[0] === task.rootPid;
    },
    5_000,
    () => `only the original (pid ${task.rootPid}) to carry --name ${task.name}; now: ${pidsWithArgs('memtest', '--name', task.name).join(', ')}`,
  );
}

function isPhase(phase: string): (l: FerryLine) => boolean {
  return (l) => l.kind === 'phase' && l.phase === phase;
}

describe.skipIf(!runnable)('rollback: the original survives every failure', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let small: MemtestHandle | undefined;
  let stateDir: string | undefined;
  let imagesRoot: string | undefined;
  const env = (): Record<string, string> => ({ FERRY_IMAGES_DIR: imagesRoot! });

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-state-');
    imagesRoot = makeTempDir('ferry-e2e-images-');
    hosts = await createTwoHosts();
    [dest, small] = await Promise.all([
      startDestAgent(hosts),
      startMemtest({ name: SMALL, mib: SMALL_MIB, dirtyMibPerSec: 4, stateDir, netns: hosts.src.netns }),
    ]);
  }, 60_000);

  afterAll(async () => {
    await small?.stop();
    await dest?.stop();
    await hosts?.destroy();
    for (const d of [stateDir, imagesRoot]) if (d) rmSync(d, { recursive: true, force: true });
  });

  describe('(d) an abort in every source phase', () => {
    it.each(['prepare', 'precopy', 'freeze', 'final-delta', 'restore', 'commit'])(
      'FERRY_FAULT=source.%s: exit 1 naming the phase, the original runs, nothing left',
      async (phase) => {
        const r = await runMigrate(hosts!, small!.rootPid, dest, { env: { ...env(), FERRY_FAULT: `source.${phase}`, FERRY_TEST_FAULTS: '1' }, timeoutMs: 60_000 });
        expectFailedWithSourceRunning(r, 1);
        expect(r.error!.code).toBe('FERRY-9001');
        expect(r.error!.message).toContain(`source.${phase}`);
        expect(r.error!.phase, describeResult(r)).toBe(phase);
        // The last phase entered is the one that failed.
        expect(r.lines.filter((l) => l.kind === 'phase').at(-1)).toEqual({ kind: 'phase', phase });
        await expectOriginalIntact(small!);
        await expectNoCopy(small!);
        expect(dest!.leftovers()).toEqual([]);
        expect(leftovers(imagesRoot!)).toEqual([]);
      },
      60_000,
    );
  });

  describe('(b, c) the dest fails the restore', () => {
    it.each([
      ['dest.restore-fails', 'FERRY-6003', 'CRIU_RESTORE_FAILED'],
      ['dest.corrupt-store', 'FERRY-6002', 'REBUILD_HASH_MISMATCH'],
    ])('dest with FERRY_FAULT=%s: %s, the original runs, the dest is clean', async (fault, code, key) => {
      const faulty = await startDestAgent(hosts!, { env: { FERRY_FAULT: fault, FERRY_TEST_FAULTS: '1' } });
      try {
        const r = await runMigrate(hosts!, small!.rootPid, faulty, { env: env(), timeoutMs: 60_000 });
        expectFailedWithSourceRunning(r, 1);
        expect(r.error).toMatchObject({ code, key, phase: 'restore', side: 'dest' });
        await expectOriginalIntact(small!);
        await expectNoCopy(small!);
        expect(faulty.leftovers()).toEqual([]);
        expect(leftovers(imagesRoot!)).toEqual([]);
        expect(faulty.exited()).toBe(false);
      } finally {
        await faulty.stop();
      }
    }, 60_000);
  });

  describe('(a, e, f) failures and races from outside during pre-copy (256 MiB, so that round 0 lasts)', () => {
    let big: MemtestHandle | undefined;

    beforeAll(async () => {
      big = await startMemtest({ name: BIG, mib: BIG_MIB, dirtyMibPerSec: 16, stateDir: stateDir!, netns: hosts!.src.netns });
    }, 60_000);

    afterAll(async () => {
      await big?.stop();
    });

    it('(a) the dest agent killed (SIGKILL) during pre-copy: exit 1, a stable code, the original runs', async () => {
      const workDir = makeTempDir('ferry-e2e-dest-');
      const victim = await startDestAgent(hosts!, { workDir });
      let successor: DestAgentHandle | undefined;
      try {
        const run = startMigrate(hosts!, big!.rootPid, victim, { env: env(), timeoutMs: 60_000 });
        await run.waitForLine(isPhase('precopy'), 30_000);
        await sleep(150); // pages are flowing: round 0 of 256 MiB lasts well over a second here
        expect(run.lines.some(isPhase('freeze'))).toBe(false);
        await victim.kill('SIGKILL');
        const r = await run.done;
        const rounds = r.lines.filter((l) => l.kind === 'round').length;
        console.log(`dest killed during pre-copy: ${r.error?.code} ${r.error?.key} (phase ${r.error?.phase}) after ${r.durationMs} ms; rounds done: ${rounds}`);
        expect(r.error, describeResult(r)).toBeDefined();
        expect(['FERRY-3002', 'FERRY-1006']).toContain(r.error!.code);
        expect(r.error!.retryable).toBe(true);
        await expectOriginalIntact(big!);
        await expectNoCopy(big!);
        expect(leftovers(imagesRoot!)).toEqual([]);
        // The dead agent could not clean up (its session dir, its journal still "receiving"); the next agent on
        // the same work dir ends the session from the journal and removes the dir.
        expect(victim.leftovers()).toEqual([expect.any(String), expect.stringMatching(/^journal\/.*: receiving$/)]);
        successor = await startDestAgent(hosts!, { workDir });
        expect(successor.leftovers()).toEqual([]);
        // Last: the exit code says whether the source runs (1) or must be looked at (3).
        expect(r.error!.sourceState, describeResult(r)).toBe('running');
        expect(r.exitCode, describeResult(r)).toBe(1);
      } finally {
        await victim.stop();
        await successor?.stop();
        rmSync(workDir, { recursive: true, force: true });
      }
    }, 90_000);

    it('(f) a second migration of the same task while one runs: refused before it touches anything (FERRY-1015)', async () => {
      const first = startMigrate(hosts!, big!.rootPid, dest, { env: env(), timeoutMs: 60_000 });
      try {
        await first.waitForLine(isPhase('precopy'), 30_000);
        const second = await runMigrate(hosts!, big!.rootPid, dest, { env: env(), timeoutMs: 30_000 });
        expect(second.error, describeResult(second)).toMatchObject({ code: 'FERRY-1015', key: 'TASK_ALREADY_MIGRATING', sourceState: 'running' });
        expect(second.lines.some((l) => l.kind === 'phase')).toBe(false);
        expect(second.exitCode).toBe(1);
        expect(first.lines.some(isPhase('freeze'))).toBe(false); // the first went on undisturbed
      } finally {
        first.child.kill('SIGINT');
      }
      const r = await first.done;
      expectFailedWithSourceRunning(r, 130);
      await expectOriginalIntact(big!);
      await expectNoCopy(big!);
      expect(dest!.leftovers()).toEqual([]);
      expect(leftovers(imagesRoot!)).toEqual([]);
    }, 90_000);

    it('(e) Ctrl-C (SIGINT) to ferry migrate during pre-copy: exit 130, rolled back', async () => {
      const run = startMigrate(hosts!, big!.rootPid, dest, { env: env(), timeoutMs: 60_000 });
      await run.waitForLine(isPhase('precopy'), 30_000);
      await sleep(150);
      expect(run.lines.some(isPhase('freeze'))).toBe(false);
      run.child.kill('SIGINT');
      const r = await run.done;
      expectFailedWithSourceRunning(r, 130);
      expect(r.error).toMatchObject({ code: 'FERRY-9002', key: 'CANCELLED' });
      await expectOriginalIntact(big!);
      await expectNoCopy(big!);
      expect(dest!.leftovers()).toEqual([]);
      expect(leftovers(imagesRoot!)).toEqual([]);
    }, 90_000);
  });
});
