/**
 * The round logic of the three trackers against the fake kernel (test/fakes/fake-kernel.ts), without root: what a
 * round reads and sends as processes write, map, grow, exit and fail. The same trackers run against the real
 * kernel in test/integration/tracker-contract.test.ts; the ptrace injection is tested there and in
 * test/integration/uffd-wp-tracker.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { SystemCallError } from '../../shared/errors/ferry-error.js';
import type { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { decodePageBatch, readPageNumber } from '../../shared/transport/page-batch.js';
import type { BatchSink } from '../../source-agent/pages/page-pipeline.js';
import { HashTracker } from '../../source-agent/trackers/hash-tracker.js';
import { SoftDirtyTracker } from '../../source-agent/trackers/soft-dirty/soft-dirty-tracker.js';
import type { BeforeRead, DirtyTracker, TrackedTask } from '../../source-agent/trackers/tracker.js';
import { scanSpans, UffdWpTracker } from '../../source-agent/trackers/uffd-wp/uffd-wp-tracker.js';
import { FakeKernel, type FakeProcess } from '../fakes/fake-kernel.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

const PAGE = 4096;
/** Page numbers of the areas the scenarios map. */
const A = 0x1000;
const B = 0x2000;
const C = 0x3000;
const signal = new AbortController().signal;

/** Image keys differ from host pids, so that a tracker that mixes them up sends under the wrong task. */
const taskOf = (p: FakeProcess): TrackedTask => ({ hostPid: p.pid, key: p.pid + 1 });
const range = (first: number, count: number): number[] => Array.from({ length: count }, (_, i) => first + i);

/** Records each page sent, per task key, with its bytes (undefined for a zero page). */
function recorder(pageSize: number): { sink: BatchSink; sent: Map<number, Map<number, Buffer | undefined>> } {
  const sent = new Map<number, Map<number, Buffer | undefined>>();
  const sink: BatchSink = (task, batch) => {
    const d = decodePageBatch(batch, pageSize);
    let pages = sent.get(task);
    if (!pages) sent.set(task, (pages = new Map()));
    for (let i = 0; i < d.count; i++) {
      const off = d.dataOffsets[i]!;
      pages.set(readPageNumber(d.pageNumbers, i), off < 0 ? undefined : Buffer.from(d.data.subarray(off, off + pageSize)));
    }
    return Promise.resolve();
  };
  return { sink, sent };
}

type Make = (kernel: FakeKernel) => DirtyTracker;
const trackers: { name: string; exact: boolean; make: Make }[] = [
  { name: 'hash', exact: false, make: (k) => new HashTracker(k.pageSize, k) },
  { name: 'soft-dirty', exact: true, make: (k) => new SoftDirtyTracker(k.pageSize, {}, k) },
  { name: 'uffd-wp', exact: true, make: (k) => new UffdWpTracker(k.pageSize, k) },
];

function world(make: Make, pageSize = PAGE) {
  const kernel = new FakeKernel(pageSize);
  const tracker = make(kernel);
  const held = new Map<number, PageHashIndex>();
  const round = async (...procs: FakeProcess[]) => roundWith(undefined, ...procs);
  const roundWith = async (beforeRead: BeforeRead | undefined, ...procs: FakeProcess[]) => {
    const rec = recorder(pageSize);
    const stats = await tracker.round(procs.map(taskOf), held, rec.sink, signal, beforeRead);
    const sentOf = (p: FakeProcess): number[] => [...(rec.sent.get(taskOf(p).key)?.keys() ?? [])].sort((a, b) => a - b);
    return { ...rec, stats, sentOf };
  };
  return { kernel, tracker, held, round, roundWith };
}

