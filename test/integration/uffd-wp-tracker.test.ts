/**
 * The uffd-wp tracker against real tasks: a C target that writes the pages it is told to and checks its own
 * memory, a python3 target that churns memory on its own, a C target under a 1 kHz SIGALRM itimer, a
 * job-control-stopped target, and a fork. Exactness is measured, not assumed: with the target frozen around
 * each round, every present page's hash must equal what the tracker recorded as held by the dest.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { presentRuns, runsPageCount } from '../../shared/kernel/pagemap.js';
import { dumpableVmas, readMaps } from '../../shared/kernel/proc-maps.js';
import { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import { UFFD_FEATURE_WP_ASYNC, uffdApi } from '../../shared/kernel/userfaultfd.js';
import { PAGE_HASH_BYTES, hashPages } from '../../shared/native/addon.js';
import { closeFd } from '../../shared/native/ptrace.js';
import { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { batchPageCount, readPageNumber, type PageBatch } from '../../shared/transport/page-batch.js';
import { HashTracker } from '../../source-agent/trackers/hash-tracker.js';
import type { TrackedTask, TrackerRoundStats } from '../../source-agent/trackers/tracker.js';
import { injectUserfaultfd } from '../../source-agent/trackers/uffd-wp/inject.js';
import { UffdWpTracker } from '../../source-agent/trackers/uffd-wp/uffd-wp-tracker.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const TARGET_C = String.raw`
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static long pages, ps = 4096;
static uint8_t *r, *ver;
static volatile long alarms;
static void on_alarm(int s) { (void)s; alarms++; }

static void fill(long p) { memset(r + p * ps, (int)((p * 31 + ver[p]) & 0xff), ps); r[p * ps] = ver[p]; }

static long check(void) {
  long bad = 0;
  for (long p = 0; p < pages; p++) {
    uint8_t want = (uint8_t)((p * 31 + ver[p]) & 0xff);
    if (r[p * ps] != ver[p]) { bad++; continue; }
    for (long i = 1; i < ps; i++) if (r[p * ps + i] != want) { bad++; break; }
  }
  return bad;
}

int main(int argc, char **argv) {
  pages = atol(argv[1]);
  if (argc > 2 && strcmp(argv[2], "alarm") == 0) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_alarm; sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 1000 }, { 0, 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
  }
  r = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ver = calloc(pages, 1);
  if (r == MAP_FAILED || !ver) return 1;
  madvise(r, pages * ps, MADV_NOHUGEPAGE);
  for (long p = 0; p < pages; p++) fill(p);
  printf("ready %lx\n", (unsigned long)r);
  fflush(stdout);
  char cmd[128];
  while (fgets(cmd, sizeof cmd, stdin)) {
    long p = 0;
    if (sscanf(cmd, "w %ld", &p) == 1) { ver[p]++; fill(p); printf("ok\n"); }
    else if (strncmp(cmd, "check", 5) == 0) printf("bad %ld alarms %ld\n", check(), alarms);
    else if (strncmp(cmd, "fork", 4) == 0) {
      pid_t c = fork();
      if (c == 0) {
        /* The child rewrites its first pages, then idles until killed by the test. */
        for (long q = 0; q < 64; q++) { ver[q] += 2; fill(q); }
        for (;;) pause();
      }
      printf("child %d\n", (int)c);
    } else break;
    fflush(stdout);
  }
  return 0;
}
`;

/** python3 writing its own memory all the time: bytearray edits, dict churn, new arenas. */
const PYTHON_TARGET = String.raw`
import random, sys, time
buf = bytearray(32 * 1024 * 1024)
d = {}
sys.stdout.write("ready\n"); sys.stdout.flush()
i = 0
while True:
    for _ in range(200):
        o = random.randrange(0, len(buf) - 8)
        buf[o:o + 8] = random.randbytes(8)
    d[i % 5000] = "x" * random.randrange(1, 2000)
    if i % 100 == 0:
        d = dict(d)
    i += 1
    time.sleep(0.0005)
