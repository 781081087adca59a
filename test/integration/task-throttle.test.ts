/**
 * The auto-converge throttle against a real CPU-bound task: a small C program that counts loop iterations in
 * a shared file mapping, so its work rate can be sampled at any time without its cooperation (a stopped task
 * cannot answer a signal). Rates are compared within one test, never to absolute figures.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readStat } from '../../shared/kernel/proc-status.js';
import { parseCgroupMounts } from '../../shared/kernel/cgroups.js';
import { createTaskThrottle } from '../../source-agent/throttle/choose-throttle.js';
import type { TaskThrottle } from '../../source-agent/throttle/task-throttle.js';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';

const COUNTER_C = `
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
  if (fd < 0 || ftruncate(fd, 4096) != 0) return 1;
  volatile uint64_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (shared == MAP_FAILED) return 1;
  uint64_t x = 1;
  for (;;) {
    for (int i = 0; i < 20000; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    shared[1] = x; /* keeps the loop from being optimised away */
    shared[0]++;
  }
}
`;

const SAMPLE_MS = 1000;
const work = mkdtempSync(join(tmpdir(), 'ferry-throttle-'));
const counterBin = join(work, 'counter');
const children: ChildProcess[] = [];
const throttles: TaskThrottle[] = [];
const cgroupDirs: string[] = []; // parents before children: removed in reverse
const rootProcsFiles = new Set<string>(); // where processes go back before a cgroup is removed

interface Counter {
  pid: number;
  file: string;
  child: ChildProcess;
}

/** The counter's count; 0 until its first write has landed (the file exists, still empty, just after it opens it). */
function readCount(file: string): number {
  const b = readFileSync(file);
  return b.length < 8 ? 0 : Number(b.readBigUInt64LE(0));
}

async function startCounter(): Promise<Counter> {
  const file = join(work, `count-${children.length}`);
  // Its own session and process group, as `ferry run` starts a task.
  const child = spawn(counterBin, [file], { detached: true, stdio: 'ignore' });
  children.push(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error('counter did not start');
  for (let i = 0; i < 250; i++) {
    if (existsSync(file) && readCount(file) > 0) return { pid, file, child };
    await sleep(20);
  }
  throw new Error('counter did not start counting within 5 s');
}

/** Loop iterations per second over about SAMPLE_MS. */
async function rate(c: Counter, ms = SAMPLE_MS): Promise<number> {
  const n0 = readCount(c.file);
  const t0 = performance.now();
  await sleep(ms);
  const n1 = readCount(c.file);
  return ((n1 - n0) * 1000) / (performance.now() - t0);
}

/**
 * The counter's rate over that of a reference counter (kept stopped between samples) in the same window: load
 * from elsewhere on the host slows both alike, so two such ratios taken seconds apart compare the task with
 * itself (an absolute rate before and one after differ with whatever else the 2 cores ran meanwhile).
 */
async function relativeRate(c: Counter, reference: Counter, ms = SAMPLE_MS): Promise<number> {
  process.kill(reference.pid, 'SIGCONT');
  try {
    const [own, ref] = await Promise.all([rate(c, ms), rate(reference, ms)]);
    return own / ref;
  } finally {
    process.kill(reference.pid, 'SIGSTOP');
  }
}

/**
 * The median of three relativeRate samples: one window in which the scheduler favoured the other counter (2
 * cores, other engineers' load) no longer decides a ratio.
 */
async function steadyRelativeRate(c: Counter, reference: Counter): Promise<number> {
  const samples = [await relativeRate(c, reference), await relativeRate(c, reference), await relativeRate(c, reference)];
  return samples.sort((a, b) => a - b)[1]!;
}

/** The share of one CPU the task ran over about `ms` (its on-CPU nanoseconds, /proc/PID/schedstat). */
async function cpuShare(c: Counter, ms = SAMPLE_MS): Promise<number> {
  const onCpuNs = (): number => Number(readFileSync(`/proc/${c.pid}/schedstat`, 'utf8').split(' ')[0]);
  const n0 = onCpuNs();
  const t0 = performance.now();
  await sleep(ms);
  return (onCpuNs() - n0) / 1e6 / (performance.now() - t0);
}

/** A counter to compare with (relativeRate), stopped until a sample needs it. */
async function referenceCounter(): Promise<Counter> {
  const r = await startCounter();
  process.kill(r.pid, 'SIGSTOP');
  return r;
}

async function throttleOf(pid: number, periodMs?: number): Promise<TaskThrottle> {
  const t = await createTaskThrottle(pid, periodMs === undefined ? {} : { periodMs });
  throttles.push(t);
  return t;
}

function stateOf(pid: number): string | undefined {
  return readStat(pid)?.state;
}

/** The task's state every 10 ms for `ms`, in order. */
async function stateSamples(pid: number, ms: number): Promise<string[]> {
  const out: string[] = [];
  for (const end = Date.now() + ms; Date.now() < end; ) {
    out.push(stateOf(pid) ?? 'gone');
    await sleep(10);
  }
  return out;
}

/** Polls the task's state for `ms`: every letter seen. */
async function statesFor(pid: number, ms: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (const end = Date.now() + ms; Date.now() < end; ) {
    seen.add(stateOf(pid) ?? 'gone');
    await sleep(10);
  }
  return seen;
}

async function killAndReap(c: Counter): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return;
  const exited = new Promise((resolve) => c.child.once('exit', resolve));
  c.child.kill('SIGKILL');
  await exited;
}

function ratioLog(what: string, r: number): number {
  console.log(`task-throttle: ${what} = ${r.toFixed(3)}`);
  return r;
}

beforeAll(() => {
  if (!hasCommand('cc').ok) return; // every suite below then skips with that reason
  writeFileSync(join(work, 'counter.c'), COUNTER_C);
  execFileSync('cc', ['-O1', '-o', counterBin, join(work, 'counter.c')]);
});

/**
 * Every counter a test started leaves with that test, even when an assertion failed before its own cleanup:
 * throttles released (never throws), processes back in the root cgroup (so the test cgroups are empty for the
 * next test), killed and reaped.
 */
async function removeChildren(): Promise<void> {
  for (const t of throttles.splice(0)) await t.release();
  for (const c of children.splice(0)) {
    for (const procs of rootProcsFiles) {
      try {
        if (c.pid !== undefined) writeFileSync(procs, String(c.pid));
      } catch {
        /* exited */
      }
    }
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((resolve) => c.once('exit', resolve));
      c.kill('SIGKILL');
      await exited;
    }
  }
}

afterEach(removeChildren);

afterAll(async () => {
  await removeChildren();
  for (const dir of [...cgroupDirs].reverse()) {
    try {
      rmdirSync(dir);
    } catch (e) {
      console.warn(`task-throttle: could not remove ${dir}: ${(e as Error).message}`);
    }
  }
  rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!canRun('task throttle: duty cycle', hasCommand('cc'), hasCommand('bash')))('task throttle: duty cycle', () => {
  it('chooses the duty cycle for a task that shares the runner cgroup', async () => {
    const c = await startCounter();
    const t = await throttleOf(c.pid);
    expect(t.method).toBe('duty-cycle');
    expect(t.percent).toBe(0);
    await t.release();
    await killAndReap(c);
  });

  it('takes about half the work at 50 %, all of it back at 0, and leaves the task running on release', async () => {
    const c = await startCounter();
    const reference = await referenceCounter();
    const t = await throttleOf(c.pid);
    expect(t.method).toBe('duty-cycle');
    expect(await rate(c)).toBeGreaterThan(0);
    // Every figure relative to the reference counter in the same windows: load on the host drifting between
    // samples (absolute rates taken seconds apart) cancels out.
    const baseRel = await steadyRelativeRate(c, reference);

    await t.set(50);
    await t.set(50); // idempotent
    expect(t.percent).toBe(50);
    const throttledRel = await steadyRelativeRate(c, reference);
    // The mechanism itself, whatever the host's load: the task is stopped about half of the time.
    const samples = await stateSamples(c.pid, SAMPLE_MS);
    const stopped = ratioLog('duty 50 %: share of samples stopped', samples.filter((x) => x === 'T').length / samples.length);
    expect(stopped).toBeGreaterThanOrEqual(0.35);
    expect(stopped).toBeLessThanOrEqual(0.65);
    // The work it then does: about half, when the host leaves the counters their CPUs (a resumed task that waits
    // for a busy CPU loses part of its window, so under load the throttle takes more than asked).
    process.kill(reference.pid, 'SIGCONT');
    const referenceShare = await cpuShare(reference).finally(() => process.kill(reference.pid, 'SIGSTOP'));
    await t.set(0);
    expect(t.percent).toBe(0);
    expect(stateOf(c.pid)).not.toBe('T');
    const fullRel = await steadyRelativeRate(c, reference);

    // Against the unthrottled rates on both sides.
    const ratio = ratioLog('duty 50 % / unthrottled', throttledRel / ((baseRel + fullRel) / 2));
    if (referenceShare >= 0.8) expect(ratio).toBeGreaterThanOrEqual(0.35);
    else console.log(`task-throttle: the reference counter got ${referenceShare.toFixed(2)} of a CPU (host load): the work ratio is not asserted, the stops are`);
    expect(ratio).toBeLessThanOrEqual(0.65); // never less throttled than asked
    expect(ratioLog('duty set(0) / unthrottled', fullRel / baseRel)).toBeGreaterThanOrEqual(0.8);

    // Released in the middle of a cycle: running at once, and no stop afterwards.
    await t.set(70);
    await sleep(130);
    await t.release();
    await t.release(); // idempotent
    expect(t.percent).toBe(0);
    expect(t.errors).toEqual([]);
    const states = await statesFor(c.pid, 400);
    expect(states.has('T')).toBe(false);
    expect(ratioLog('after release / unthrottled', (await steadyRelativeRate(c, reference)) / baseRel)).toBeGreaterThanOrEqual(0.8);
    await expect(t.set(20)).rejects.toThrow(/released/);
    await killAndReap(c);
  }, 60_000);

  it('tolerates the task exiting while throttled, and release() after that does not throw', async () => {
    const c = await startCounter();
    const t = await throttleOf(c.pid);
    await t.set(50);
    await sleep(120);
    await killAndReap(c);
    await sleep(250); // a few cycle steps against a dead task
    await expect(t.release()).resolves.toBeUndefined();
    expect(t.errors).toEqual([]);

    const d = await startCounter();
    const u = await throttleOf(d.pid);
    await killAndReap(d);
    await expect(u.release()).resolves.toBeUndefined();
    await expect(createTaskThrottle(d.pid)).rejects.toMatchObject({ code: 'FERRY-3003' });
  });

  it('refuses a percent outside 0..99', async () => {
    const c = await startCounter();
    const t = await throttleOf(c.pid);
    await expect(t.set(100)).rejects.toThrow(RangeError);
    await expect(t.set(-1)).rejects.toThrow(RangeError);
    await expect(t.set(Number.NaN)).rejects.toThrow(RangeError);
    expect(t.percent).toBe(0);
    await t.release();
    await killAndReap(c);
  });

  const viteNode = join(process.cwd(), 'node_modules', '.bin', 'vite-node');
  it.skipIf(!canRun('task throttle: guard after an agent crash', { ok: existsSync(viteNode), reason: `needs ${viteNode}` }))(
    'resumes the task when the throttling process dies while the task is stopped',
    async () => {
      const c = await startCounter();
      const script = join(work, 'agent.ts');
      const module = join(process.cwd(), 'source-agent', 'throttle', 'choose-throttle.ts');
      writeFileSync(
        script,
        `import { createTaskThrottle } from ${JSON.stringify(module)};
