/**
 * Turns the page store into CRIU images without copying a page. CRIU restores pages flagged PE_PARENT from
 * the images in the `parent` directory (the mechanism of its pre-dump chains), following `parent` links
 * level by level. The store's level files are already in CRIU's pages-image order (see page-store.ts), so:
 *   chain/L0 ... chain/Ln   one directory per store level: the level file renamed to pages-<i>.img, and a
 *                           pagemap that marks the level's own pages PE_PRESENT and every page of a lower
 *                           level PE_PARENT (so that a lookup falls through to where the page lives)
 *   images/                 the dump's pagemap rewritten with every page PE_PARENT, an empty pages image,
 *                           and `parent` -> chain/Ln
 * Before that, every page the dump holds must be in the store with exactly the dump's hash. The bytes on disk
 * are read back and hashed by verify(), which may run while CRIU restores (the restored copy stays
 * stopped until commit, so a bad page found then still means a rollback, never a wrong task running).
 * This is the RestorePageSource (restore-page-source.ts) the dest restores from.
 */
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { decodePagemap, encodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT, type Pagemap, type PagemapEntry } from '../shared/criu/pagemap-image.js';
import type { TaskPageStore } from './page-store.js';
import { checkStoreReferences } from './store-references.js';
import type { PageSourceSession, PagesManifest, PreparedPages, RestorePageSource } from './restore-page-source.js';

/** The session's images restore from `<session>/chain`, made of its stores' level files. */
export class ImageChainPageSource implements RestorePageSource {
  private taken: TaskPageStore[] = [];

  constructor(private readonly session: PageSourceSession) {}

  async prepare(manifests: readonly PagesManifest[]): Promise<PreparedPages> {
    const s = this.session;
    const chain = await buildParentChain(s.imagesDir, join(s.dir, 'chain'), manifests, s.stores, s.pageSize);
    this.taken = [...s.stores.values()];
    s.stores.clear(); // their files now belong to the chain
    return chain;
  }

  /** Reads every stored page back and checks its hash, then closes the stores. */
  async verify(): Promise<number> {
    let verified = 0;
    try {
      for (const store of this.taken) {
        await store.verify();
        verified += store.index.size;
      }
    } finally {
      for (const store of this.taken) await store.close();
    }
    return verified;
  }
}

type Entry = Pick<PagemapEntry, 'vaddr' | 'nrPages' | 'flags'>;

const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { phase: 'restore', side: 'dest', detail });

/** Runs of consecutive pages with one flag, as pagemap entries. `pages` ascending, `present[i]` its flag. */
function entriesOf(pages: Float64Array, present: Uint8Array, pageSize: number): Entry[] {
  const out: Entry[] = [];
  for (let i = 0; i < pages.length; ) {
    let j = i + 1;
    while (j < pages.length && pages[j] === pages[j - 1]! + 1 && present[j] === present[i]) j++;
    out.push({ vaddr: BigInt(pages[i]!) * BigInt(pageSize), nrPages: j - i, flags: present[i] ? PE_PRESENT : PE_PARENT });
    i = j;
  }
  return out;
}

/** The pagemap of chain level k for one store: its own pages present, every lower level's pages parent. */
function levelEntries(store: TaskPageStore | undefined, k: number, pageSize: number): Entry[] {
  if (!store) return [];
  const levels = store.levels.slice(0, k + 1);
  const total = levels.reduce((n, l) => n + l.pages, 0);
  const own = store.levels[k];
  // Pages of level k keep their file order (ascending); all pages are merged by address.
  const pages = new Float64Array(total);
  const order = new Uint32Array(total);
  let n = 0;
  for (const l of levels) for (let s = l.firstSlot; s < l.firstSlot + l.pages; s++) pages[n++] = store.slotPage(s);
  for (let i = 0; i < total; i++) order[i] = i;
  order.sort((a, b) => pages[a]! - pages[b]!);
  const sorted = new Float64Array(total);
  const present = new Uint8Array(total);
  const ownStart = own ? total - own.pages : total;
  for (let i = 0; i < total; i++) {
    sorted[i] = pages[order[i]!]!;
    present[i] = order[i]! >= ownStart ? 1 : 0;
  }
  return entriesOf(sorted, present, pageSize);
}

