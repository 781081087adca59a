/**
 * A lazy restore's fill as the source runs it, without the network: the manifests file kept beside the journal
 * (round trip, bounds, removed with the journal's done) and the sweep of confirm-pages.ts (split at the
 * pagemap's runs and at 1024 pages, only the unconfirmed pages, one answer per page).
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
import { setBits } from '../../source-agent/pages/final-delta-pages.js';
import { confirmPages } from '../../source-agent/pages/confirm-pages.js';
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

describe('the sweep', () => {
  it('answers exactly the unconfirmed pages, split at the runs and at 1024 pages, and confirms what matches', async () => {
    const { requests, open } = fakeFill(3300);
    const r = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [manifest()], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    expect(requests.map((q) => `${q.firstIndex}+${q.count}`)).toEqual(['0+0', '100+1024', '1124+876', '2000+1024', '3024+376']);
    expect(requests.every((q) => q.data.length === 0)).toBe(true);
    expect(r).toMatchObject({ confirmedPages: 3300, replacedPages: 0 });
  });

  it('sends the bytes of exactly the pages that differ, wherever they fall in a chunk (distinct pages: no index may slip)', async () => {
    const man = manifest();
    // Stale hashes (the tracker missed these writes) at scattered indexes of the first chunk, two of them adjacent.
    const stale = [150, 151, 300, 1000];
    for (const k of stale) man.hashes.fill(0xee, k * 16, (k + 1) * 16);
    const { requests, open } = fakeFill(3300);
    const r = await confirmPages(open, { migrationId: 'id', epoch: '1', manifests: [man], pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    const replaced = requests.filter((q) => q.data.length > 0);
    expect(replaced.map((q) => `${q.firstIndex}+${q.count}`)).toEqual(['150+2', '300+1', '1000+1']);
    // Each carries the original's bytes of its own pages (the reader writes the page number into each page).
    for (const q of replaced) {
      for (let i = 0; i < q.count; i++) expect(q.data.readDoubleLE(i * PAGE)).toBe(0x10000 + Number(q.firstIndex) + i);
    }
    expect(r).toMatchObject({ confirmedPages: 3300 - 4, replacedPages: 4 });
  });
});
