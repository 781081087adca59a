/**
 * The dest's page store (levels of pages in address order) and the parent-image chain CRIU restores from,
 * with real XXH3-128 hashes from the native addon. The chain is read back here the way CRIU reads it
 * (pagemap offsets, PE_PARENT falls through to `parent`); test/e2e restores from it with CRIU itself.
 */
import { lstat, mkdir, mkdtemp, open, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodePagemap, encodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import { decodePageBatch, PAGE_KIND_DATA, PAGE_KIND_ZERO, writePageNumber, type DecodedPageBatch } from '../../shared/transport/page-batch.js';
import { corruptOnePage } from '../../dest-agent/corrupt-store.js';
import { ImageChainPageSource } from '../../dest-agent/image-chain.js';
import { LevelFilePool } from '../../dest-agent/level-file-pool.js';
import { TaskPageStore } from '../../dest-agent/page-store.js';
import { SessionBudget } from '../../dest-agent/session-budget.js';
import { checkStoreReferences, NO_SLOT } from '../../dest-agent/store-references.js';
import type { PagesManifest } from '../../dest-agent/restore-page-source.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

// CRIU's pagemap images count in 4 KiB pages whatever the host: the store is tested at that size.
const PAGE = 4096;
const TASK = 1;
const PAGES_ID = 7;
const PAGEMAP = `pagemap-${TASK}.img`;

/** A page whose bytes name the page and its version, so that two versions always differ. */
function content(page: number, version = 0): Buffer {
  const b = Buffer.alloc(PAGE);
  for (let off = 0; off < PAGE; off += 16) {
    b.writeDoubleLE(page, off);
    b.writeUInt32LE(version, off + 8);
    b.writeUInt32LE(off, off + 12);
  }
  return b;
}

interface Page {
  page: number;
  /** Undefined: an all-zero page, sent as a flag. */
  bytes: Buffer | undefined;
}

const data = (page: number, version = 0): Page => ({ page, bytes: content(page, version) });
const zero = (page: number): Page => ({ page, bytes: undefined });
const bytesOf = (p: Page): Buffer => p.bytes ?? Buffer.alloc(PAGE);

/** A decoded batch with correct hashes (computed by the native addon, as the source does). */
function batch(pages: readonly Page[]): DecodedPageBatch {
  const pageNumbers = Buffer.alloc(pages.length * 8);
  pages.forEach((p, i) => writePageNumber(pageNumbers, i, p.page));
  const hashes = Buffer.alloc(pages.length * HASH_BYTES);
  const all = Buffer.concat(pages.map(bytesOf));
  if (pages.length > 0) hashPages(all, pages.length, PAGE, hashes);
  return decodePageBatch(
    {
      pageNumbers,
      hashes,
      kinds: Buffer.from(pages.map((p) => (p.bytes ? PAGE_KIND_DATA : PAGE_KIND_ZERO))),
      data: Buffer.concat(pages.flatMap((p) => (p.bytes ? [p.bytes] : []))),
    },
    PAGE,
  );
}

/** Reads `page` through a chain as CRIU does: PRESENT data at its offset in pages-<id>.img, PE_PARENT -> parent/. */
async function readThroughChain(dir: string, page: number): Promise<Buffer> {
  const pm = decodePagemap(await readFile(join(dir, PAGEMAP)));
  let offset = 0;
  for (const e of pm.entries) {
    const inside = page >= e.firstPage && page < e.firstPage + e.nrPages;
    if (inside && (e.flags & PE_PRESENT) !== 0) {
      const fh = await open(join(dir, `pages-${pm.pagesId}.img`), 'r');
      try {
        const b = Buffer.alloc(PAGE);
        await fh.read(b, 0, PAGE, offset + (page - e.firstPage) * PAGE);
        return b;
      } finally {
        await fh.close();
      }
    }
    if (inside && (e.flags & PE_PARENT) !== 0) return readThroughChain(join(dir, 'parent'), page);
    if ((e.flags & PE_PRESENT) !== 0) offset += e.nrPages * PAGE;
  }
  throw new Error(`page ${page} missing in ${dir}`);
}

/** The dump's pagemap: PRESENT runs (as CRIU writes them), and the manifest of their hashes. */
async function dump(imagesDir: string, runs: [number, number][], versions: Map<number, Page>): Promise<PagesManifest> {
  await writeFile(join(imagesDir, PAGEMAP), encodePagemap({ pagesId: PAGES_ID, entries: runs.map(([p, n]) => ({ vaddr: BigInt(p) * 4096n, nrPages: n, flags: PE_PRESENT })) }));
  const pages = runs.flatMap(([p, n]) => Array.from({ length: n }, (_, i) => versions.get(p + i) ?? data(p + i)));
  const hashes = Buffer.alloc(pages.length * HASH_BYTES);
  if (pages.length > 0) hashPages(Buffer.concat(pages.map(bytesOf)), pages.length, PAGE, hashes);
  return { pagemapImage: PAGEMAP, task: TASK, hashes };
}

let dir: string;
let storeDir: string;
let imagesDir: string;
let chainDir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-store-'));
  storeDir = join(dir, 'pages');
  imagesDir = join(dir, 'images');
  chainDir = join(dir, 'chain');
  for (const d of [storeDir, imagesDir]) await mkdir(d);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const scratch = Buffer.alloc(1024 * HASH_BYTES);

/** The page source of a session whose one task's pages are in `st`; its stores map is returned to watch the hand-over. */
function chainOf(st: TaskPageStore): { source: ImageChainPageSource; stores: Map<number, TaskPageStore> } {
  const stores = new Map([[TASK, st]]);
  return { source: new ImageChainPageSource({ dir, imagesDir, pageSize: PAGE, stores }), stores };
}

describe('page store levels', () => {
  it('keeps ascending pages in one level and overwrites a page sent again in place', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(10), data(11), zero(12), data(20)]), scratch);
    await st.put(batch([data(11, 1), data(30)]), scratch); // round 1: 11 changed, 30 is new and above 20
    expect(st.levels.length).toBe(1);
    expect(st.levels[0]!.pages).toBe(5);
    const file = await readFile(st.levels[0]!.path);
    expect(file.length).toBe(5 * PAGE);
    expect(file.subarray(PAGE, 2 * PAGE)).toEqual(content(11, 1));
    expect(file.subarray(2 * PAGE, 3 * PAGE)).toEqual(Buffer.alloc(PAGE));
    expect(file.subarray(4 * PAGE)).toEqual(content(30));
    await st.verify();
    await st.close();
  });

  it('starts a new level when a new page is below the last one, so every level stays in address order', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(100), data(101)]), scratch);
    await st.put(batch([data(5), data(6), data(200)]), scratch);
    await st.put(batch([data(3)]), scratch);
    expect(st.levels.map((l) => l.pages)).toEqual([2, 3, 1]);
    await st.close();
  });

  it('keeps zero pages as holes (issue 9): no disk for them, zeros when read, a trailing one extends the file', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([zero(1), zero(2), data(3), zero(4)]), scratch);
    const path = st.levels[0]!.path;
    expect((await stat(path)).size).toBe(4 * PAGE);
    expect((await stat(path)).blocks * 512).toBeLessThanOrEqual(PAGE); // the one data page
    const file = await readFile(path);
    expect(file.subarray(0, PAGE)).toEqual(Buffer.alloc(PAGE));
    expect(file.subarray(3 * PAGE)).toEqual(Buffer.alloc(PAGE));
    // A page that was data and became zero is written as zeros; a hole that became data is filled.
    await st.put(batch([zero(3), data(4)]), scratch);
    const again = await readFile(path);
    expect(again.subarray(2 * PAGE, 3 * PAGE)).toEqual(Buffer.alloc(PAGE));
    expect(again.subarray(3 * PAGE)).toEqual(content(4));
    await st.verify();
    await st.close();
  });

  it('refuses more levels than allowed (PAGE_STORE_LIMIT) and more pages than the budget (SESSION_QUOTA_EXCEEDED), storing nothing of that batch', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE, { maxLevels: 2, budget: new SessionBudget(4 * PAGE, PAGE) });
    await st.put(batch([data(10)]), scratch);
    await expectFerryRejection(st.put(batch([data(9), data(8)]), scratch), 'PAGE_STORE_LIMIT');
    expect(st.levels.length).toBe(1);
    expect(st.index.size).toBe(1);
    await st.put(batch([data(9), data(11)]), scratch); // level 1
    await expectFerryRejection(st.put(batch([data(12), data(13)]), scratch), 'SESSION_QUOTA_EXCEEDED');
    expect(st.index.size).toBe(3);
    await st.put(batch([data(12)]), scratch);
    await st.close();
  });

  it('refuses a batch with one bad hash entirely', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    const b = batch([data(1), data(2)]);
    b.hashes[HASH_BYTES + 3] = b.hashes[HASH_BYTES + 3]! ^ 1;
    await expectFerryRejection(st.put(b, scratch), 'PAGE_INTEGRITY');
    expect(st.index.size).toBe(0);
    await st.close();
  });

  it('a page twice in one batch takes one slot and its bytes once from the budget, and its later version is stored', async () => {
    // Exactly 4 pages of budget: counting the repeated page twice would refuse the batch.
    const st = await TaskPageStore.open(storeDir, TASK, PAGE, { budget: new SessionBudget(4 * PAGE, PAGE) });
    await st.put(batch([data(1), data(2), data(3), data(2, 1), zero(4), zero(3)]), scratch);
    expect(st.index.size).toBe(4);
    const file = await readFile(st.levels[0]!.path);
    expect(file.subarray(PAGE, 2 * PAGE)).toEqual(content(2, 1));
    expect(file.subarray(2 * PAGE, 3 * PAGE)).toEqual(Buffer.alloc(PAGE)); // data, then zero in the same batch
    expect(file.length).toBe(4 * PAGE);
    await st.verify();
    await st.close();
  });

  it('writes a run that mixes data pages, rewritten zero pages and holes at the right offsets', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(1), data(2), zero(3), data(4), data(5), data(6)]), scratch);
    // Page 3 stays a hole (never written), 2 and 5 were data and become zeros, the rest change.
    await st.put(batch([data(1, 1), zero(2), zero(3), data(4, 1), zero(5), data(6, 1), data(7)]), scratch);
    const file = await readFile(st.levels[0]!.path);
    const want = [content(1, 1), Buffer.alloc(PAGE), Buffer.alloc(PAGE), content(4, 1), Buffer.alloc(PAGE), content(6, 1), content(7)];
    expect(file).toEqual(Buffer.concat(want));
    await st.verify();
    await st.close();
  });

  it('names the page whose hash is wrong, in a run of data pages or a zero page', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    const b = batch([data(1), data(2), data(3), zero(4), data(5)]);
    b.hashes[2 * HASH_BYTES] = b.hashes[2 * HASH_BYTES]! ^ 1;
    expect((await expectFerryRejection(st.put(b, scratch), 'PAGE_INTEGRITY')).detail).toContain('#2 of the batch');
    const z = batch([data(1), zero(4), data(5)]);
    z.hashes[HASH_BYTES + 15] = z.hashes[HASH_BYTES + 15]! ^ 1;
    expect((await expectFerryRejection(st.put(z, scratch), 'PAGE_INTEGRITY')).detail).toContain('#1 of the batch');
    expect(st.index.size).toBe(0);
    await st.close();
  });

  it('verify() finds a page damaged on disk', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(1), data(2), data(3)]), scratch);
    const fh = await open(st.levels[0]!.path, 'r+');
    await fh.write(Buffer.from([0xee]), 0, 1, PAGE + 17);
    await fh.close();
    await expectFerryRejection(st.verify(), 'REBUILD_HASH_MISMATCH');
    await st.close();
  });
});

