/**
 * Before any restore: the store must hold every page the dump's pagemap names, each in exactly the dumped
 * version (the manifest's hash). Both restores (the image chain, the lazy images) start here.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { PE_LAZY, PE_PRESENT, type Pagemap } from '../shared/criu/pagemap-image.js';
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { bitAt } from '../shared/pages/page-bitmap.js';
import type { TaskPageStore } from './page-store.js';
import type { PagesManifest } from './restore-page-source.js';

const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { phase: 'restore', side: 'dest', detail });

/** The slot of a remote page (post-copy: the dest holds no bytes of it, the store nothing). */
export const NO_SLOT = 0xffff_ffff;

/**
 * Checks that the store holds every page of the dump's pagemap with the dump's hash; returns each manifest
 * index's store slot. Inside the freeze: a page's slot is guessed as the one after the previous page's (the
 * store fills slots in address order), and the hashes of a run of consecutive slots are compared at once.
 * A remote page (m.remote, checked by lazy/remote-pages.ts) is not looked for: its slot is NO_SLOT.
 */
export function checkStoreReferences(name: string, pm: Pagemap, m: PagesManifest, store: TaskPageStore | undefined): Uint32Array {
  const isRemote = (k: number): boolean => bitAt(m.remote, k);
  const total = m.hashes.length / HASH_BYTES;
  if (!Number.isInteger(total)) throw invalid(`${name}: ${m.hashes.length} hash bytes are not whole hashes`);
  const slots = new Uint32Array(total);
  let k = 0;
  let prev = -1;
  for (const e of pm.entries) {
    if ((e.flags & (PE_PRESENT | PE_LAZY)) === 0) {
      // Ferry's dumps are full or lazy; a parent-only entry would come from a dump Ferry did not make.
      throw invalid(`${name}: entry at ${e.vaddr.toString(16)} has flags ${e.flags}, neither present nor lazy`);
    }
    if (k + e.nrPages > total) throw invalid(`${name}: more present pages than the ${total} hashes`);
    for (let p = e.firstPage; p < e.firstPage + e.nrPages; p++, k++) {
      if (isRemote(k)) {
        slots[k] = NO_SLOT;
        continue;
      }
      const slot = store?.index.slotAfter(p, prev);
      if (slot === undefined) {
        throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `task ${m.task} page ${p} was never received` });
      }
      slots[k] = slot;
      prev = slot;
    }
  }
  if (k !== total) throw invalid(`${name}: ${k} present pages but ${total} hashes`);
  // Runs of consecutive slots: their stored hashes lie side by side, as the manifest's do.
  for (let i = 0; i < total; ) {
    if (slots[i] === NO_SLOT) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < total && slots[j] === slots[j - 1]! + 1) j++;
    if (!store!.index.holdsRun(slots[i]!, j - i, m.hashes, i * HASH_BYTES)) {
      for (let q = i; q < j; q++) {
        if (!store!.index.holdsRun(slots[q]!, 1, m.hashes, q * HASH_BYTES)) {
          throw new FerryError('REBUILD_HASH_MISMATCH', { phase: 'restore', side: 'dest', detail: `task ${m.task} page ${store!.slotPage(slots[q]!)}: the stored version is not the dumped one` });
        }
      }
    }
    i = j;
  }
  return slots;
}
