/**
 * The dest's page store and the rebuild of pages-N.img from it, with real XXH3-128 hashes from the native
 * addon (build/Release). Every page is checked on arrival and again on the way out.
 */
import { mkdir, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodePagemap, PE_LAZY, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { hashPages, pageHash } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import { decodePages, PAGE_KIND_DATA, PAGE_KIND_ZERO, writePageNumber, type DecodedPages } from '../../shared/transport/page-batch.js';
import { rebuildPagesImage, type PagesManifest } from '../../dest-agent/image-rebuild.js';
import { TaskPageStore, zeroPageHash } from '../../dest-agent/page-store.js';
import { expectFerryRejection } from './ferry-error-expect.js';

// CRIU's pagemap images count in 4 KiB pages whatever the host: the store is tested at that size.
const PAGE = 4096;
const TASK = 1;
const PAGES_ID = 7;

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
function batch(pages: readonly Page[]): DecodedPages {
  const pageNumbers = Buffer.alloc(pages.length * 8);
  pages.forEach((p, i) => writePageNumber(pageNumbers, i, p.page));
  const hashes = Buffer.alloc(pages.length * HASH_BYTES);
  const all = Buffer.concat(pages.map(bytesOf));
  if (pages.length > 0) hashPages(all, pages.length, PAGE, hashes);
  return decodePages(
    {
      pageNumbers,
      hashes,
      kinds: Buffer.from(pages.map((p) => (p.bytes ? PAGE_KIND_DATA : PAGE_KIND_ZERO))),
      data: Buffer.concat(pages.flatMap((p) => (p.bytes ? [p.bytes] : []))),
    },
    PAGE,
  );
}

const hashesOf = (pages: readonly Buffer[]): Buffer => Buffer.concat(pages.map((p) => pageHash(p)));

/** Writes pagemap-1.img with PRESENT entries (plus the extra non-PRESENT ones given) and returns the manifest. */
async function writePagemap(
  dir: string,
  entries: readonly { firstPage: number; nrPages: number; flags?: number }[],
  hashes: Buffer,
): Promise<PagesManifest> {
  const pagemapImage = 'pagemap-1.img';
  const image = encodePagemap({
    pagesId: PAGES_ID,
    entries: entries.map((e) => ({ vaddr: BigInt(e.firstPage) * BigInt(PAGE), nrPages: e.nrPages, flags: e.flags ?? PE_PRESENT })),
  });
  await writeFile(join(dir, pagemapImage), image);
  return { pagemapImage, task: TASK, hashes };
}

const scratchFor = (b: DecodedPages): Buffer => Buffer.alloc(Math.max(1, b.count) * HASH_BYTES);

describe('TaskPageStore and rebuildPagesImage', () => {
  let root: string;
  let imagesDir: string;
  let store: TaskPageStore;

  const put = (pages: readonly Page[]): Promise<void> => {
    const b = batch(pages);
    return store.put(b, scratchFor(b));
  };

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'ferry-unit-store-'));
    imagesDir = join(root, 'images');
    await mkdir(imagesDir);
    store = await TaskPageStore.open(root, TASK, PAGE);
  });

  afterEach(async () => {
    await store.close().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  });

  it('rebuilds pages-N.img in pagemap order, with the latest version of each page and zero pages as zeros', async () => {
    // Round 0: region B first, so that store slots are not in pagemap order; a zero page; page 0x1001 at v0.
    await put([data(0x5000), zero(0x5001), data(0x5002)]);
    await put([data(0x1000), data(0x1001, 0), zero(0x1002), data(0x1003)]);
    // Round 1: 0x1001 written again (v1); 0x5001 no longer zero; within one batch 0x1003 goes v1 then v2.
    await put([data(0x1001, 1), data(0x5001, 1), data(0x1003, 1), data(0x1003, 2)]);
    expect(store.index.size).toBe(7);
    expect((await stat(store.path)).size).toBe(7 * PAGE);

    const expected = [
      content(0x1000),
      content(0x1001, 1),
      Buffer.alloc(PAGE),
      content(0x1003, 2),
      content(0x5000),
      content(0x5001, 1),
      content(0x5002),
    ];
    const manifest = await writePagemap(
      imagesDir,
      [
        { firstPage: 0x1000, nrPages: 4 },
        { firstPage: 0x3000, nrPages: 16, flags: PE_LAZY }, // not PRESENT: no data in pages-N.img
        { firstPage: 0x5000, nrPages: 3 },
      ],
      hashesOf(expected),
    );

    const r = await rebuildPagesImage(imagesDir, manifest, store, PAGE);
    expect(r).toEqual({ pagesImage: `pages-${PAGES_ID}.img`, pages: 7, bytes: 7 * PAGE });
    const image = await readFile(join(imagesDir, r.pagesImage));
    expect(image.length).toBe(7 * PAGE);
    expected.forEach((want, i) => expect(image.subarray(i * PAGE, (i + 1) * PAGE).equals(want), `page #${i}`).toBe(true));
  });

  it('rebuilds more pages than one read chunk', async () => {
    const n = 600;
    const pages = Array.from({ length: n }, (_, i) => (i % 7 === 3 ? zero(0x10000 + i) : data(0x10000 + i)));
    for (let i = 0; i < n; i += 256) await put(pages.slice(i, i + 256));
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x10000, nrPages: n }], hashesOf(pages.map(bytesOf)));
    const r = await rebuildPagesImage(imagesDir, manifest, store, PAGE);
    expect(r.bytes).toBe(n * PAGE);
    expect((await readFile(join(imagesDir, r.pagesImage))).equals(Buffer.concat(pages.map(bytesOf)))).toBe(true);
  });

  it('writes an empty pages image for a pagemap without PRESENT pages, even without a store', async () => {
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x10, nrPages: 4, flags: PE_LAZY }], Buffer.alloc(0));
    const r = await rebuildPagesImage(imagesDir, manifest, undefined, PAGE);
    expect(r).toEqual({ pagesImage: `pages-${PAGES_ID}.img`, pages: 0, bytes: 0 });
    expect((await stat(join(imagesDir, r.pagesImage))).size).toBe(0);
  });

  it('refuses a whole batch when one page does not match its hash', async () => {
    await put([data(1)]);
    const b = batch([data(2), data(3), data(4)]);
    b.hashes[HASH_BYTES + 5]! ^= 0x01; // page 3's hash
    const e = await expectFerryRejection(store.put(b, scratchFor(b)), 'PAGE_INTEGRITY');
    expect(e.side).toBe('dest');
    expect(e.detail).toContain('page 3');
    // Nothing of the batch was stored, not even page 2, which came before the bad one.
    expect(store.index.size).toBe(1);
    expect(store.index.slotOf(2)).toBeUndefined();
    expect((await stat(store.path)).size).toBe(PAGE);
  });

  it('refuses a zero page whose hash is not the zero page hash', async () => {
    const b = batch([zero(9)]);
    b.hashes.set(pageHash(content(9)));
    await expectFerryRejection(store.put(b, scratchFor(b)), 'PAGE_INTEGRITY');
    expect(store.index.size).toBe(0);
    expect(zeroPageHash(PAGE).equals(pageHash(Buffer.alloc(PAGE)))).toBe(true);
  });

  it('refuses to rebuild when a page was never received', async () => {
    await put([data(0x100), data(0x102)]);
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x100, nrPages: 3 }], hashesOf([content(0x100), content(0x101), content(0x102)]));
    const e = await expectFerryRejection(rebuildPagesImage(imagesDir, manifest, store, PAGE), 'REBUILD_PAGE_MISSING');
    expect(e.detail).toContain(`page ${0x101}`);
  });

  it('refuses to rebuild pages for a task the dest has no store of', async () => {
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x100, nrPages: 1 }], hashesOf([content(0x100)]));
    await expectFerryRejection(rebuildPagesImage(imagesDir, manifest, undefined, PAGE), 'REBUILD_PAGE_MISSING');
  });

  it('refuses to rebuild when the dest holds an older version than the dump', async () => {
    await put([data(0x100, 0), data(0x101, 0)]);
    // The dump has 0x101 at v1, which the final delta should have sent.
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x100, nrPages: 2 }], hashesOf([content(0x100, 0), content(0x101, 1)]));
    const e = await expectFerryRejection(rebuildPagesImage(imagesDir, manifest, store, PAGE), 'REBUILD_HASH_MISMATCH');
    expect(e.detail).toContain(`page ${0x101}`);
  });

  it('catches a store file damaged on disk after the pages were verified', async () => {
    const n = 300; // the damaged page lies in the second read chunk
    const pages = Array.from({ length: n }, (_, i) => data(0x2000 + i));
    await put(pages.slice(0, 256));
    await put(pages.slice(256));
    const victim = 270;
    const fh = await open(store.path, 'r+');
    try {
      await fh.write(Buffer.from([0xff, 0x00, 0xff]), 0, 3, store.index.slotOf(0x2000 + victim)! * PAGE + 100);
    } finally {
      await fh.close();
    }
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x2000, nrPages: n }], hashesOf(pages.map(bytesOf)));
    const e = await expectFerryRejection(rebuildPagesImage(imagesDir, manifest, store, PAGE), 'REBUILD_HASH_MISMATCH');
    expect(e.detail).toContain(`page ${0x2000 + victim}`);
  });

  it('catches a store file cut short on disk', async () => {
    await put([data(0x100), data(0x101)]);
    await truncate(store.path, PAGE + 10);
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x100, nrPages: 2 }], hashesOf([content(0x100), content(0x101)]));
    await expectFerryRejection(rebuildPagesImage(imagesDir, manifest, store, PAGE), 'REBUILD_PAGE_MISSING');
  });

  it.each([
    { name: 'one hash short', hashes: 1 },
    { name: 'one hash too many', hashes: 3 },
  ])('refuses a manifest with $name as IMAGE_INVALID', async ({ hashes }) => {
    await put([data(0x100), data(0x101)]);
    const all = hashesOf([content(0x100), content(0x101), content(0x102)]);
    const manifest = await writePagemap(imagesDir, [{ firstPage: 0x100, nrPages: 2 }], all.subarray(0, hashes * HASH_BYTES));
    const e = await expectFerryRejection(rebuildPagesImage(imagesDir, manifest, store, PAGE), 'IMAGE_INVALID');
    expect(e.phase).toBe('restore');
  });

  it('refuses a pagemap that is not a pagemap image', async () => {
    await writeFile(join(imagesDir, 'pagemap-1.img'), Buffer.from('not an image'));
    await expectFerryRejection(rebuildPagesImage(imagesDir, { pagemapImage: 'pagemap-1.img', task: TASK, hashes: Buffer.alloc(0) }, store, PAGE), 'IMAGE_INVALID');
  });
});
