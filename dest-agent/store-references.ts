/**
 * Before any restore: the store must hold every page the dump's pagemap names, each in exactly the dumped
 * version (the manifest's hash). Both restores (the image chain, the lazy images) start here.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { PE_LAZY, PE_PRESENT, type Pagemap } from '../shared/criu/pagemap-image.js';
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import type { TaskPageStore } from './page-store.js';
import type { PagesManifest } from './restore-page-source.js';

const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { phase: 'restore', side: 'dest', detail });

/** Checks that the store holds every page of the dump's pagemap with the dump's hash. */
export function checkStoreReferences(name: string, pm: Pagemap, m: PagesManifest, store: TaskPageStore | undefined): number {
  let k = 0;
  for (const e of pm.entries) {
    if ((e.flags & (PE_PRESENT | PE_LAZY)) === 0) {
      // Ferry's dumps are full or lazy; a parent-only entry would come from a dump Ferry did not make.
      throw invalid(`${name}: entry at ${e.vaddr.toString(16)} has flags ${e.flags}, neither present nor lazy`);
    }
    for (let p = e.firstPage; p < e.firstPage + e.nrPages; p++, k++) {
      if ((k + 1) * HASH_BYTES > m.hashes.length) throw invalid(`${name}: more present pages than the ${m.hashes.length / HASH_BYTES} hashes`);
      if (!store || store.index.slotOf(p) === undefined) {
        throw new FerryError('REBUILD_PAGE_MISSING', { phase: 'restore', side: 'dest', detail: `task ${m.task} page ${p} was never received` });
      }
      if (!store.index.holds(p, m.hashes, k * HASH_BYTES)) {
        throw new FerryError('REBUILD_HASH_MISMATCH', { phase: 'restore', side: 'dest', detail: `task ${m.task} page ${p}: the stored version is not the dumped one` });
      }
    }
  }
  if (k * HASH_BYTES !== m.hashes.length) throw invalid(`${name}: ${k} present pages but ${m.hashes.length / HASH_BYTES} hashes`);
  return k;
}