const t = await createTaskThrottle(${c.pid});
await t.set(90);
console.log('throttling ' + t.method);
setInterval(() => undefined, 1000); // stay alive until killed
`,
      );
      const agent = spawn(viteNode, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(agent);
      const started = await new Promise<string>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`agent did not start: '${out}'`)), 20_000);
        agent.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) {
            clearTimeout(timer);
            resolve(out.trim());
          }
        });
      });
      expect(started).toBe('throttling duty-cycle');
      // Kill the agent while the task is stopped by it.
      for (let i = 0; i < 200 && stateOf(c.pid) !== 'T'; i++) await sleep(2);
      expect(stateOf(c.pid)).toBe('T');
      const exited = new Promise((resolve) => agent.once('exit', resolve));
      agent.kill('SIGKILL');
      await exited;
      let state = stateOf(c.pid);
      for (let i = 0; i < 100 && state === 'T'; i++) {
        await sleep(20);
        state = stateOf(c.pid);
      }
      expect(state).not.toBe('T');
      expect((await statesFor(c.pid, 300)).has('T')).toBe(false);
      await killAndReap(c);
    },
    30_000,
  );
});

// ------------------------------------------------------------------------------------------------------------
// The cgroup methods, in a cgroup made for the test

interface CgroupHost {
  version: 1 | 2;
  mountPoint: string;
  quotaFile: string;
  requirement: Requirement;
}

function cgroupHost(version: 1 | 2): CgroupHost {
  const mounts = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8')).filter(
    (m) => m.version === version && m.root === '/' && (version === 2 || m.controllers.includes('cpu')),
  );
  const quotaFile = version === 2 ? 'cpu.max' : 'cpu.cfs_quota_us';
  const mount = mounts[0]?.mountPoint;
  let reason = version === 2 ? 'needs a cgroup2 mount' : 'needs a mounted cgroup v1 cpu hierarchy';
  let ok = mount !== undefined && isRoot().ok;
  if (mount !== undefined && version === 2) {
    // The test only creates a child of the mount's root: cpu must already be enabled for children there.
    ok &&= readFileSync(posix.join(mount, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('cpu');
    reason = `cgroup v2 at ${mount} does not enable the cpu controller for its children (cpu is bound to a v1 hierarchy here, or not delegated)`;
  }
  if (mount !== undefined && version === 1) {
    ok &&= existsSync(posix.join(mount, quotaFile));
    reason = `the v1 cpu hierarchy at ${mount} has no ${quotaFile} (CONFIG_CFS_BANDWIDTH)`;
  }
  if (!isRoot().ok) reason = isRoot().reason;
  return { version, mountPoint: mount ?? '', quotaFile, requirement: { ok, reason } };
}

function makeCgroup(parent: string, name: string): string {
  const dir = posix.join(parent, name);
  mkdirSync(dir);
  cgroupDirs.push(dir);
  return dir;
}

function readQuota(dir: string, file: string): string {
  return readFileSync(posix.join(dir, file), 'utf8').trim();
}

for (const version of [1, 2] as const) {
  const host = cgroupHost(version);
  const method = `cgroup-v${version}`;
  describe.skipIf(!canRun(`task throttle: ${method}`, host.requirement, hasCommand('cc')))(`task throttle: ${method}`, () => {
    let dir = '';
    let original = '';
    let period = 0;

    beforeAll(() => {
      rootProcsFiles.add(posix.join(host.mountPoint, 'cgroup.procs'));
      dir = makeCgroup(host.mountPoint, `ferry-test-${process.pid}-v${version}`);
      original = readQuota(dir, host.quotaFile);
      period = Number(version === 2 ? original.split(' ')[1] : readQuota(dir, 'cpu.cfs_period_us'));
    });

    it('lowers the quota of a cgroup of its own, and restores it exactly', async () => {
      const c = await startCounter();
      writeFileSync(posix.join(dir, 'cgroup.procs'), String(c.pid));
      const reference = await referenceCounter();
      const t = await throttleOf(c.pid);
      expect(t.method).toBe(method);
      const base = await cpuShare(c);
      const baseRel = await steadyRelativeRate(c, reference);

      await t.set(50);
      // One thread: half of one CPU's worth of every period.
      const half = String(period / 2);
      expect(readQuota(dir, host.quotaFile)).toBe(version === 2 ? `${half} ${period}` : half);
      const throttled = await cpuShare(c);

      await t.release();
      expect(readQuota(dir, host.quotaFile)).toBe(original);
      expect(t.errors).toEqual([]);
      const after = await cpuShare(c);
      const afterRel = await steadyRelativeRate(c, reference);
      // A quota caps absolute CPU time, whatever else the host runs: at 50 % the task gets at most half a CPU
      // (plus the scheduler's accounting slack). Only when it would otherwise get nearly a whole CPU does the cap
      // also halve its work; under load it may get less than half anyway, and then the cap is all there is to see.
      ratioLog(`${method} CPU share unthrottled`, base);
      expect(ratioLog(`${method} CPU share at 50 %`, throttled)).toBeLessThanOrEqual(0.6);
      if (Math.min(base, after) >= 0.8) {
        const ratio = ratioLog(`${method} 50 % / unthrottled`, throttled / ((base + after) / 2));
        expect(ratio).toBeGreaterThanOrEqual(0.35);
        expect(ratio).toBeLessThanOrEqual(0.65);
      } else console.log(`task-throttle: ${method}: the unthrottled task got ${base.toFixed(2)} and ${after.toFixed(2)} of a CPU (host load): the halving is not measurable, the cap is`);
      expect(ratioLog(`${method} after release / unthrottled`, afterRel / baseRel)).toBeGreaterThanOrEqual(0.8);
      await killAndReap(c);
    }, 60_000);

    it('never raises a quota already in force, and writes back exactly that one', async () => {
      const c = await startCounter();
      writeFileSync(posix.join(dir, 'cgroup.procs'), String(c.pid));
      const limited = Math.round(period * 0.6);
      writeFileSync(posix.join(dir, host.quotaFile), version === 2 ? `${limited} ${period}` : String(limited));
      const before = readQuota(dir, host.quotaFile);
      try {
        const t = await throttleOf(c.pid);
        await t.set(50);
        const expected = String(Math.floor(limited / 2));
        expect(readQuota(dir, host.quotaFile)).toBe(version === 2 ? `${expected} ${period}` : expected);
        await t.set(0);
        expect(readQuota(dir, host.quotaFile)).toBe(before);
        await t.set(30);
        await t.release();
        expect(readQuota(dir, host.quotaFile)).toBe(before);
      } finally {
        writeFileSync(posix.join(dir, host.quotaFile), original);
        await killAndReap(c);
      }
    });

    it('duty-cycles instead when the cgroup holds a process outside the tree, in it or below it', async () => {
      const c = await startCounter();
      writeFileSync(posix.join(dir, 'cgroup.procs'), String(c.pid));
      const stranger = spawn('sleep', ['60'], { stdio: 'ignore' });
      children.push(stranger);
      writeFileSync(posix.join(dir, 'cgroup.procs'), String(stranger.pid));
      const t = await throttleOf(c.pid);
      expect(t.method).toBe('duty-cycle');
      await t.release();
      expect(readQuota(dir, host.quotaFile)).toBe(original);

      // v2 forbids processes in a cgroup that has children with controllers: the stranger's cgroup then
      // needs no controller, which is the default for a new child.
      const below = makeCgroup(dir, 'below');
      writeFileSync(posix.join(below, 'cgroup.procs'), String(stranger.pid));
      const u = await throttleOf(c.pid);
      expect(u.method).toBe('duty-cycle');
      await u.release();
      writeFileSync(posix.join(host.mountPoint, 'cgroup.procs'), String(stranger.pid));
      stranger.kill('SIGKILL');
      await killAndReap(c);
    });
  });
}
