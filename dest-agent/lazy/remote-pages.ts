/**
 * Post-copy's remote pages in a Restore's manifests (`PagesImageManifest.remote`: the dest holds no bytes of
 * them; the pager serves them only from the source's bytes in the fill). Checked before anything is touched,
 * REQUEST_INVALID: only with a lazy restore, a bitmap of ceil(pages/8) bytes (or none), every remote page also
 * unconfirmed, and only inside the PE_LAZY entries of a task's pagemap (CRIU restores the others itself, from
 * bytes the dest must hold).
 */
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { TASK_PAGEMAP } from '../../shared/criu/image-names.js';
import { decodePagemap, PE_LAZY, type Pagemap } from '../../shared/criu/pagemap-image.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import type * as m from '../../shared/transport/messages.js';
import { bitAt } from '../../shared/pages/page-bitmap.js';

const invalid = (detail: string): FerryError => new FerryError('REQUEST_INVALID', { side: 'dest', phase: 'restore', detail });

/** Whether a manifest names any remote page. */
export function hasRemote(man: Pick<m.PagesImageManifest, 'remote'>): boolean {
  return (man.remote ?? Buffer.alloc(0)).some((b) => b !== 0);
}

/** Remote pages of a bitmap. */
export function remoteCount(bits: Uint8Array | undefined): number {
  let n = 0;
  for (const b of bits ?? []) for (let v = b; v !== 0; v &= v - 1) n++;
  return n;
}

/** The checks that need no image: the mode, the bitmap's length, remote within unconfirmed. */
export function checkRemoteBits(manifests: readonly m.PagesImageManifest[], mode: m.RestoreMode | undefined): void {
  for (const man of manifests) {
    const remote = man.remote ?? Buffer.alloc(0);
    if (remote.length === 0) continue;
    const name = man.pagemapImage;
    if (mode !== 'RESTORE_MODE_LAZY') throw invalid(`${name}: remote pages are only for a lazy restore`);
    const pages = Math.floor(man.hashes.length / HASH_BYTES);
    if (remote.length !== Math.ceil(pages / 8)) throw invalid(`${name}: the remote bitmap has ${remote.length} bytes for ${pages} pages`);
    if (pages % 8 !== 0 && remote[remote.length - 1]! >>> (pages % 8) !== 0) throw invalid(`${name}: remote bits past its ${pages} pages`);
    const unconfirmed = man.unconfirmed ?? Buffer.alloc(0);
    for (let i = 0; i < remote.length; i++) {
      if ((remote[i]! & ~(unconfirmed[i] ?? 0)) !== 0) throw invalid(`${name}: a remote page near #${i * 8} is not marked unconfirmed`);
    }
  }
}

/** A remote page outside the PE_LAZY entries of a task pagemap is refused. */
export function checkRemoteInLazyEntries(man: m.PagesImageManifest, pm: Pick<Pagemap, 'entries'>): void {
  if (!hasRemote(man)) return;
  if (!TASK_PAGEMAP.test(man.pagemapImage)) throw invalid(`${man.pagemapImage}: remote pages in a pagemap that is not a task's`);
  let k = 0;
  for (const e of pm.entries) {
    if ((e.flags & PE_LAZY) === 0) {
      for (let i = k; i < k + e.nrPages; i++) {
        if (bitAt(man.remote, i)) throw invalid(`${man.pagemapImage}: page #${i} is remote but CRIU restores it (not a lazy entry)`);
      }
    }
    k += e.nrPages;
  }
}

/** Every check, reading the uploaded pagemaps of the manifests that name remote pages. */
export async function checkRemotePages(imagesDir: string, manifests: readonly m.PagesImageManifest[], mode: m.RestoreMode | undefined): Promise<void> {
  checkRemoteBits(manifests, mode);
  for (const man of manifests) {
    if (!hasRemote(man)) continue;
    checkRemoteInLazyEntries(man, decodePagemap(await readFile(join(imagesDir, man.pagemapImage)), man.pagemapImage));
  }
}
