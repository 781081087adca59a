/**
 * The memtest workload against the real kernel: it must report clean memory, keep its write rate, survive
 * SIGSTOP/SIGCONT, catch a page changed behind its back (so a clean report means something), leave nothing
 * running after stop(), and, with CRIU, survive dump and restore as a new host pid that is still pid 1.
 */
import { execFile } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  buildMemtest,
  readPidState,
  startMemtest,
  waitFor,
  writeProcessMemory,
  type MemtestHandle,
} from '../../testbed/workloads/memtest.js';

const execFileAsync = promisify(execFile);

const CRIU = process.env.FERRY_CRIU ?? '/var/cache/ferry/criu-forky/bin/criu';
const MIB = 64;
const RATE_MIB = 8;
const HOT_MIB = 48;
const PAGES = (MIB * 1024 * 1024) / 4096;
const PAGES_PER_S = (RATE_MIB * 1024 * 1024) / 4096;

const runnable = canRun(
  'memtest workload integration',
  isRoot(),
  hasCommand('gcc'),
  hasCommand('unshare'),
  hasCommand('setsid'),
);
const criuRunnable =
  runnable &&
  canRun('memtest under CRIU', {
    ok: existsSync(CRIU),
    reason: `needs CRIU at ${CRIU} (set FERRY_CRIU or run scripts/provision-criu.sh)`,
  });