`;

/** Node 20 with its own heap, GC and timers: Buffers rewritten at random, some allocated and dropped. */
const NODE_TARGET = `
const bufs = [];
for (let i = 0; i < 48; i++) bufs.push(Buffer.alloc(1 << 20, i));
let extra = [];
console.log('ready');
setInterval(() => {
  for (let k = 0; k < 64; k++) {
    const b = bufs[(Math.random() * bufs.length) | 0];
    b.writeUInt32LE((Math.random() * 4294967295) >>> 0, ((Math.random() * ((1 << 20) - 4)) | 0) & ~3);
  }
  extra.push(Buffer.alloc(32768, 7));
  if (extra.length > 32) extra = [];
}, 5);
`;

const REGION_PAGES = 32768; // 128 MiB

/** A spawned target answering one line per command. */
class Target {
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | undefined;

  constructor(readonly child: ChildProcess) {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(line);
      } else {
        this.lines.push(line);
      }
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  nextLine(): Promise<string> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  async ask(cmd: string): Promise<string> {
    this.child.stdin!.write(`${cmd}\n`);
    return this.nextLine();
  }
}

const spawned: ChildProcess[] = [];
const extraPids: number[] = [];
let dir = '';
let binary = '';

async function startC(pages: number, ...args: string[]): Promise<{ target: Target; regionPage: number }> {
  const child = spawn(binary, [String(pages), ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  spawned.push(child);
  const target = new Target(child);
  const ready = await target.nextLine();
  const m = /^ready ([0-9a-f]+)$/.exec(ready);
  if (!m) throw new Error(`target said ${ready}`);
  return { target, regionPage: parseInt(m[1]!, 16) / PAGE_SIZE };
}

function tasksOf(rootPid: number): TrackedTask[] {
  return (readProcessTree(rootPid)?.processes ?? []).map((p) => ({ hostPid: p.hostPid, key: p.hostPid }));
}

/** A sink that records the page numbers sent, per task. */
function recordingSink(): { sent: Map<number, Set<number>>; sink: (task: number, batch: PageBatch) => Promise<void> } {
  const sent = new Map<number, Set<number>>();
  return {
    sent,
    sink: (task, batch) => {
      let s = sent.get(task);
      if (!s) sent.set(task, (s = new Set()));
      for (let i = 0; i < batchPageCount(batch); i++) s.add(readPageNumber(batch.pageNumbers, i));
      return Promise.resolve();
    },
  };
}

function fdList(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).sort();
}

/** Areas whose smaps VmFlags carry `uw` (registered for uffd write-protect). */
function uwAreas(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  return text.split('\n').filter((l) => l.startsWith('VmFlags:') && / uw( |$)/.test(l)).length;
}

function allStopped(pid: number): boolean {
  const tasks = readdirSync(`/proc/${pid}/task`);
  return tasks.every((t) => readStat(pid, Number(t))?.state === 'T');
}

async function freeze(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  for (let i = 0; i < 500 && !allStopped(pid); i++) await new Promise((r) => setTimeout(r, 2));
  expect(allStopped(pid)).toBe(true);
}

/**
 * Exactness check on a frozen task: every present page of its dumpable memory must be held by the dest with its
 * current hash. Pages never sent that read as all zeros are allowed (zero-page mappings, which CRIU skips).
 */
function verifyHeld(pid: number, index: PageHashIndex): { checked: number; missed: number; zeroUnsent: number } {
  const maps = readMaps(pid)!;
  const runs = presentRuns(pid, dumpableVmas(maps));
  const reader = new ProcessMemoryReader();
  const out = Buffer.alloc(reader.chunkPages * PAGE_HASH_BYTES);
  let checked = 0;
  let missed = 0;
  let zeroUnsent = 0;
  const zero = Buffer.alloc(PAGE_SIZE);
  for (const chunk of reader.chunks(pid, runs)) {
    hashPages(chunk.data, chunk.pages.length, PAGE_SIZE, out);
    for (let k = 0; k < chunk.pages.length; k++) {
      checked++;
      const page = chunk.pages[k]!;
      if (index.holds(page, out, k * PAGE_HASH_BYTES)) continue;
      if (index.slotOf(page) === undefined && chunk.data.compare(zero, 0, PAGE_SIZE, k * PAGE_SIZE, (k + 1) * PAGE_SIZE) === 0) {
        zeroUnsent++;
        continue;
      }
      missed++;
    }
  }
  return { checked, missed, zeroUnsent };
}

const signal = new AbortController().signal;
const runAll = canRun('uffd-wp tracker integration', isRoot(), hasCommand('gcc'), hasCommand('python3'));
let probe: { ok: true } | { ok: false; reason: string } = { ok: false, reason: 'not probed' };

describe.runIf(runAll)('uffd-wp tracker', () => {
  beforeAll(async () => {
    probe = await UffdWpTracker.probe();
    if (!probe.ok) console.warn(`SKIP uffd-wp tracker: ${probe.reason}`);
    dir = mkdtempSync(join(tmpdir(), 'ferry-uffd-'));
    writeFileSync(join(dir, 'target.c'), TARGET_C);
    binary = join(dir, 'target');
    execFileSync('gcc', ['-O1', '-o', binary, join(dir, 'target.c')]);
  });

  afterAll(() => {
    for (const c of spawned) {
      if (c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid!, 'SIGCONT');
        } catch {
          /* gone */
        }
        c.kill('SIGKILL');
      }
    }
    for (const pid of extraPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('probes WP_ASYNC + PAGEMAP_SCAN on this kernel', () => {
    console.log(`uffd-wp probe: ${JSON.stringify(probe)}`);
    expect(probe.ok).toBe(true);
  });

  it('reports a superset of the pages written, leaves the task as it was, and costs less than hashing', async () => {
    if (!probe.ok) return;
    const { target, regionPage } = await startC(REGION_PAGES);
    const pid = target.pid;
    const fdsBefore = fdList(pid);
    expect(uwAreas(pid)).toBe(0);
    const tracker = new UffdWpTracker(PAGE_SIZE);
    const held = new Map<number, PageHashIndex>();
    try {
      // Round 0: every present page is sent.
      const r0 = recordingSink();
      const s0 = await tracker.round(tasksOf(pid), held, r0.sink, signal);
      const d0 = tracker.lastRound!;
      console.log(`uffd round 0: present=${s0.presentPages} sent=${s0.dirtyPages} reported=${d0.reportedPages} vmas=${d0.registeredVmas} inject=${d0.injectMs.toFixed(2)}ms stopped=${d0.maxStoppedMs.toFixed(2)}ms`);
      expect(s0.dirtyPages).toBe(s0.presentPages);
      // The first scan of a new area reports all its present pages as written (uffd-lab §2.4): check it here.
      expect(d0.reportedPages).toBeGreaterThanOrEqual(s0.presentPages);
      for (let p = 0; p < REGION_PAGES; p++) expect(r0.sent.get(pid)!.has(regionPage + p)).toBe(true);
      expect(fdList(pid)).toEqual(fdsBefore);
      expect(uwAreas(pid)).toBeGreaterThan(0);

      // Rounds 1..3: write a random set P; the tracker must send all of P (missed = 0).
      let totalWritten = 0;
      let totalOver = 0;
      for (let round = 1; round <= 3; round++) {
        const written = new Set<number>();
        while (written.size < 500) written.add(Math.floor(Math.random() * REGION_PAGES));
        for (const p of written) expect(await target.ask(`w ${p}`)).toBe('ok');
        const rec = recordingSink();
        const t0 = performance.now();
        const s = await tracker.round(tasksOf(pid), held, rec.sink, signal);
        const ms = performance.now() - t0;
        const d = tracker.lastRound!;
        const sent = rec.sent.get(pid) ?? new Set<number>();
        let missed = 0;
        for (const p of written) if (!sent.has(regionPage + p)) missed++;
        const over = d.candidatePages - written.size;
        totalWritten += written.size;
        totalOver += over;
        console.log(
          `uffd round ${round}: written=${written.size} reported=${d.reportedPages} read=${d.candidatePages} sent=${s.dirtyPages} missed=${missed} over-reported=${over} ` +
            `bytesRead=${s.bytesRead} readMs=${s.readMs.toFixed(2)} scanMs=${d.scanMs.toFixed(2)} round=${ms.toFixed(2)}ms`,
        );
        expect(missed).toBe(0);
        expect(s.bytesRead).toBe(d.candidatePages * PAGE_SIZE);
      }
      console.log(`uffd exactness (C): written=${totalWritten} missed=0 over-reported=${totalOver}`);

      // Frozen check: the dest's copy equals the task's memory, page for page.
      await freeze(pid);
      try {
        const rec = recordingSink();
        await tracker.round(tasksOf(pid), held, rec.sink, signal);
        const v = verifyHeld(pid, held.get(pid)!);
        console.log(`uffd frozen check (C): checked=${v.checked} missed=${v.missed} zeroUnsent=${v.zeroUnsent}`);
        expect(v.missed).toBe(0);
      } finally {
        process.kill(pid, 'SIGCONT');
      }

      // The same target under the hash tracker: the cost of one round with the same number of written pages.
      const hash = new HashTracker(PAGE_SIZE);
      const hashHeld = new Map<number, PageHashIndex>();
      await hash.round(tasksOf(pid), hashHeld, recordingSink().sink, signal);
      for (let k = 0; k < 500; k++) await target.ask(`w ${(k * 61) % REGION_PAGES}`);
      let t0 = performance.now();
      const hs: TrackerRoundStats = await hash.round(tasksOf(pid), hashHeld, recordingSink().sink, signal);
      const hashMs = performance.now() - t0;
      hash.close();
      for (let k = 0; k < 500; k++) await target.ask(`w ${(k * 67) % REGION_PAGES}`);
      t0 = performance.now();
      const us = await tracker.round(tasksOf(pid), held, recordingSink().sink, signal);
      const uffdMs = performance.now() - t0;
      console.log(
        `round cost, 128 MiB target, 500 pages written: hash ${hashMs.toFixed(1)} ms, ${hs.bytesRead} B read, sent ${hs.dirtyPages}; ` +
          `uffd-wp ${uffdMs.toFixed(1)} ms, ${us.bytesRead} B read, sent ${us.dirtyPages}`,
      );
      expect(us.bytesRead).toBeLessThan(hs.bytesRead / 10);
    } finally {
      tracker.close();
    }
    // After close(): same fds, no `uw` area, and the task's own memory check passes.
    expect(fdList(pid)).toEqual(fdsBefore);
    expect(uwAreas(pid)).toBe(0);
    expect(await target.ask('check')).toMatch(/^bad 0 /);
  });

  it.each([
    ['python3', ['python3', '-c', PYTHON_TARGET]],
    ['node', [process.execPath, '-e', NODE_TARGET]],
  ] as const)('misses no page of a %s process that writes on its own (content-hash diff, frozen rounds)', async (lang, argv) => {
    if (!probe.ok) return;
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
    spawned.push(child);
    const target = new Target(child);
    expect(await target.nextLine()).toBe('ready');
    const pid = target.pid;
    const fdsBefore = fdList(pid);
    const tracker = new UffdWpTracker(PAGE_SIZE);
    const held = new Map<number, PageHashIndex>();
    let changedTotal = 0;
    let missedTotal = 0;
    let overTotal = 0;
    try {
      await tracker.round(tasksOf(pid), held, recordingSink().sink, signal);
      for (let round = 1; round <= 6; round++) {
        await new Promise((r) => setTimeout(r, 150));
        await freeze(pid);
        try {
          const rec = recordingSink();
          const s = await tracker.round(tasksOf(pid), held, rec.sink, signal);
          const d = tracker.lastRound!;
          const v = verifyHeld(pid, held.get(pid)!);
          changedTotal += s.dirtyPages;
          missedTotal += v.missed;
          overTotal += d.candidatePages - s.dirtyPages;
          console.log(
            `${lang} round ${round}: present=${s.presentPages} reported=${d.reportedPages} read=${d.candidatePages} changed+sent=${s.dirtyPages} ` +
              `missed=${v.missed} reportedUnchanged=${d.candidatePages - s.dirtyPages} zeroUnsent=${v.zeroUnsent} vmas=${d.registeredVmas}`,
          );
        } finally {
          process.kill(pid, 'SIGCONT');
        }
      }
    } finally {
      tracker.close();
    }
    console.log(`uffd exactness (${lang}): changed=${changedTotal} missed=${missedTotal} reported-but-unchanged=${overTotal}`);
    expect(missedTotal).toBe(0);
    expect(changedTotal).toBeGreaterThan(0);
    expect(fdList(pid)).toEqual(fdsBefore);
    expect(uwAreas(pid)).toBe(0);
    expect(child.exitCode).toBe(null);
  });

  it('survives 500 injections into a task with a 1 kHz SIGALRM itimer', async () => {
    if (!probe.ok) return;
    const { target } = await startC(64, 'alarm');
    const pid = target.pid;
    const fdsBefore = fdList(pid);
    const before = await target.ask('check');
    let redelivered = 0;
    let maxStopped = 0;
    const n = 500;
    for (let i = 0; i < n; i++) {
      const r = injectUserfaultfd(pid);
      redelivered += r.signalsRedelivered;
      maxStopped = Math.max(maxStopped, r.stoppedMs);
      expect(uffdApi(r.fd, UFFD_FEATURE_WP_ASYNC) & UFFD_FEATURE_WP_ASYNC).not.toBe(0);
      closeFd(r.fd);
      // Spread over time, so that injections land at every point of the timer's period.
      await new Promise((res) => setTimeout(res, i % 3));
    }
    const after = await target.ask('check');
    console.log(`itimer target: ${n} injections, ${redelivered} took the signal-delivery path, max stopped ${maxStopped.toFixed(2)} ms; ${before} -> ${after}`);
    expect(after).toMatch(/^bad 0 /);
    const alarms = (s: string): number => Number(/alarms (\d+)/.exec(s)![1]);
    expect(alarms(after)).toBeGreaterThan(alarms(before));
    expect(fdList(pid)).toEqual(fdsBefore);
    expect(readStat(pid)?.state).not.toBe('T');
  });

  it('refuses a task stopped by job control, and leaves it stopped', async () => {
    if (!probe.ok) return;
    const { target } = await startC(16);
    const pid = target.pid;
    await freeze(pid);
    try {
      let caught: unknown;
      try {
        injectUserfaultfd(pid);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(FerryError);
      expect((caught as FerryError).code).toBe('FERRY-1010');
      console.log(`stopped target refused: ${(caught as FerryError).message} (${(caught as FerryError).detail})`);
      const tracker = new UffdWpTracker(PAGE_SIZE);
      await expect(tracker.round(tasksOf(pid), new Map(), recordingSink().sink, signal)).rejects.toMatchObject({ code: 'FERRY-1010' });
      tracker.close();
      expect(readStat(pid)?.state).toBe('T');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(await target.ask('check')).toMatch(/^bad 0 /);
  });

  it('tracks a child forked after round 0 from the next round, and cleans it up', async () => {
    if (!probe.ok) return;
    const { target } = await startC(256);
    const pid = target.pid;
    const tracker = new UffdWpTracker(PAGE_SIZE);
    const held = new Map<number, PageHashIndex>();
    let childPid = 0;
    try {
      await tracker.round(tasksOf(pid), held, recordingSink().sink, signal);
      expect(tracker.trackedPids()).toEqual([pid]);
      const line = await target.ask('fork');
      childPid = Number(/^child (\d+)$/.exec(line)![1]);
      extraPids.push(childPid);
      await new Promise((r) => setTimeout(r, 100));
      // Registration does not leak into the child, nor does the uffd (closed in the parent at once).
      expect(uwAreas(childPid)).toBe(0);
      const childFds = fdList(childPid);
      const rec = recordingSink();
      const s = await tracker.round(tasksOf(pid), held, rec.sink, signal);
      expect(tracker.trackedPids().sort()).toEqual([pid, childPid].sort());
      const childSent = rec.sent.get(childPid)?.size ?? 0;
      console.log(`fork: child ${childPid} joined at round 1 with ${childSent} pages sent (round total ${s.dirtyPages})`);
      expect(childSent).toBeGreaterThanOrEqual(runsPageCount(presentRuns(childPid, dumpableVmas(readMaps(childPid)!))) - 8);
      expect(fdList(childPid)).toEqual(childFds);
      expect(uwAreas(childPid)).toBeGreaterThan(0);
      // An exited child is dropped at the next round.
      process.kill(childPid, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 100));
      await tracker.round(tasksOf(pid), held, recordingSink().sink, signal);
      expect(tracker.trackedPids()).toEqual([pid]);
    } finally {
      tracker.close();
    }
    expect(uwAreas(pid)).toBe(0);
    expect(await target.ask('check')).toMatch(/^bad 0 /);
  });
});
