/**
 * A lazy restore's fill as the source runs it, without the network: the manifests file kept beside the journal
 * (round trip, bounds, removed with the journal's done) and the sweep of confirm-pages.ts (split at the
 * pagemap's runs and in chunks of 256 pages, only the unconfirmed pages, one answer per page); post-copy's remote
 * pages (always bytes, one request per chunk with its with_data bitmap), FillReady, the bytes counted over every
 * call, and ORIGINAL_LOST (issue 12).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logging/logger.js';
import { hashPages } from '../../shared/native/addon.js';
import type * as m from '../../shared/transport/messages.js';
import type { FillCallHandlers } from '../../source-agent/fill-call.js';
import { decodeFillManifests, encodeFillManifests, fillManifestsPath, loadFillManifests, type FillManifest } from '../../source-agent/migration/fill-manifests.js';
import { SourceJournal } from '../../source-agent/migration/source-journal.js';
import { setBits } from '../../shared/pages/page-bitmap.js';
import { confirmPages, FILL_WINDOW_BYTES, fillUntilDone, SWEEP_CHUNK_PAGES, whileOriginal } from '../../source-agent/pages/confirm-pages.js';
import { originalLostError } from '../../source-agent/migration/commit-outcome.js';
import { FerryError, SystemCallError } from '../../shared/errors/ferry-error.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const PAGE = 4096;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-fill-manifests-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const read = (_pid: number, first: number, count: number) => {
  const data = Buffer.alloc(count * PAGE);
  const pages = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    data.writeDoubleLE(first + i, i * PAGE);
    pages[i] = first + i;
  }
  return [{ data, pages, unreadable: [] }];
};

/** Two runs (2000 pages at 0x10000, 1500 at 0x90000); pages 100..3399 unconfirmed. */
function manifest(): FillManifest {
  const runs = { starts: [0x10000, 0x90000], counts: [2000, 1500] };
  const hashes = Buffer.alloc(3500 * 16);
  hashPages(read(0, 0x10000, 2000)[0]!.data, 2000, PAGE, hashes.subarray(0, 2000 * 16));
  hashPages(read(0, 0x90000, 1500)[0]!.data, 1500, PAGE, hashes.subarray(2000 * 16));
  const unconfirmed = Buffer.alloc(Math.ceil(3500 / 8));
  setBits(unconfirmed, 100, 3300);
  return { task: 3, hostPid: 77, runs, hashes, unconfirmed, remote: Buffer.alloc(0) };
}

describe('the fill manifests file', () => {
  it('round-trips, and refuses a damaged file with JOURNAL_UNREADABLE', () => {
    const man = manifest();
    const b = encodeFillManifests([man, { ...man, task: 4, unconfirmed: Buffer.alloc(0) }], PAGE);
    const back = decodeFillManifests(b, 'x');
    expect(back.pageSize).toBe(PAGE);
    expect(back.manifests[0]).toEqual(man);
    expect(back.manifests[1]!.unconfirmed.equals(Buffer.alloc(Math.ceil(3500 / 8)))).toBe(true);
    expectFerryError(() => decodeFillManifests(b.subarray(0, b.length - 1), 'x'), 'JOURNAL_UNREADABLE');
    const lying = Buffer.from(b);
    lying.writeBigUInt64LE(1n << 40n, 24 + 16); // n_pages far beyond the file
    expectFerryError(() => decodeFillManifests(lying, 'x'), 'JOURNAL_UNREADABLE');
    expectFerryError(() => decodeFillManifests(Buffer.from('not ours at all, not ours at all'), 'x'), 'JOURNAL_UNREADABLE');
  });

  it('is written beside the journal and removed when the journal records done', async () => {
    const id = randomUUID();
    const j = await SourceJournal.begin(dir, id, { pid: 1, to: 'h:1', epoch: '1', tree: [] });
    await j.saveFillManifests([manifest()], PAGE);
    expect((await loadFillManifests(dir, id)).manifests[0]!.task).toBe(3);
    await j.record('committed', { fill: 'pending' });
    expect(existsSync(fillManifestsPath(dir, id))).toBe(true);
    await j.record('done', { outcome: 'migrated' });
    await j.close();
    expect(existsSync(fillManifestsPath(dir, id))).toBe(false);
    await writeFile(fillManifestsPath(dir, id), 'x');
    await expect(loadFillManifests(dir, id)).rejects.toMatchObject({ key: 'JOURNAL_UNREADABLE' });
  });
});