describe('parent-image chain', () => {
  it('serves every dumped page, in its dumped version, through the chain; the dump images hold no data', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(100), data(101), data(102), zero(103)]), scratch); // level 0
    await st.put(batch([data(40), data(41)]), scratch); // below 103: level 1
    await st.put(batch([data(101, 2), data(500)]), scratch); // final delta: 101 changed, 500 new (level 1)
    await st.put(batch([data(7)]), scratch); // level 2
    const versions = new Map<number, Page>([[101, data(101, 2)], [103, zero(103)]]);
    // 102 is not in the dump (freed): it stays in the store, unreferenced.
    const m = await dump(imagesDir, [[7, 1], [40, 2], [100, 2], [103, 1], [500, 1]], versions);
    const { source, stores } = chainOf(st);
    const r = await source.prepare([m]);
    expect(r).toEqual({ levels: 3, pages: 7 });
    expect(stores.size).toBe(0); // the chain owns the store files now
    expect(await source.verify()).toBe(8); // the renamed level files are read at their new paths
    for (const p of [7, 40, 41, 100, 101, 103, 500]) {
      expect(await readThroughChain(imagesDir, p), `page ${p}`).toEqual(bytesOf(versions.get(p) ?? data(p)));
    }
    const top = decodePagemap(await readFile(join(imagesDir, PAGEMAP)));
    expect(top.entries.every((e) => e.flags === PE_PARENT)).toBe(true);
    expect((await stat(join(imagesDir, `pages-${PAGES_ID}.img`))).size).toBe(0);
    expect(resolve(imagesDir, await readlink(join(imagesDir, 'parent')))).toBe(join(chainDir, 'L2'));
    expect(await readlink(join(imagesDir, 'parent'))).not.toMatch(/^\//); // relative: a pivot_root'ed task resolves it too
    expect((await lstat(join(chainDir, 'L1', 'parent'))).isSymbolicLink()).toBe(true);
    expect((await stat(join(chainDir, 'L0', 'pages-1.img'))).size).toBe(4 * PAGE); // renamed, not copied
  });

  it('builds and verifies the chain through a pool of one open file: levels are reopened at their new paths', async () => {
    const files = new LevelFilePool(1);
    const st = await TaskPageStore.open(storeDir, TASK, PAGE, { files });
    for (let p = 50; p > 40; p--) await st.put(batch([data(p), zero(p + 100)]), scratch); // ten levels
    expect(st.levels.length).toBe(10);
    expect(files.openFiles).toBeLessThanOrEqual(1);
    const m = await dump(imagesDir, [[41, 10], [141, 10]], new Map(Array.from({ length: 10 }, (_, i) => [141 + i, zero(141 + i)] as const)));
    const { source } = chainOf(st);
    expect(await source.prepare([m])).toEqual({ levels: 10, pages: 20 });
    expect(await source.verify()).toBe(20);
    for (const p of [41, 45, 50]) expect(await readThroughChain(imagesDir, p)).toEqual(content(p));
    for (const p of [141, 150]) expect(await readThroughChain(imagesDir, p)).toEqual(Buffer.alloc(PAGE));
    expect(files.openFiles).toBe(0);
  });

  it('refuses a dump page the store lacks, or holds in another version', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(1), data(2)]), scratch);
    const missing = await dump(imagesDir, [[1, 3]], new Map());
    const { source, stores } = chainOf(st);
    await expectFerryRejection(source.prepare([missing]), 'REBUILD_PAGE_MISSING');
    const stale = await dump(imagesDir, [[1, 2]], new Map([[2, data(2, 9)]]));
    await expectFerryRejection(source.prepare([stale]), 'REBUILD_HASH_MISMATCH');
    expect(stores.get(TASK)).toBe(st); // refused: the session keeps its store
    await st.close();
  });

  it('refuses a manifest whose hash count does not match the present pages', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(1), data(2)]), scratch);
    const m = await dump(imagesDir, [[1, 2]], new Map());
    const short = { ...m, hashes: m.hashes.subarray(0, HASH_BYTES) };
    await expectFerryRejection(chainOf(st).source.prepare([short]), 'IMAGE_INVALID');
    await st.close();
  });

  it('verify() finds a store damaged on disk after the chain was built from it', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(1), data(2)]), scratch);
    const fh = await open(st.levels[0]!.path, 'r+');
    await fh.write(Buffer.from([1]), 0, 1, 5);
    await fh.close();
    const m = await dump(imagesDir, [[1, 2]], new Map());
    const { source } = chainOf(st);
    await source.prepare([m]);
    await expectFerryRejection(source.verify(), 'REBUILD_HASH_MISMATCH');
  });

  it('the dest.corrupt-store damage passes the manifest check and is caught by verify()', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(1), data(2)]), scratch);
    await corruptOnePage([st]);
    expect((await readFile(st.levels[0]!.path)).subarray(0, PAGE)).not.toEqual(content(1));
    const m = await dump(imagesDir, [[1, 2]], new Map());
    const { source } = chainOf(st);
    expect(await source.prepare([m])).toEqual({ levels: 1, pages: 2 });
    await expectFerryRejection(source.verify(), 'REBUILD_HASH_MISMATCH');
  });
});

