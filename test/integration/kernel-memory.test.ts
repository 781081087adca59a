/**
 * The kernel memory layer against real tasks: a small C program that maps a region, fills it with a pattern
 * this file can recompute, and then changes its memory on command; and a pid-namespace tree from unshare.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SystemCallError } from '../../shared/errors/ferry-error.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { PagemapReader, detectedPagemapMethod, emptyRuns, appendRun, presentRuns, runsPageCount, type PageRuns } from '../../shared/kernel/pagemap.js';
import { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { dumpableVmas, readMaps, type Vma } from '../../shared/kernel/proc-maps.js';
import { isPidNamespaceRoot, readStatus } from '../../shared/kernel/proc-status.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import { PAGE_HASH_BYTES, hashPages, pageHash, zeroPages } from '../../shared/native/addon.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

// Region layout (pages): filled with the pattern, except a hole never touched and a run written with zeros.
const REGION_PAGES = 65536; // 256 MiB
const HOLE = [1000, 1100] as const;
const ZEROED = [2000, 2010] as const;

/** Word j of region page p; the C program computes the same. */
function patternWord(p: number, j: number): number {
  return (Math.imul(p * 1024 + j + 1, 0x9e3779b1) ^ 0x5bd1e995) >>> 0;
}

function expectedPage(p: number): Buffer {
  const buf = Buffer.alloc(PAGE_SIZE);
  if (p >= ZEROED[0] && p < ZEROED[1]) return buf;
  const words = new Uint32Array(buf.buffer, buf.byteOffset, PAGE_SIZE / 4);
  for (let j = 0; j < words.length; j++) words[j] = patternWord(p, j);
  return buf;
}

const TARGET_C = `
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
  long pages = atol(argv[1]), hole0 = atol(argv[2]), hole1 = atol(argv[3]), zero0 = atol(argv[4]), zero1 = atol(argv[5]);
  long ps = 4096;
  uint8_t *r = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return 1;
  madvise(r, pages * ps, MADV_NOHUGEPAGE); /* 4 KiB pages: the hole must stay unpopulated */
  for (long p = 0; p < pages; p++) {
    if (p >= hole0 && p < hole1) continue;
    uint32_t *w = (uint32_t *)(r + p * ps);
    if (p >= zero0 && p < zero1) { memset(w, 0, ps); continue; }
    for (uint32_t j = 0; j < 1024; j++) w[j] = ((uint32_t)(p * 1024 + j + 1) * 0x9e3779b1u) ^ 0x5bd1e995u;
  }
  printf("ready %lx\\n", (unsigned long)r);
  fflush(stdout);
  char cmd[64];
  while (fgets(cmd, sizeof cmd, stdin)) {
    long p = 0, v = 0;
    if (sscanf(cmd, "w %ld %ld", &p, &v) == 2) r[p * ps + 100] = (uint8_t)v;
    else if (sscanf(cmd, "u %ld %ld", &p, &v) == 2) munmap(r + p * ps, v * ps);
    else break;
    printf("ok\\n");
    fflush(stdout);
  }
  return 0;
}
`;

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

  async command(cmd: string): Promise<void> {
    this.child.stdin!.write(`${cmd}\n`);
    expect(await this.nextLine()).toBe('ok');
  }
}

/** The part of `runs` inside [from, to). */
function clip(runs: PageRuns, from: number, to: number): PageRuns {
  const out = emptyRuns();
  runs.starts.forEach((s, i) => {
    const a = Math.max(s, from);
    const b = Math.min(s + (runs.counts[i] ?? 0), to);
    if (b > a) appendRun(out, a, b - a);
  });
  return out;
}

/** Reads `runs` and returns page -> hash, plus the pages that could not be read. */
function hashAll(reader: ProcessMemoryReader, pid: number, runs: PageRuns): { hashes: Map<number, string>; unreadable: number[] } {
  const hashes = new Map<number, string>();
  const unreadable: number[] = [];
  const out = Buffer.alloc(reader.chunkPages * PAGE_HASH_BYTES);
  for (const chunk of reader.chunks(pid, runs)) {
    hashPages(chunk.data, chunk.pages.length, PAGE_SIZE, out);
    chunk.pages.forEach((page, k) => hashes.set(page, out.toString('hex', k * PAGE_HASH_BYTES, (k + 1) * PAGE_HASH_BYTES)));
    unreadable.push(...chunk.unreadable);
  }
  return { hashes, unreadable };
}