describe.each(trackers)('$name tracker rounds (fake kernel)', ({ exact, make }) => {
  it('round 0 sends every present page, with the bytes the process holds, zero pages as a flag', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 64).write(A, 40).write(A + 10, 5, true);
    const r = await w.round(p);
    expect(r.sentOf(p)).toEqual(range(A, 40));
    for (const [page, bytes] of r.sent.get(taskOf(p).key)!) {
      if (page >= A + 10 && page < A + 15) expect(bytes).toBeUndefined();
      else expect(bytes?.equals(p.pages.get(page)!)).toBe(true);
    }
    expect(r.stats).toMatchObject({ presentPages: 40, dirtyPages: 40, zeroPages: 5, bytesRead: 40 * PAGE, bytesSent: 35 * PAGE, vanishedPages: 0 });
    expect(w.held.get(taskOf(p).key)?.size).toBe(40);
    w.tracker.close();
  });

  it('a later round sends only the pages whose bytes changed', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 64).write(A, 40);
    await w.round(p);
    p.write(A, 5).rewrite(A + 5);
    p.reads.length = 0;
    const r1 = await w.round(p);
    expect(r1.sentOf(p)).toEqual(range(A, 5));
    expect(r1.stats).toMatchObject({ presentPages: 40, dirtyPages: 5, bytesSent: 5 * PAGE });
    // The exact trackers read the written pages only (the rewritten one too: its hash tells it is unchanged).
    expect(p.reads).toEqual(exact ? range(A, 6) : range(A, 40));
    const r2 = await w.round(p);
    expect(r2.sentOf(p)).toEqual([]);
    expect(r2.stats.bytesRead).toBe(exact ? 0 : 40 * PAGE);
    w.tracker.close();
  });

  it('an exact tracker asks before it reads, with the whole dirty set of every task; false reads and sends nothing', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 64).write(A, 40);
    const q = w.kernel.spawn(101).map(B, 16).write(B, 16);
    const asked: [number, number][] = [];
    const ask = (candidates: number, present: number): boolean => (asked.push([candidates, present]), asked.length === 1);
    await w.roundWith(ask, p, q); // round 0 too: every present page is its candidate
    p.write(A, 5);
    q.write(B, 3);
    p.reads.length = 0;
    q.reads.length = 0;
    const r1 = await w.roundWith(ask, p, q);
    if (!exact) {
      // The hash tracker cannot tell what was written without reading it all: it never asks, it sends.
      expect(asked).toEqual([]);
      expect(r1.sentOf(p)).toEqual(range(A, 5));
      return;
    }
    expect(asked).toEqual([
      [56, 56],
      [8, 56],
    ]);
    expect(r1.stats).toMatchObject({ stoppedBeforeRead: true, candidatePages: 8, dirtyPages: 8, bytesSent: 0, bytesRead: 0 });
    expect(r1.sentOf(p)).toEqual([]);
    expect(r1.sentOf(q)).toEqual([]);
    expect(p.reads).toEqual([]);
    expect(q.reads).toEqual([]);
    w.tracker.close();
  });

  it('a new area and the new pages of a grown area are read whole', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 64).write(A, 64);
    await w.round(p);
    p.map(B, 16).write(B, 16).grow(A, 8).write(A + 64, 8);
    const r = await w.round(p);
    expect(r.sentOf(p)).toEqual([...range(A + 64, 8), ...range(B, 16)]);
    expect(r.stats.presentPages).toBe(64 + 8 + 16);
    w.tracker.close();
  });

  it('an area without PROT_READ is read from round 0 on, and not again when it becomes readable unwritten', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8).map(C, 8).write(C, 8).protect(C, '---p');
    const r0 = await w.round(p);
    expect(r0.sentOf(p)).toEqual([...range(A, 8), ...range(C, 8)]);
    p.protect(C, 'rw-p');
    const r1 = await w.round(p);
    expect(r1.sentOf(p)).toEqual([]);
    w.tracker.close();
  });

  it('skips a task that exits mid-round (ESRCH) and goes on with the others', async () => {
    const w = world(make);
    const gone = w.kernel.spawn(200).map(A, 64).write(A, 40);
    const stays = w.kernel.spawn(100).map(A, 64).write(A, 20);
    gone.failRead('ESRCH', 1); // after its first chunk
    const r0 = await w.round(gone, stays);
    expect(gone.gone).toBe(true);
    expect(r0.sentOf(stays)).toEqual(range(A, 20));
    if (w.tracker instanceof SoftDirtyTracker || w.tracker instanceof UffdWpTracker) expect(w.tracker.trackedPids()).toEqual([stays.pid]);
    expect(w.kernel.openUffds(gone.pid)).toEqual([]);
    // The next round still lists it (the tree was read before it exited): it is passed over.
    stays.write(A + 1);
    const r1 = await w.round(gone, stays);
    expect(r1.sentOf(stays)).toEqual([A + 1]);
    expect(r1.sent.has(taskOf(gone).key)).toBe(false);
    w.tracker.close();
  });

  it.each(['EPERM', 'EIO'] as const)('turns a read that fails with %s into MEMORY_READ_FAILED', async (errno) => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8);
    p.failRead(errno);
    const e = await expectFerryRejection(w.round(p), 'MEMORY_READ_FAILED');
    expect(e).toMatchObject({ phase: 'precopy', side: 'source', sourceState: 'running' });
    expect(e.cause).toBeInstanceOf(SystemCallError);
    expect((e.cause as SystemCallError).errnoName).toBe(errno);
    w.tracker.close();
  });

  it('honours the page size it is given (16 KiB pages)', async () => {
    const size = 16384;
    const w = world(make, size);
    const p = w.kernel.spawn(100).map(A, 32).write(A, 20).write(A + 3, 1, true);
    const r0 = await w.round(p);
    expect(r0.sentOf(p)).toEqual(range(A, 20));
    expect(r0.stats).toMatchObject({ bytesRead: 20 * size, bytesSent: 19 * size, zeroPages: 1 });
    expect(r0.sent.get(taskOf(p).key)!.get(A + 7)?.equals(p.pages.get(A + 7)!)).toBe(true);
    p.write(A + 7);
    const r1 = await w.round(p);
    expect(r1.sentOf(p)).toEqual([A + 7]);
    w.tracker.close();
  });

  it('close() lets go of every process', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8);
    await w.round(p);
    w.tracker.close();
    expect(w.kernel.openUffds(p.pid)).toEqual([]);
  });
});