describe('store references of a post-copy dump (remote pages)', () => {
  it('gives a remote page no slot and never looks for it; without its remote bit the same page is missing', async () => {
    const st = await TaskPageStore.open(storeDir, TASK, PAGE);
    await st.put(batch([data(10), data(11), data(13)]), scratch);
    const pm = { pagesId: PAGES_ID, entries: [{ vaddr: 10n * 4096n, firstPage: 10, nrPages: 4, flags: PE_LAZY | PE_PRESENT }] };
    const hashes = Buffer.alloc(4 * HASH_BYTES);
    hashPages(Buffer.concat([content(10), content(11)]), 2, PAGE, hashes);
    hashPages(content(13), 1, PAGE, hashes.subarray(3 * HASH_BYTES)); // page 12's hash stays zero: remote
    const m: PagesManifest = { pagemapImage: PAGEMAP, task: TASK, hashes, unconfirmed: Buffer.from([0x04]), remote: Buffer.from([0x04]) };
    expect([...checkStoreReferences(PAGEMAP, pm, m, st)]).toEqual([0, 1, NO_SLOT, 2]);
    let missing: unknown;
    try {
      checkStoreReferences(PAGEMAP, pm, { ...m, remote: undefined }, st);
    } catch (e) {
      missing = e;
    }
    expect(missing).toMatchObject({ key: 'REBUILD_PAGE_MISSING', detail: 'task 1 page 12 was never received' });
    await st.close();
  });
});