describe('native addon', () => {
  it('hashes pages with XXH3-128, low half first, as libxxhash', () => {
    // libxxhash's canonical (big-endian) XXH3_128 of 4096 zero bytes is 3ee8dc4f9e7ee495 93d76fe148c689ba.
    expect(pageHash(Buffer.alloc(4096)).toString('hex')).toBe('ba89c648e16fd79395e47e9e4fdce83e');
    const two = Buffer.concat([expectedPage(7), expectedPage(8)]);
    const out = Buffer.alloc(32);
    hashPages(two, 2, PAGE_SIZE, out);
    expect(out.subarray(0, 16)).toEqual(pageHash(expectedPage(7)));
    expect(out.subarray(16)).toEqual(pageHash(expectedPage(8)));
  });

  it('finds zero pages', () => {
    const buf = Buffer.alloc(4 * PAGE_SIZE);
    buf[PAGE_SIZE + 4095] = 1; // last byte of page 1
    buf[3 * PAGE_SIZE] = 1; // first byte of page 3
    const flags = new Uint8Array(4);
    expect(zeroPages(buf, 4, PAGE_SIZE, flags)).toBe(2);
    expect([...flags]).toEqual([1, 0, 1, 0]);
    // Unaligned source (a pool slice) still works.
    expect(zeroPages(buf.subarray(1), 1, PAGE_SIZE - 1, flags)).toBe(1);
  });

  it('rejects bad arguments with TypeError and RangeError', () => {
    const out = Buffer.alloc(16);
    expect(() => hashPages(Buffer.alloc(4096), 2, 4096, out)).toThrow(RangeError);
    expect(() => hashPages(Buffer.alloc(8192), 2, 4096, out)).toThrow(RangeError);
    expect(() => hashPages(Buffer.alloc(4096), 0.5, 4096, out)).toThrow(RangeError);
    expect(() => hashPages(Buffer.alloc(4096), 1, 0, out)).toThrow(RangeError);
    expect(() => hashPages('page' as unknown as Buffer, 1, 4096, out)).toThrow(TypeError);
    expect(() => zeroPages(Buffer.alloc(4096), 1, 4096, new Uint16Array(1) as unknown as Uint8Array)).toThrow(TypeError);
  });
});