/** A dest's Fill call that records the requests and says done once `pages` pages were answered. */
function fakeFill(pages: number) {
  const requests: m.FillRequest[] = [];
  const open = (h: FillCallHandlers) => {
    let answered = 0;
    return {
      write: (req: m.FillRequest) => {
        requests.push(req);
        answered += req.count;
        if (answered === pages) {
          h.event({ done: { filledPages: '3500', faults: '0', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1', faultsWaited: '0' } });
          setImmediate(() => h.end(undefined));
        }
        return Promise.resolve();
      },
      end: () => undefined,
      cancel: () => undefined,
    };
  };
  return { requests, open };
}

/** The bits set in an LSB-first bitmap, offset by `base`. */
const bitsOf = (bits: Buffer | undefined, base = 0): number[] => {
  const out: number[] = [];
  for (let i = 0; i < (bits?.length ?? 0) * 8; i++) if ((bits![i >> 3]! & (1 << (i & 7))) !== 0) out.push(base + i);
  return out;
};

describe('the sweep', () => {
  it('answers exactly the unconfirmed pages, split at the runs and in chunks of 256 pages, and confirms what matches', async () => {
    const { requests, open } = fakeFill(3300);
    const r = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [manifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    const chunks = (from: number, to: number): string[] => Array.from({ length: Math.ceil((to - from) / 256) }, (_, k) => `${from + 256 * k}+${Math.min(256, to - from - 256 * k)}`);
    expect(requests.map((q) => `${q.firstIndex}+${q.count}`)).toEqual(['0+0', ...chunks(100, 2000), ...chunks(2000, 3400)]);
    expect(requests.every((q) => q.data.length === 0 && q.withData === undefined)).toBe(true);
    expect(r).toMatchObject({ confirmedPages: 3300, replacedPages: 0, dataBytes: 0 });
  });

  it('a page of the frozen original that cannot be read: MEMORY_READ_FAILED naming its address in hex', async () => {
    const { open } = fakeFill(3300);
    const holed = (pid: number, first: number, count: number) => {
      const [c] = read(pid, first, count);
      return first <= 0x10100 && 0x10100 < first + count ? [{ ...c!, unreadable: [0x10100] }] : [c!];
    };
    const e = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [manifest()], pageSize: PAGE, readPages: holed, log: silentLogger, signal: new AbortController().signal }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toMatchObject({ key: 'MEMORY_READ_FAILED', phase: 'fill', detail: 'task 3: pages at 0x10100000 of the frozen original cannot be read' });
  });

  it('sends one request per chunk, the bytes of exactly the pages that differ marked in with_data (distinct pages: no index may slip)', async () => {
    const man = manifest();
    // Stale hashes (the tracker missed these writes) at scattered indexes, two of them adjacent.
    const stale = [150, 151, 300, 1000];
    for (const k of stale) man.hashes.fill(0xee, k * 16, (k + 1) * 16);
    const { requests, open } = fakeFill(3300);
    const r = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [man], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    const mixed = requests.filter((q) => q.data.length > 0);
    expect(mixed.map((q) => `${q.firstIndex}+${q.count}`)).toEqual(['100+256', '868+256']);
    expect(mixed.flatMap((q) => bitsOf(q.withData, Number(q.firstIndex)))).toEqual(stale);
    // Each carries the original's bytes of its own pages, in page order (the reader writes the page number into each).
    for (const q of mixed) {
      const pages = bitsOf(q.withData, Number(q.firstIndex));
      expect(q.data.length).toBe(pages.length * PAGE);
      pages.forEach((p, k) => expect(q.data.readDoubleLE(k * PAGE)).toBe(0x10000 + p));
    }
    expect(r).toMatchObject({ confirmedPages: 3300 - 4, replacedPages: 4, dataBytes: 4 * PAGE });
  });
});

/** Post-copy: 600 pages at 0x10000, 100..599 unconfirmed, of which every third is remote (its hash zero). */
function postCopyManifest(): FillManifest {
  const runs = { starts: [0x10000], counts: [600] };
  const hashes = Buffer.alloc(600 * 16);
  hashPages(read(0, 0x10000, 600)[0]!.data, 600, PAGE, hashes);
  const unconfirmed = Buffer.alloc(75);
  const remote = Buffer.alloc(75);
  setBits(unconfirmed, 100, 500);
  for (let i = 100; i < 600; i += 3) {
    setBits(remote, i, 1);
    hashes.fill(0, i * 16, (i + 1) * 16);
  }
  return { task: 3, hostPid: 77, runs, hashes, unconfirmed, remote };
}
const remoteIndexes = Array.from({ length: 167 }, (_, k) => 100 + 3 * k);

describe('post-copy in the fill (issue 12)', () => {
  it('the manifests file keeps the remote bits (version 2) and still reads a version 1 file (no remote pages)', () => {
    const man = postCopyManifest();
    const b = encodeFillManifests([man], PAGE);
    expect(b.readUInt32LE(8)).toBe(2);
    expect(decodeFillManifests(b, 'x').manifests[0]).toEqual(man);
    // Version 1: the same layout without the remote bitmap.
    const v1man = manifest();
    const v2 = encodeFillManifests([v1man], PAGE);
    const v1 = Buffer.concat([v2.subarray(0, v2.length - Math.ceil(3500 / 8))]);
    v1.writeUInt32LE(1, 8);
    expect(decodeFillManifests(v1, 'x').manifests[0]).toEqual(v1man);
    const v3 = Buffer.from(v2);
    v3.writeUInt32LE(3, 8);
    expectFerryError(() => decodeFillManifests(v3, 'x'), 'JOURNAL_UNREADABLE');
  });

  it('a remote page is always answered with bytes (never confirmed), mixed in one request with the confirmed ones', async () => {
    const { requests, open } = fakeFill(500);
    const r = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [postCopyManifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    expect(requests.map((q) => `${q.firstIndex}+${q.count}`)).toEqual(['0+0', '100+256', '356+244']);
    expect(requests.slice(1).flatMap((q) => bitsOf(q.withData, Number(q.firstIndex)))).toEqual(remoteIndexes);
    for (const q of requests.slice(1)) {
      bitsOf(q.withData, Number(q.firstIndex)).forEach((p, k) => expect(q.data.readDoubleLE(k * PAGE)).toBe(0x10000 + p));
    }
    // Remote pages are neither confirmed nor "replaced" (nothing of theirs was at the dest to differ).
    expect(r).toMatchObject({ remotePages: 167, confirmedPages: 333, replacedPages: 0, dataBytes: 167 * PAGE });
  });

  it('the sweep keeps at most FILL_WINDOW_BYTES unacked once the dest acks; a want still goes at once', async () => {
    const N = 2048; // 8 MiB, all remote: every page is bytes
    const man: FillManifest = { task: 3, hostPid: 77, runs: { starts: [0x10000], counts: [N] }, hashes: Buffer.alloc(N * 16), unconfirmed: Buffer.alloc(N / 8, 0xff), remote: Buffer.alloc(N / 8, 0xff) };
    const requests: m.FillRequest[] = [];
    let handlers!: FillCallHandlers;
    let sent = 0;
    const open = (h: FillCallHandlers) => {
      handlers = h;
      return {
        write: (req: m.FillRequest) => {
          requests.push(req);
          sent += req.data.length;
          if (requests.length === 2) h.event({ ack: { dataBytes: String(req.data.length) } }); // the dest acks: the window applies
          if (requests.reduce((n, q) => n + q.count, 0) >= N) {
            h.event({ done: { filledPages: String(N), faults: '0', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1', faultsWaited: '0' } });
            setImmediate(() => h.end(undefined));
          }
          return Promise.resolve();
        },
        end: () => undefined,
        cancel: () => undefined,
      };
    };
    const running = confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [man], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    await new Promise((r) => setTimeout(r, 50));
    // One chunk acked (1 MiB); then 2 MiB more, and one chunk over: the sweep waits with 3 MiB unacked.
    const stalledAt = requests.length;
    expect(sent - 1024 * 1024).toBeGreaterThan(FILL_WINDOW_BYTES);
    expect(sent - 1024 * 1024).toBeLessThanOrEqual(FILL_WINDOW_BYTES + SWEEP_CHUNK_PAGES * PAGE);
    // A want is answered although the window is full.
    handlers.event({ wanted: { task: 3, firstIndex: String(N - 1), count: 1, bytes: false } });
    await new Promise((r) => setTimeout(r, 20));
    expect(requests.length).toBe(stalledAt + 1);
    expect(requests[stalledAt]).toMatchObject({ firstIndex: String(N - 1), count: 1 });
    // Acks let it go on to the end.
    handlers.event({ ack: { dataBytes: String(N * PAGE) } });
    const r = await running;
    expect(r).toMatchObject({ remotePages: N, dataBytes: N * PAGE });
  });

  it('a want of remote pages gets their bytes first, ahead of the sweep, even when not asked for bytes', async () => {
    const requests: m.FillRequest[] = [];
    const open = (h: FillCallHandlers) => ({
      write: (req: m.FillRequest) => {
        requests.push(req);
        if (requests.length === 1) h.event({ wanted: { task: 3, firstIndex: '400', count: 4, bytes: false } });
        if (requests.reduce((n, q) => n + q.count, 0) >= 500) {
          h.event({ done: { filledPages: '600', faults: '1', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1', faultsWaited: '1' } });
          setImmediate(() => h.end(undefined));
        }
        return Promise.resolve();
      },
      end: () => undefined,
      cancel: () => undefined,
    });
    const r = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [postCopyManifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    // 400..403: 400 and 403 are remote (bytes), 401 and 402 confirmed.
    expect(requests[1]).toMatchObject({ firstIndex: '400', count: 4 });
    expect(bitsOf(requests[1]!.withData, 400)).toEqual([400, 403]);
    expect(requests[1]!.data.length).toBe(2 * PAGE);
    // The sweep then skips them: its chunks cover 100..399 and 404..599.
    expect(requests.slice(2).map((q) => `${q.firstIndex}+${q.count}`)).toEqual(['100+256', '356+44', '404+196']);
    expect(r).toMatchObject({ wantedPages: 4, remotePages: 167 });
  });

  it('FillReady marks pages the dest has from an earlier call: the sweep skips them; a bitmap of the wrong size is ignored', async () => {
    const ready = Buffer.alloc(75);
    setBits(ready, 100, 300); // 100..399 in the pager already
    for (const [pages, expected] of [
      [ready, ['0+0', '400+200']],
      [Buffer.alloc(74, 0xff), ['0+0', '100+256', '356+244']],
    ] as const) {
      const requests: m.FillRequest[] = [];
      const open = (h: FillCallHandlers) => ({
        write: (req: m.FillRequest) => {
          requests.push(req);
          if (requests.length === 1) h.event({ ready: { task: 3, pages } });
          if (req.count > 0 && Number(req.firstIndex) + req.count === 600) {
            h.event({ done: { filledPages: '600', faults: '0', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1', faultsWaited: '0' } });
            setImmediate(() => h.end(undefined));
          }
          return Promise.resolve();
        },
        end: () => undefined,
        cancel: () => undefined,
      });
      await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [postCopyManifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
      expect(requests.map((q) => `${q.firstIndex}+${q.count}`)).toEqual(expected);
    }
  });

  it('counts the data bytes of every call, a broken one included (the summary\'s post-copy bytes); a reopened call waits for FillReady and skips what it names', async () => {
    let calls = 0;
    const dest = {
      reachable: () => Promise.resolve(true),
      fill: (h: FillCallHandlers) => {
        const call = ++calls;
        let n = 0;
        return {
          write: (req: m.FillRequest) => {
            n++;
            // The first call breaks after its first answer (256 pages, 86 of them remote); the second runs to the end,
            // told at its open that the pager has those 256 (FillReady): they are not sent again.
            if (call === 1 && n === 2) setImmediate(() => h.end(new FerryError('DEST_UNREACHABLE', { detail: 'cut' })));
            if (call === 2 && n === 1) {
              const ready = Buffer.alloc(75);
              setBits(ready, 100, 256);
              setImmediate(() => h.event({ ready: { task: 3, pages: ready } }));
            }
            if (call === 2 && req.count > 0 && Number(req.firstIndex) + req.count === 600) {
              h.event({ done: { filledPages: '600', faults: '0', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1', faultsWaited: '0' } });
              setImmediate(() => h.end(undefined));
            }
            return Promise.resolve();
          },
          end: () => undefined,
          cancel: () => undefined,
        };
      },
    };
    const outcome = await fillUntilDone(dest, {
      migrationId: 'id', epoch: '1', manifests: [postCopyManifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal,
      patienceMs: 5_000, unanswered: () => new FerryError('MIGRATION_UNRESOLVED'),
    });
    expect(outcome.kind).toBe('done');
    if (outcome.kind !== 'done') return;
    expect(outcome.result.calls).toBe(2);
    expect(outcome.result.dataBytes).toBe(167 * PAGE);
  });

  it('the original gone (ESRCH) while pages are owed: ORIGINAL_LOST, the copy on the dest named, no call opened again', async () => {
    let calls = 0;
    const gone = (): never => {
      throw new SystemCallError('process_vm_readv', 3, 'ESRCH');
    };
    const dest = {
      reachable: () => Promise.resolve(true),
      fill: () => {
        calls++;
        return { write: () => Promise.resolve(), end: () => undefined, cancel: () => undefined };
      },
    };
    const outcome = await fillUntilDone(dest, {
      migrationId: 'id', epoch: '1', manifests: [postCopyManifest()], pageSize: PAGE, readPages: gone, log: silentLogger, signal: new AbortController().signal,
      patienceMs: 5_000, unanswered: () => new FerryError('MIGRATION_UNRESOLVED'),
      lost: (cause) => originalLostError({ migrationId: 'mid', epoch: '1', rootPid: 4242, to: 'dest:7070', restoredPid: 777 }, cause),
    });
    expect(outcome.kind).toBe('lost');
    if (outcome.kind !== 'lost') return;
    expect(outcome.error).toMatchObject({ key: 'ORIGINAL_LOST', code: 'FERRY-7006', sourceState: 'gone', phase: 'fill' });
    expect(outcome.error.message).toContain('the copy on dest:7070 (pid 777) waits on pages that exist nowhere now');
    expect(outcome.error.hint).toContain('kill -9 777');
    expect(calls).toBe(1);
  });

  it('whileOriginal checks the process around every chunk: one replaced during a read never has that chunk used', () => {
    let checks = 0;
    const twoChunks = (pid: number, first: number, count: number) => [...read(pid, first, count / 2), ...read(pid, first + count / 2, count / 2)];
    // Original at the first check and after the first chunk; another process after the second.
    const guarded = whileOriginal(twoChunks, () => ++checks <= 2);
    const got: number[] = [];
    expectFerryError(() => {
      for (const c of guarded(77, 0x10000, 8)) got.push(c.pages[0]!);
    }, 'ORIGINAL_LOST');
    expect(got).toEqual([0x10000]);
    expectFerryError(() => [...whileOriginal(twoChunks, () => false)(77, 0, 2)], 'ORIGINAL_LOST');
  });

  it('a dest that refuses the requests (REQUEST_INVALID) is not asked again for the whole patience: unanswered at once', async () => {
    let calls = 0;
    const dest = {
      reachable: () => Promise.resolve(true),
      fill: (h: FillCallHandlers) => {
        calls++;
        return {
          write: (req: m.FillRequest) => {
            if (req.count > 0) setImmediate(() => h.end(new FerryError('REQUEST_INVALID', { side: 'dest', detail: '24576 bytes of data for 256 pages' })));
            return Promise.resolve();
          },
          end: () => undefined,
          cancel: () => undefined,
        };
      },
    };
    const t0 = Date.now();
    const outcome = await fillUntilDone(dest, {
      migrationId: 'id', epoch: '1', manifests: [postCopyManifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal,
      patienceMs: 60_000, unanswered: (cause) => new FerryError('MIGRATION_UNRESOLVED', { cause }),
    });
    expect(outcome.kind).toBe('unanswered');
    expect(calls).toBe(1);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });
});
