/**
 * final-delta: the dump's pages that the dest does not hold yet, then every other image verbatim.
 * Each page of every pages-<id>.img is hashed; a page is sent only when the dest's copy (known by hash on the
 * source) differs. The hashes of all dumped pages form the manifest the dest checks its rebuild against.
 */
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { decodePagemap, isPresent } from '../../shared/criu/pagemap-image.js';
import { hashPages, zeroPages } from '../../shared/native/addon.js';
import { HASH_BYTES, PageHashIndex } from '../../shared/pages/page-hash-index.js';
import type { PagesImageManifest } from '../../shared/transport/messages.js';
import { PageBatcher, BATCH_PAGES } from '../page-batcher.js';
import type { PageStream } from './ports.js';

const TASK_PAGEMAP = /^pagemap-(\d+)\.img$/;
/** Non-task pagemaps (shared memory) get keys above every pid; they have no pre-copy, so all pages go now. */
const OTHER_PAGEMAP = /^pagemap-.+\.img$/;
const OTHER_KEY_BASE = 0x80000000;
export const PAGES_IMAGE = /^pages-\d+\.img$/;

export interface FinalDeltaResult {
  manifests: PagesImageManifest[];
  dumpPages: number;
  sentPages: number;
  sentBytes: number;
  zeroPages: number;
}

export async function sendFinalDelta(
  imagesDir: string,
  held: Map<number, PageHashIndex>,
  sender: Pick<PageStream, 'send'>,
  round: number,
  pageSize: number,
): Promise<FinalDeltaResult> {
  const names = (await readdir(imagesDir)).sort();
  const result: FinalDeltaResult = { manifests: [], dumpPages: 0, sentPages: 0, sentBytes: 0, zeroPages: 0 };
  let otherKey = OTHER_KEY_BASE;
  const chunk = Buffer.allocUnsafe(BATCH_PAGES * pageSize);
  const zeros = new Uint8Array(BATCH_PAGES);
  for (const name of names) {
    if (!OTHER_PAGEMAP.test(name)) continue;
    const task = TASK_PAGEMAP.test(name) ? Number(TASK_PAGEMAP.exec(name)![1]) : otherKey++;
    const pagemap = decodePagemap(await readFile(join(imagesDir, name)), name);
    const present = pagemap.entries.filter(isPresent);
    const total = present.reduce((n, e) => n + e.nrPages, 0);
    const pagesPath = join(imagesDir, `pages-${pagemap.pagesId}.img`);
    const size = total === 0 ? 0 : (await stat(pagesPath)).size;
    if (size !== total * pageSize) {
      throw new FerryError('IMAGE_INVALID', { phase: 'final-delta', side: 'source', detail: `${pagesPath}: ${size} bytes for ${total} present pages` });
    }
    const hashes = Buffer.allocUnsafe(total * HASH_BYTES);
    const index = held.get(task) ?? new PageHashIndex();
    held.set(task, index);
    const batcher = new PageBatcher(pageSize, (pages) => sender.send(task, round, pages));
    if (total > 0) {
      const file = await open(pagesPath, 'r');
      try {
        let done = 0;
        // Pages in the file follow the PRESENT entries in order; walk both together, a chunk at a time.
        const pageList = new Float64Array(BATCH_PAGES);
        let inChunk = 0;
        const processChunk = async (): Promise<void> => {
          const { bytesRead } = await file.read(chunk, 0, inChunk * pageSize, done * pageSize);
          if (bytesRead !== inChunk * pageSize) throw new FerryError('IMAGE_INVALID', { phase: 'final-delta', side: 'source', detail: `${pagesPath}: short read` });
          hashPages(chunk, inChunk, pageSize, hashes.subarray(done * HASH_BYTES));
          zeroPages(chunk, inChunk, pageSize, zeros);
          for (let i = 0; i < inChunk; i++) {
            const h = (done + i) * HASH_BYTES;
            if (index.holds(pageList[i]!, hashes, h)) continue;
            await batcher.add(pageList[i]!, hashes, h, chunk, i * pageSize, zeros[i] === 1);
            index.set(pageList[i]!, hashes, h);
          }
          done += inChunk;
          inChunk = 0;
        };
        for (const e of present) {
          for (let p = e.firstPage; p < e.firstPage + e.nrPages; p++) {
            pageList[inChunk++] = p;
            if (inChunk === BATCH_PAGES) await processChunk();
          }
        }
        if (inChunk > 0) await processChunk();
      } finally {
        await file.close();
      }
    }
    await batcher.flush();
    result.manifests.push({ pagemapImage: name, task, hashes });
    result.dumpPages += total;
    result.sentPages += batcher.pages;
    result.sentBytes += batcher.bytes;
    result.zeroPages += batcher.zeroPages;
  }
  return result;
}