describe.skipIf(!canRun('kernel memory against a live task', hasCommand('cc')))('kernel memory against a live task', () => {
  let dir: string;
  let target: Target;
  let regionStart: number; // page number of region page 0
  let vmas: Vma[];
  let runs: PageRuns; // dumpable runs inside the region
  const reader = new ProcessMemoryReader();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-kmem-'));
    writeFileSync(join(dir, 'target.c'), TARGET_C);
    execFileSync('cc', ['-O2', '-o', join(dir, 'target'), join(dir, 'target.c')]);
    const child = spawn(join(dir, 'target'), [REGION_PAGES, ...HOLE, ...ZEROED].map(String), { stdio: ['pipe', 'pipe', 'inherit'] });
    target = new Target(child);
    const ready = await target.nextLine();
    const m = /^ready ([0-9a-f]+)$/.exec(ready);
    expect(m).not.toBeNull();
    regionStart = Number(BigInt(`0x${m![1]}`) / BigInt(PAGE_SIZE));
    vmas = dumpableVmas(readMaps(target.pid) ?? []);
    runs = clip(presentRuns(target.pid, vmas), regionStart, regionStart + REGION_PAGES);
  });

  afterAll(() => {
    target?.child.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('finds the filled region as present runs around the untouched hole', () => {
    expect(vmas.some((v) => v.startPage <= regionStart && v.endPage >= regionStart + REGION_PAGES)).toBe(true);
    expect(runs).toEqual({
      starts: [regionStart, regionStart + HOLE[1]],
      counts: [HOLE[0], REGION_PAGES - HOLE[1]],
    });
  });

  it('gives the same runs with PAGEMAP_SCAN and with pread', () => {
    const scan = new PagemapReader(target.pid, { method: 'scan' });
    const pread = new PagemapReader(target.pid, { method: 'pread' });
    try {
      let scanRuns: PageRuns | undefined;
      try {
        scanRuns = scan.presentRuns(vmas);
      } catch (e) {
        if (!(e instanceof SystemCallError) || !canRun('PAGEMAP_SCAN comparison', { ok: false, reason: `kernel has no PAGEMAP_SCAN (${e.message})` })) throw e;
      }
      const preadRuns = pread.presentRuns(vmas);
      expect(pread.lastMethod).toBe('pread');
      expect(runsPageCount(preadRuns)).toBeGreaterThan(REGION_PAGES - 200);
      if (scanRuns) expect(scanRuns).toEqual(preadRuns);
      console.info(`pagemap method detected on this kernel: ${detectedPagemapMethod() ?? 'not probed'}`);
    } finally {
      scan.close();
      pread.close();
    }
  });

  it('reads exactly the bytes of every page, and hashes them as hashing them in-process does', () => {
    let pagesSeen = 0;
    const out = Buffer.alloc(reader.chunkPages * PAGE_HASH_BYTES);
    let zero = 0;
    const flags = new Uint8Array(reader.chunkPages);
    for (const chunk of reader.chunks(target.pid, runs)) {
      expect(chunk.unreadable).toEqual([]);
      hashPages(chunk.data, chunk.pages.length, PAGE_SIZE, out);
      zero += zeroPages(chunk.data, chunk.pages.length, PAGE_SIZE, flags);
      chunk.pages.forEach((page, k) => {
        const expected = expectedPage(page - regionStart);
        expect(chunk.data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE).equals(expected)).toBe(true);
        expect(out.subarray(k * PAGE_HASH_BYTES, (k + 1) * PAGE_HASH_BYTES).equals(pageHash(expected))).toBe(true);
      });
      pagesSeen += chunk.pages.length;
    }
    expect(pagesSeen).toBe(REGION_PAGES - (HOLE[1] - HOLE[0]));
    expect(zero).toBe(ZEROED[1] - ZEROED[0]);
  });

  it('reads and hashes the region at a measured rate', () => {
    const out = Buffer.alloc(reader.chunkPages * PAGE_HASH_BYTES);
    const rates: number[] = [];
    for (let rep = 0; rep < 5; rep++) {
      let bytes = 0;
      const t0 = performance.now();
      for (const chunk of reader.chunks(target.pid, runs)) {
        hashPages(chunk.data, chunk.pages.length, PAGE_SIZE, out);
        bytes += chunk.data.length;
      }
      rates.push(bytes / ((performance.now() - t0) / 1000) / 1e9);
    }
    rates.sort((a, b) => a - b);
    console.info(`read+hash of ${(runsPageCount(runs) * PAGE_SIZE) / 2 ** 20} MiB: median ${rates[2]?.toFixed(2)} GB/s (runs ${rates.map((r) => r.toFixed(2)).join(' ')})`);
    expect(rates[2]).toBeGreaterThan(0.1);
  });

  it('sees a page written between two reads change exactly its hash', async () => {
    const before = hashAll(reader, target.pid, runs);
    await target.command('w 5000 171');
    const after = hashAll(reader, target.pid, runs);
    const changed = [...after.hashes].filter(([page, h]) => before.hashes.get(page) !== h).map(([page]) => page - regionStart);
    expect(changed).toEqual([5000]);
  });

  it('reports pages unmapped between the scan and the read, and still reads the rest', async () => {
    const before = hashAll(reader, target.pid, runs);
    // One pair of pages starts a chunk (its read fails at once with EFAULT; after the hole, chunks start 100
    // pages later), three pages lie inside one (the read stops short).
    const atChunkStart = reader.chunkPages * 10 + (HOLE[1] - HOLE[0]);
    const inside = reader.chunkPages * 20 + 17;
    await target.command(`u ${atChunkStart} 2`);
    await target.command(`u ${inside} 3`);
    const after = hashAll(reader, target.pid, runs);
    const gone = [atChunkStart, atChunkStart + 1, inside, inside + 1, inside + 2].map((p) => p + regionStart);
    expect(after.unreadable).toEqual(gone);
    expect(after.hashes.size).toBe(before.hashes.size - gone.length);
    for (const [page, h] of after.hashes) expect(before.hashes.get(page)).toBe(h);
    // A fresh scan no longer lists them.
    const rescanned = clip(presentRuns(target.pid, dumpableVmas(readMaps(target.pid) ?? [])), regionStart, regionStart + REGION_PAGES);
    expect(runsPageCount(rescanned)).toBe(runsPageCount(runs) - gone.length);
  });

  it('throws SystemCallError ESRCH for a task that does not exist', () => {
    const noSuchPid = 2 ** 22 + 1; // above pid_max's ceiling
    let caught: unknown;
    try {
      reader.chunks(noSuchPid, runs).next();
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(SystemCallError);
    expect((caught as SystemCallError).errnoName).toBe('ESRCH');
    expect(readMaps(noSuchPid)).toBeUndefined();
    expect(readStatus(noSuchPid)).toBeUndefined();
  });
});