/** NSpid of /proc/PID/status: host pid first, innermost namespace pid last. */
function nsPids(hostPid: number): number[] {
  const line = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${hostPid}/status`, 'utf8'))?.[1] ?? '';
  return line.trim().split(/\s+/).map(Number);
}

describe.skipIf(!runnable)('memtest workload', () => {
  let dir: string;
  let h: MemtestHandle;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-memtest-'));
    // The last 16 MiB are never rewritten, so a page corrupted there stays corrupted until the check.
    h = await startMemtest({ name: 'mt', mib: MIB, dirtyMibPerSec: RATE_MIB, hotMib: HOT_MIB, stateDir: dir });
    console.info(`memtest ${MIB} MiB filled in ${h.ready.fill_ms.toFixed(1)} ms`);
  });

  afterAll(async () => {
    await h?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs as pid 1 of its own namespace with only fds 0/1/2', () => {
    expect(h.ready).toMatchObject({ name: 'mt', pid: 1, host_pid: h.rootPid, pages: PAGES, page_size: 4096 });
    expect(nsPids(h.rootPid)).toEqual([h.rootPid, 1]);
    expect(readdirSync(`/proc/${h.rootPid}/fd`).sort()).toEqual(['0', '1', '2']);
  });

  it('verifies clean and keeps writing between two reports', async () => {
    const a = await h.verify();
    expect(a).toMatchObject({ name: 'mt', pid: 1, host_pid: h.rootPid, pages: PAGES, bad_pages: 0, bad_words: 0 });
    expect(a.first_bad_page).toBeNull();
    await sleep(300);
    const b = await h.verify();
    expect(b.bad_pages).toBe(0);
    expect(b.writes).toBeGreaterThan(a.writes);
    expect(b.ticks).toBeGreaterThan(a.ticks);
    expect(b.verifies).toBe(a.verifies + 1);
  });

  it('dirties pages at the requested rate', async () => {
    const s1 = await h.stats();
    await sleep(1_000);
    const s2 = await h.stats();
    const rate = (s2.writes - s1.writes) / ((s2.mono_ms - s1.mono_ms) / 1000);
    expect(rate).toBeGreaterThan(PAGES_PER_S * 0.7);
    expect(rate).toBeLessThan(PAGES_PER_S * 1.15);
  });

  it('survives SIGSTOP for 500 ms and does not burst to catch up', async () => {
    const root = h.rootPid;
    const before = await h.stats();
    const stoppedAt = Date.now();
    process.kill(root, 'SIGSTOP');
    await waitFor(() => readPidState(root) === 'T', 2_000, `pid ${root} to stop`);
    // A signal to a stopped task stays pending: the driver must say so rather than time out.
    await expect(h.verify()).rejects.toThrow(/stopped/);
    await sleep(500);
    process.kill(root, 'SIGCONT');
    const stoppedMs = Date.now() - stoppedAt;
    await waitFor(() => readPidState(root) !== 'T', 2_000, `pid ${root} to continue`);

    const v = await h.verify();
    expect(v.bad_pages).toBe(0);
    const after = await h.stats();
    expect(after.writes).toBeGreaterThan(before.writes);
    // Catch-up is capped at 50 ms of writes: the stopped half second must not be paid back in a burst.
    const runningMs = Math.max(0, after.mono_ms - before.mono_ms - stoppedMs);
    const allowed = (PAGES_PER_S * (runningMs + 50 + 100)) / 1000; // cap + slack for a loaded host
    expect(after.writes - before.writes).toBeLessThan(allowed);
  });

  it('detects one page changed from outside through /proc/PID/mem', async () => {
    const page = PAGES - 100; // in the cold tail, beyond --hot-mib
    const address = h.baseAddress + BigInt(page * h.ready.page_size) + 8n * 5n;
    const original = Buffer.alloc(8);
    const fd = openSync(`/proc/${h.rootPid}/mem`, 'r');
    try {
      expect(readSync(fd, original, 0, 8, address)).toBe(8);
    } finally {
      closeSync(fd);
    }
    const corrupt = Buffer.from(original.map((b) => b ^ 0xff));
    writeProcessMemory(h.rootPid, address, corrupt);

    const bad = await h.verify();
    expect(bad).toMatchObject({ bad_pages: 1, bad_words: 1, first_bad_page: page });

    // Put the word back: the check is a comparison each time, not a sticky flag.
    writeProcessMemory(h.rootPid, address, original);
    expect((await h.verify()).bad_pages).toBe(0);
  });

  it('stop() leaves no process behind and is idempotent', async () => {
    await h.stop();
    expect(existsSync(`/proc/${h.rootPid}`)).toBe(false);
    expect(existsSync(`/proc/${h.unsharePid}`)).toBe(false);
    await h.stop();
    expect(existsSync(join(dir, 'mt.ready.json'))).toBe(true);
  });
});

/** Host pids whose command line mentions `needle` (e.g. a test's private state dir). */
function pidsMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe.skipIf(!runnable)('memtest start', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-memtest-start-'));
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // 0 ms usually fails before the namespace root exists or is known, 30 ms while it is still filling.
  it.each([0, 30])('fails with a clear timeout and leaves nothing running (ready budget %i ms)', async (budget) => {
    await buildMemtest(); // so that the whole budget goes to the start itself
    const stateDir = join(dir, `slow-${budget}`);
    await expect(
      startMemtest({ name: 'slow', mib: 256, dirtyMibPerSec: 0, stateDir, readyTimeoutMs: budget }),
    ).rejects.toThrow(/timed out after \d+ ms waiting for/);
    expect(pidsMentioning(stateDir)).toEqual([]);
  });

  it('--content heap: about 70 % zero pages, the rest JSON-like text, checked like random pages', async () => {
    const t = await startMemtest({ name: 'heap', mib: 16, dirtyMibPerSec: 2, content: 'heap', stateDir: join(dir, 'heap') });
    try {
      const pages = t.ready.pages;
      const fd = openSync(`/proc/${t.rootPid}/mem`, 'r');
      const mem = Buffer.alloc(pages * 4096);
      try {
        readSync(fd, mem, 0, mem.length, Number(t.baseAddress));
      } finally {
        closeSync(fd);
      }
      let zero = 0;
      let text = '';
      for (let p = 0; p < pages; p++) {
        const page = mem.subarray(p * 4096, (p + 1) * 4096);
        if (page.every((b) => b === 0)) zero++;
        else if (text === '') text = page.toString('latin1');
      }
      // 4096 pages, 7 keys in 10 zero: well within 0.65-0.75.
      expect(zero / pages).toBeGreaterThan(0.65);
      expect(zero / pages).toBeLessThan(0.75);
      expect(text).toMatch(/^\{"id":\d+,"user":"[a-z]+","score":\d+,"tags":\["[a-z-]+","[a-z-]+"\],"active":(true|false)\},\n/);
      // Rewrites keep the pattern a pure function of (seed, page, generation): a check after them is clean.
      await sleep(300);
      const v = await t.verify();
      expect(v.writes).toBeGreaterThan(0);
      expect(v).toMatchObject({ bad_pages: 0, pages });
    } finally {
      await t.stop();
    }
  });

  const netnsRunnable = canRun('memtest in a network namespace', hasCommand('ip'), hasCommand('nsenter'));
  it.skipIf(!netnsRunnable)('starts inside the network namespace it is given', async () => {
    const ns = `ferry-memtest-${process.pid}`;
    await execFileAsync('ip', ['netns', 'add', ns]);
    let t: MemtestHandle | undefined;
    try {
      const netns = `/run/netns/${ns}`;
      t = await startMemtest({ name: 'ns', mib: 4, dirtyMibPerSec: 1, stateDir: join(dir, 'ns'), netns });
      expect(statSync(`/proc/${t.rootPid}/ns/net`).ino).toBe(statSync(`/run/netns/${ns}`).ino);
      expect((await t.verify()).bad_pages).toBe(0);
    } finally {
      await t?.stop();
      await execFileAsync('ip', ['netns', 'del', ns]);
    }
  });
});

/** Runs CRIU; on failure quotes its log's error lines. Only the exit code counts: every run logs a harmless
 * RLIMIT_NOFILE "Error" line. The timeout matters: a bad image can make restore spin for ever. */
async function criu(args: string[], log: string): Promise<void> {
  try {
    await execFileAsync(CRIU, args, { timeout: 30_000, killSignal: 'SIGKILL' });
  } catch (err) {
    let errors = '';
    try {
      errors = readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => /Error|FAILED/.test(l) && !/RLIMIT_NOFILE/.test(l))
        .slice(-10)
        .join('\n');
    } catch {
      errors = '(no log)';
    }
    throw new Error(`criu ${args[0]} failed (${String(err)}); log ${log}:\n${errors}`, { cause: err });
  }
}

describe.skipIf(!criuRunnable)('memtest under CRIU', () => {
  let dir: string;
  let h: MemtestHandle | undefined;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-memtest-criu-'));
  });

  afterAll(async () => {
    await h?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is dumped left stopped, restored as a new host pid still pid 1, and keeps verifying and writing', async () => {
    const t = await startMemtest({ name: 'mtcriu', mib: MIB, dirtyMibPerSec: RATE_MIB, stateDir: dir });
    h = t;
    const before = await t.verify();
    expect(before.bad_pages).toBe(0);

    const images = join(dir, 'images');
    mkdirSync(images);
    const dumpArgs = ['dump', '-t', String(t.rootPid), '-D', images, '--leave-stopped', '-o', 'dump.log'];
    await criu(dumpArgs, join(images, 'dump.log'));
    expect(readPidState(t.rootPid)).toBe('T');

    // --pidfile fails after a complete restore if the file exists: remove it first.
    const pidfile = join(dir, 'restored.pid');
    rmSync(pidfile, { force: true });
    // Restoring while the original still exists works because the task is a pid-namespace root.
    await criu(['restore', '-D', images, '-d', '--pidfile', pidfile, '-o', 'restore.log'], join(images, 'restore.log'));
    const restored = Number(readFileSync(pidfile, 'utf8').trim());
    t.adopt(restored);
    expect(restored).not.toBe(t.rootPid);
    expect(nsPids(restored).at(-1)).toBe(1);

    const a = await t.verify(restored);
    expect(a).toMatchObject({ name: 'mtcriu', pid: 1, host_pid: restored, bad_pages: 0 });
    // The counters are process memory: they continue from where the dump froze them.
    expect(a.writes).toBeGreaterThanOrEqual(before.writes);
    expect(a.verifies).toBe(before.verifies + 1);
    await sleep(300);
    const b = await t.verify(restored);
    expect(b.bad_pages).toBe(0);
    expect(b.writes).toBeGreaterThan(a.writes);
    expect(readPidState(t.rootPid)).toBe('T');

    await t.stop();
    expect(existsSync(`/proc/${restored}`)).toBe(false);
    expect(existsSync(`/proc/${t.rootPid}`)).toBe(false);
  }, 60_000);
});