async function buildParentChain(
  imagesDir: string,
  chainDir: string,
  manifests: readonly PagesManifest[],
  stores: ReadonlyMap<number, TaskPageStore>,
  pageSize: number,
): Promise<PreparedPages> {
  // Each store's levels become one chain's files: a task named twice would have them moved twice.
  if (new Set(manifests.map((m) => m.task)).size !== manifests.length) throw invalid('two manifests name the same task');
  const pagemaps: { m: PagesManifest; pm: Pagemap; store: TaskPageStore | undefined }[] = [];
  let pages = 0;
  for (const m of manifests) {
    const pm = decodePagemap(await readFile(join(imagesDir, m.pagemapImage)), m.pagemapImage);
    const store = stores.get(m.task);
    pages += checkStoreReferences(m.pagemapImage, pm, m, store).length;
    pagemaps.push({ m, pm, store });
  }
  if (new Set(pagemaps.map((x) => x.pm.pagesId)).size !== pagemaps.length) throw invalid('two pagemaps name the same pages image');

  // The level files are renamed below: their open files are closed first, and verify() reopens them at their new paths.
  for (const { store } of pagemaps) await store?.closeFiles();
  const levels = Math.max(1, ...pagemaps.map((x) => x.store?.levels.length ?? 0));
  for (let k = 0; k < levels; k++) {
    const dir = join(chainDir, `L${k}`);
    await mkdir(dir, { recursive: true });
    if (k > 0) await symlink(`../L${k - 1}`, join(dir, 'parent'));
    for (const [i, { m, store }] of pagemaps.entries()) {
      const pagesId = i + 1;
      await writeFile(join(dir, m.pagemapImage), encodePagemap({ pagesId, entries: levelEntries(store, Math.min(k, (store?.levels.length ?? 1) - 1), pageSize) }));
      const level = store?.levels[k];
      if (level) {
        const moved = join(dir, `pages-${pagesId}.img`);
        await rename(level.path, moved);
        level.path = moved;
      }
      else await writeFile(join(dir, `pages-${pagesId}.img`), Buffer.alloc(0));
    }
  }
  // A store with fewer levels than the chain: its higher levels must still resolve every page downwards.
  for (const [i, { m, store }] of pagemaps.entries()) {
    const own = store?.levels.length ?? 0;
    for (let k = Math.max(own, 1); k < levels; k++) {
      const all = levelEntries(store, own - 1, pageSize).map((e) => ({ ...e, flags: PE_PARENT }));
      await writeFile(join(chainDir, `L${k}`, m.pagemapImage), encodePagemap({ pagesId: i + 1, entries: all }));
    }
  }

  for (const { m, pm } of pagemaps) {
    const entries = pm.entries.map((e) => ({ vaddr: e.vaddr, nrPages: e.nrPages, flags: (e.flags & ~(PE_PRESENT | PE_LAZY)) | PE_PARENT }));
    await writeFile(join(imagesDir, m.pagemapImage), encodePagemap({ pagesId: pm.pagesId, entries }));
    await writeFile(join(imagesDir, `pages-${pm.pagesId}.img`), Buffer.alloc(0), { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'EEXIST') throw invalid(`pages-${pm.pagesId}.img already exists`);
      throw e;
    });
  }
  // Relative: criu opens `parent` from the images dir's fd inside the restored tasks, and a task that had
  // pivot_root'ed (ZDTM's mntns_pivot_root) resolves an absolute link in its own root ("Can't open parent path").
  await symlink(relative(imagesDir, join(chainDir, `L${levels - 1}`)), join(imagesDir, 'parent'));
  return { levels, pages };
}