describe.each(trackers.filter((t) => t.exact))('$name tracker after the freeze (fake kernel)', ({ make }) => {
  it('names the pages written since the last round, and leaves out a process never seen (read whole)', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 16).write(A, 16);
    const unseen = w.kernel.spawn(300).map(A, 4).write(A, 4);
    await w.round(p);
    p.write(A + 3).write(A + 7);
    const changed = w.tracker.changedSinceLastRound!([taskOf(p), taskOf(unseen)]);
    expect([...changed.keys()]).toEqual([taskOf(p).key]);
    expect(changed.get(taskOf(p).key)).toEqual({ starts: [A + 3, A + 7], counts: [1, 1] });
    w.tracker.close();
  });
});

describe('soft-dirty round logic (fake kernel)', () => {
  const make: Make = (k) => new SoftDirtyTracker(k.pageSize, {}, k);

  it('reads and clears the bits while the processes are held still, and lets them go', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8);
    const q = w.kernel.spawn(101).map(A, 8).write(A, 2);
    await w.round(p, q);
    p.write(A);
    await w.round(p, q);
    expect(p.clearedWhilePaused).toEqual([true, true]);
    expect(q.clearedWhilePaused).toEqual([true, true]);
    expect([p.state, q.state]).toEqual(['S', 'S']);
  });

  it('reads a reused pid whole', async () => {
    const w = world(make);
    const first = w.kernel.spawn(100).map(A, 8).write(A, 8);
    await w.round(first);
    const reused = w.kernel.spawn(100).map(A, 8).write(A, 6);
    const r = await w.round(reused);
    expect(r.stats.bytesRead).toBe(6 * PAGE);
    expect((w.tracker as SoftDirtyTracker).lastRound).toMatchObject({ newProcesses: 1, candidatePages: 6 });
  });
});

describe('uffd-wp round logic (fake kernel)', () => {
  const make: Make = (k) => new UffdWpTracker(k.pageSize, k);

  it('reads an area the kernel refuses to register whole each round, and sends only what changed', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8).map(B, 4, { refuseUffd: 'EPERM' }).write(B, 4);
    const r0 = await w.round(p);
    expect(r0.sentOf(p)).toEqual([...range(A, 8), ...range(B, 4)]);
    p.reads.length = 0;
    const r1 = await w.round(p);
    expect(r1.sentOf(p)).toEqual([]);
    expect(p.reads).toEqual(range(B, 4));
    expect((w.tracker as UffdWpTracker).lastRound?.wholeVmas).toBe(1);
    p.write(B + 2);
    expect((await w.round(p)).sentOf(p)).toEqual([B + 2]);
    w.tracker.close();
  });

  it('starts over with a new uffd after an exec, and sends every present page', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8);
    await w.round(p);
    p.exec().map(C, 8).write(C, 5);
    const r = await w.round(p);
    expect(r.sentOf(p)).toEqual(range(C, 5));
    expect(w.kernel.injections).toBe(2);
    expect(w.kernel.openUffds(p.pid)).toHaveLength(1);
    w.tracker.close();
    expect(w.kernel.openUffds(p.pid)).toEqual([]);
  });

  it('refuses a task stopped by job control (TASK_STOPPED), and keeps no uffd of it', async () => {
    const w = world(make);
    const p = w.kernel.spawn(100).map(A, 8).write(A, 8);
    p.state = 'T';
    await expectFerryRejection(w.round(p), 'TASK_STOPPED');
    expect(w.kernel.openUffds(p.pid)).toEqual([]);
    w.tracker.close();
  });
});

describe('uffd-wp scan spans', () => {
  it('cover the runs that hold pages, bridging holes of up to 16 pages and no more (each scanned hole gets markers)', () => {
    expect(scanSpans({ starts: [], counts: [] })).toEqual([]);
    expect(scanSpans({ starts: [100, 120, 200], counts: [4, 2, 1] })).toEqual([
      [100, 122],
      [200, 201],
    ]);
    // A thread's 8 MiB stack with its top pages in use: the untouched rest is not scanned.
    expect(scanSpans({ starts: [0x7f0000 + 2040], counts: [8] })).toEqual([[0x7f0000 + 2040, 0x7f0000 + 2048]]);
  });
});
