/**
 * The images of a lazy restore, made from the page store without copying the task's memory. CRIU restores
 * itself only the pages outside lazy-capable memory (the dump's PRESENT-only entries: private file mappings,
 * a few pages), from a small pages image written here; every PE_LAZY page is left to the pager, which fills
 * it from the store's level files once CRIU hands it the task's userfaultfd. The plan names, for each lazy
 * page, its place in a level file, its hash, and whether the source confirmed it against the frozen original.
 * Before any of that, every dumped page must be in the store with exactly the dump's hash (store-references.ts),
 * but a remote one (post-copy: the dest has no bytes of it): it has no place in the store, and the plan names it
 * REMOTE_FILE, which the pager serves only from the source's bytes in the fill.
 */
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { TASK_PAGEMAP } from '../../shared/criu/image-names.js';
import { decodeMmVmas } from '../../shared/criu/mm-image.js';
import { decodePagemap, encodePagemap, PE_LAZY, type Pagemap } from '../../shared/criu/pagemap-image.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import { remoteCount } from './remote-pages.js';
import type { TaskPageStore } from '../page-store.js';
import type { PagesManifest, PageSourceSession } from '../restore-page-source.js';
import { bitAt } from '../../shared/pages/page-bitmap.js';
import { checkStoreReferences, NO_SLOT } from '../store-references.js';
import { planRanges, REMOTE_FILE, splitLazyPagemap, writePlanFile, type PlanPageColumns, type PlanTask } from './pager-plan.js';

export interface LazyImages {
  /** Pages the dump references that are in the store (all but the remote ones). */
  pages: number;
  /** Pages the pager fills after CRIU (remote ones included). */
  lazyPages: number;
  /** Post-copy: pages the dest has no bytes of (each comes from the source in the fill). */
  remotePages: number;
  /** The stores whose level files the pager reads: closed here, removed with the session. */
  stores: TaskPageStore[];
  /** Where the time went (ms): the store check, the plan's pages, the mm images and small pages images, the plan file. */
  steps: { checkMs: number; pagesMs: number; imagesMs: number; planMs: number };
}

const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { phase: 'restore', side: 'dest', detail });

/**
 * Writes the rewritten pagemaps, the small pages images and the plan (at `planFile`, in a directory made here).
 * Takes the stores over (the session's map is emptied); on a refusal they stay with the session.
 */