describe.skipIf(!canRun('process tree of a pid namespace', isRoot(), hasCommand('unshare'), hasCommand('setsid')))('process tree of a pid namespace', () => {
  let unshare: ChildProcess | undefined;
  let init: number | undefined;

  afterAll(() => {
    // Killing the namespace's init kills every task in the namespace.
    if (init !== undefined) {
      try {
        process.kill(init, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    unshare?.kill('SIGKILL');
  });

  it('finds the init and its two children with pids 1, 2, 3 in the namespace', async () => {
    unshare = spawn('unshare', ['--pid', '--fork', 'setsid', 'sh', '-c', 'sleep 600 & sleep 600 & wait'], { stdio: 'ignore' });
    const unsharePid = unshare.pid!;
    // Wait until the namespace's init has forked both sleeps.
    let tree = undefined as ReturnType<typeof readProcessTree>;
    for (let i = 0; i < 200; i++) {
      const children = readProcessTree(unsharePid)?.processes[0]?.children ?? [];
      init = children[0];
      tree = init === undefined ? undefined : readProcessTree(init);
      if (tree && tree.processes.length === 3 && tree.processes.every((p) => p.name === 'sleep' || p.hostPid === init)) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(init).toBeDefined();
    expect(tree?.nsLevel).toBe(1);
    expect(tree?.processes.map((p) => p.nsPid)).toEqual([1, 2, 3]);
    expect(tree?.processes[0]?.children).toEqual(tree?.processes.slice(1).map((p) => p.hostPid));
    for (const p of tree?.processes ?? []) {
      expect(p.hostPid).not.toBe(p.nsPid);
      expect(p.threads).toEqual([{ hostTid: p.hostPid, nsTid: p.nsPid }]);
      // setsid made the init a session leader: the whole tree is one session, led by ns pid 1.
      expect(p.sid).toBe(init);
      expect(p.nsSid).toBe(1);
    }
    expect(isPidNamespaceRoot(init!)).toBe(true);
    expect(isPidNamespaceRoot(unsharePid)).toBe(false);
    // The tree from outside the namespace (from unshare) names tasks by host pid: level 0.
    const outer = readProcessTree(unsharePid);
    expect(outer?.nsLevel).toBe(0);
    expect(outer?.processes.map((p) => p.hostPid)).toEqual([unsharePid, ...(tree?.processes.map((p) => p.hostPid) ?? [])]);
  });

  it('lists the threads of a multi-threaded process', () => {
    // This test runner itself has several threads (libuv pool, V8 workers).
    const self = readProcessTree(process.pid);
    const me = self?.processes[0];
    expect(me?.hostPid).toBe(process.pid);
    expect(me?.threads.length).toBe(readStatus(process.pid)?.threads);
    expect(me?.threads[0]).toEqual({ hostTid: process.pid, nsTid: process.pid });
  });
});
