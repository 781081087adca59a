/**
 * Rebuilds CRIU's pages-<id>.img files from the page store: the pages of every PRESENT pagemap entry, in
 * pagemap order. Each page must be in the store with the hash the source computed from the dump, and is
 * hashed again as it is read back; the file size must equal PRESENT pages * page size. CRIU itself checks
 * none of this: a wrong page restores silently and a short file makes the restore spin for ever.
 */
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { hashPages } from '../shared/native/addon.js';
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { decodePagemap, PE_PRESENT } from '../shared/criu/pagemap-image.js';
import type { TaskPageStore } from './page-store.js';

const CHUNK_PAGES = 256;

export interface PagesManifest {
  pagemapImage: string;
  task: number;
  /** XXH3-128 of each PRESENT page in pagemap order. */
  hashes: Buffer;
}

export interface RebuildResult {
  pagesImage: string;
  pages: number;
  bytes: number;
}

export async function rebuildPagesImage(
  imagesDir: string,
  manifest: PagesManifest,
  store: TaskPageStore | undefined,
  pageSize: number,
): Promise<RebuildResult> {
  const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { phase: 'restore', side: 'dest', detail });
  const pagemap = decodePagemap(await readFile(join(imagesDir, manifest.pagemapImage)));
  const pagesImage = `pages-${pagemap.pagesId}.img`;
  const present = pagemap.entries.filter((e) => (e.flags & PE_PRESENT) !== 0);
  const total = present.reduce((n, e) => n + e.nrPages, 0);
  if (manifest.hashes.length !== total * HASH_BYTES) {
    throw invalid(`${manifest.pagemapImage}: ${total} present pages but ${manifest.hashes.length / HASH_BYTES} hashes`);
  }
  if (total > 0 && !store) {
    throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `no pages at all for task ${manifest.task}` });
  }

  let out;
  try {
    out = await open(join(imagesDir, pagesImage), 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw invalid(`${pagesImage} is named by two pagemaps (${manifest.pagemapImage})`);
    throw e;
  }
  const chunk = Buffer.allocUnsafe(CHUNK_PAGES * pageSize);
  const chunkHashes = Buffer.allocUnsafe(CHUNK_PAGES * HASH_BYTES);
  const slots = new Int32Array(CHUNK_PAGES);
  const pageOf = new Float64Array(CHUNK_PAGES);
  let done = 0; // pages written so far, = index into manifest.hashes
  let filled = 0;

  const flushChunk = async (): Promise<void> => {
    // Read consecutive slots with one pread each.
    let i = 0;
    while (i < filled) {
      let j = i + 1;
      while (j < filled && slots[j] === slots[j - 1]! + 1) j++;
      await store!.readSlots(slots[i]!, j - i, chunk, i * pageSize);
      i = j;
    }
    hashPages(chunk, filled, pageSize, chunkHashes);
    const expected = manifest.hashes.subarray((done - filled) * HASH_BYTES, done * HASH_BYTES);
    if (!chunkHashes.subarray(0, filled * HASH_BYTES).equals(expected)) {
      const bad = firstDifference(chunkHashes, expected, filled);
      throw new FerryError('REBUILD_HASH_MISMATCH', {
        phase: 'restore',
        side: 'dest',
        detail: `task ${manifest.task} page ${pageOf[bad]}: stored bytes do not match the dump's hash (${store!.path})`,
      });
    }
    await out.write(chunk, 0, filled * pageSize);
    filled = 0;
  };

  try {
    for (const entry of present) {
      for (let p = entry.firstPage; p < entry.firstPage + entry.nrPages; p++) {
        const slot = store!.index.slotOf(p);
        if (slot === undefined) {
          throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `task ${manifest.task} page ${p} was never received` });
        }
        if (!store!.index.holds(p, manifest.hashes, done * HASH_BYTES)) {
          throw new FerryError('REBUILD_HASH_MISMATCH', {
            phase: 'restore',
            side: 'dest',
            detail: `task ${manifest.task} page ${p}: the stored version is not the dumped one`,
          });
        }
        slots[filled] = slot;
        pageOf[filled] = p;
        filled++;
        done++;
        if (filled === CHUNK_PAGES) await flushChunk();
      }
    }
    if (filled > 0) await flushChunk();
  } finally {
    await out.close();
  }
  const size = (await stat(join(imagesDir, pagesImage))).size;
  if (size !== total * pageSize) throw invalid(`${pagesImage}: ${size} bytes, expected ${total * pageSize}`);
  return { pagesImage, pages: total, bytes: size };
}

function firstDifference(a: Buffer, b: Buffer, count: number): number {
  for (let i = 0; i < count; i++) {
    if (a.compare(b, i * HASH_BYTES, (i + 1) * HASH_BYTES, i * HASH_BYTES, (i + 1) * HASH_BYTES) !== 0) return i;
  }
  return 0;
}