export async function prepareLazyImages(s: PageSourceSession, manifests: readonly PagesManifest[], planFile: string): Promise<LazyImages> {
  if (new Set(manifests.map((m) => m.task)).size !== manifests.length) throw invalid('two manifests name the same task');
  const t0 = performance.now();
  let tPages = 0;
  let tImages = 0;
  const decoded: { m: PagesManifest; pm: Pagemap; store: TaskPageStore | undefined; slots: Uint32Array }[] = [];
  let pages = 0;
  let remotePages = 0;
  for (const m of manifests) {
    const pm = decodePagemap(await readFile(join(s.imagesDir, m.pagemapImage)), m.pagemapImage);
    const store = s.stores.get(m.task);
    const slots = checkStoreReferences(m.pagemapImage, pm, m, store);
    pages += slots.length;
    remotePages += remoteCount(m.remote);
    if (m.unconfirmed && m.unconfirmed.length > 0 && m.unconfirmed.length !== Math.ceil(m.hashes.length / HASH_BYTES / 8)) {
      throw invalid(`${m.pagemapImage}: the unconfirmed bitmap has ${m.unconfirmed.length} bytes for ${m.hashes.length / HASH_BYTES} pages`);
    }
    decoded.push({ m, pm, store, slots });
  }
  if (new Set(decoded.map((x) => x.pm.pagesId)).size !== decoded.length) throw invalid('two pagemaps name the same pages image');
  const stores = decoded.flatMap((x) => (x.store ? [x.store] : []));
  const tChecked = performance.now();
  // Nothing writes the level files any more: the pager maps them as they are.
  for (const st of stores) await st.closeFiles();

  const files: string[] = [];
  const fileIndex = new Map<string, number>();
  const fileOf = (path: string): number => {
    let i = fileIndex.get(path);
    if (i === undefined) {
      i = files.length;
      files.push(path);
      fileIndex.set(path, i);
    }
    return i;
  };
  const tasks: PlanTask[] = [];
  let lazyPages = 0;
  for (const { m, pm, store, slots } of decoded) {
    const total = slots.length;
    const cols: PlanPageColumns = { file: new Uint32Array(total), offset: new Float64Array(total), confirmed: new Uint8Array(total) };
    const levels = store?.levels ?? [];
    const levelFile = levels.map((l) => fileOf(l.path));
    const tTask = performance.now();
    let k = 0;
    for (const e of pm.entries) {
      const lazy = (e.flags & PE_LAZY) !== 0;
      for (let end = k + e.nrPages; k < end; k++) {
        const slot = slots[k]!;
        if (slot === NO_SLOT) {
          // remote-pages.ts refused this before the restore began; CRIU would read bytes the dest does not have.
          if (!lazy) throw invalid(`${m.pagemapImage}: page #${k} is remote but restored by CRIU (not lazy)`);
          cols.file[k] = REMOTE_FILE; // confirmed 0, offset 0: only the source's bytes serve it
          lazyPages++;
          continue;
        }
        // Levels are few and a page's level is most often the previous page's: scan down from the top.
        let level = levels.length - 1;
        while (level > 0 && levels[level]!.firstSlot > slot) level--;
        cols.file[k] = levelFile[level]!;
        cols.offset[k] = (slot - levels[level]!.firstSlot) * s.pageSize;
        const confirmed = !bitAt(m.unconfirmed, k);
        cols.confirmed[k] = confirmed ? 1 : 0;
        if (lazy) lazyPages++;
        else if (!confirmed) {
          throw invalid(`${m.pagemapImage}: page ${e.firstPage + (k - (end - e.nrPages))} is restored by CRIU (not lazy) but is not confirmed`);
        }
      }
    }
    const tTaskPages = performance.now();
    tPages += tTaskPages - tTask;
    // Shared memory's pagemaps (pagemap-shmem-*.img) belong to no task and have no lazy entry (the source refuses
    // one): CRIU restores them whole from their pages image; the pager has nothing of theirs to fill.
    if (TASK_PAGEMAP.test(m.pagemapImage)) {
      const mmName = `mm-${m.task}.img`;
      const vmas = decodeMmVmas(await readFile(join(s.imagesDir, mmName)).catch(() => {
        throw invalid(`${mmName} is missing: the lazy ranges cannot be split at VMA edges`);
      }), mmName).sort((a: { start: bigint }, b: { start: bigint }) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
      tasks.push({ nsPid: m.task, ranges: planRanges(pm, vmas, s.pageSize), pages: cols, hashes: m.hashes });
    } else if (pm.entries.some((e) => (e.flags & PE_LAZY) !== 0)) {
      throw invalid(`${m.pagemapImage}: lazy pages outside a task`);
    }
    await writeEagerPages(s, pm, cols, files, m);
    tImages += performance.now() - tTaskPages;
  }
  const tPlan = performance.now();
  await mkdir(dirname(planFile), { recursive: true, mode: 0o700 });
  await writePlanFile(planFile, { pageSize: s.pageSize, files, tasks });
  s.stores.clear(); // their files are the pager's now; the session removes them when it ends
  const steps = { checkMs: tChecked - t0, pagesMs: tPages, imagesMs: tImages, planMs: performance.now() - tPlan };
  return { pages: pages - remotePages, lazyPages, remotePages, stores, steps };
}

/**
 * The pagemap CRIU restores from (splitLazyPagemap): PRESENT-only entries keep their data, in a pages image that
 * holds only them (read from the store's level files, checked against their hashes); PE_LAZY entries carry no
 * data (the pager fills them).
 */
async function writeEagerPages(s: PageSourceSession, pm: Pagemap, cols: PlanPageColumns, files: readonly string[], m: PagesManifest): Promise<void> {
  const { entries, presentOnly } = splitLazyPagemap(pm);
  const indexes = presentOnly.flatMap((r) => Array.from({ length: r.nPages }, (_, i) => r.firstIndex + i));
  const data = Buffer.alloc(indexes.length * s.pageSize);
  for (const [j, k] of indexes.entries()) {
    const path = files[cols.file[k]!]!;
    const fh = await open(path, 'r');
    try {
      const { bytesRead } = await fh.read(data, j * s.pageSize, s.pageSize, cols.offset[k]);
      if (bytesRead !== s.pageSize) throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `${path}: short read at ${cols.offset[k]}` });
    } finally {
      await fh.close();
    }
  }
  // CRIU restores these pages as they are: their bytes are checked now (the pager checks the lazy ones).
  const got = Buffer.alloc(indexes.length * HASH_BYTES);
  if (indexes.length > 0) hashPages(data, indexes.length, s.pageSize, got);
  for (const [j, k] of indexes.entries()) {
    if (got.compare(m.hashes, k * HASH_BYTES, (k + 1) * HASH_BYTES, j * HASH_BYTES, (j + 1) * HASH_BYTES) !== 0) {
      throw new FerryError('REBUILD_HASH_MISMATCH', { phase: 'restore', side: 'dest', detail: `task ${m.task} page #${k} of its pagemap: stored bytes do not match their hash` });
    }
  }
  await writeFile(join(s.imagesDir, m.pagemapImage), encodePagemap({ pagesId: pm.pagesId, entries }));
  await writeFile(join(s.imagesDir, `pages-${pm.pagesId}.img`), data, { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'EEXIST') throw invalid(`pages-${pm.pagesId}.img already exists`);
    throw e;
  });
}
