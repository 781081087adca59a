/**
 * The dest's store rate, measured on its own: 1 MiB batches of random pages (hashes made beforehand, as the
 * source sends them) put through the dest's TaskPageStore into a dir on the filesystem the dest agent's
 * sessions live on. put() is what the dest does per batch (every page's hash checked, positioned writev), so
 * bytes / the time of the puts is the rate the data plane must not exceed (`store MB/s`, 10^6 bytes/s).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { TaskPageStore } from '../dest-agent/page-store.js';
import { hashPages } from '../shared/native/addon.js';
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import { BATCH_PAGES, decodePageBatch, PAGE_KIND_DATA, writePageNumber } from '../shared/transport/page-batch.js';
import { runCommand } from './proc.js';

const PAGE_SIZE = 4096;
/** Distinct page contents cycled through (the bytes need not differ across the whole task). */
const POOL_PAGES = 16 * BATCH_PAGES;

export interface StoreRate {
  bytes: number;
  ms: number;
  mbPerSec: number;
  /** The parent dir measured in and its filesystem type (tmpfs, ext4, ...). */
  dir: string;
  fsType: string;
}

export async function measureStoreRate(mib: number, parent: string, signal: AbortSignal): Promise<StoreRate> {
  const fs = await runCommand(['stat', '-f', '-c', '%T', parent], { signal, timeoutMs: 10_000 });
  const pool = randomFillSync(Buffer.allocUnsafe(POOL_PAGES * PAGE_SIZE));
  const poolHashes = Buffer.allocUnsafe(POOL_PAGES * HASH_BYTES);
  hashPages(pool, POOL_PAGES, PAGE_SIZE, poolHashes);
  const dir = await mkdtemp(join(parent, `ferry-bench-store-${process.pid}-`));
  const store = TaskPageStore.create(dir, 1, PAGE_SIZE);
  const scratch = Buffer.allocUnsafe(BATCH_PAGES * HASH_BYTES);
  const batches = Math.ceil((mib * 2 ** 20) / (BATCH_PAGES * PAGE_SIZE));
  let ms = 0;
  try {
    for (let b = 0; b < batches; b++) {
      signal.throwIfAborted();
      const at = (b * BATCH_PAGES) % POOL_PAGES;
      const pageNumbers = Buffer.allocUnsafe(BATCH_PAGES * 8);
      // Ascending addresses from 0x10000 pages up, as a round reads them: one level file.
      for (let i = 0; i < BATCH_PAGES; i++) writePageNumber(pageNumbers, i, 0x10000 + b * BATCH_PAGES + i);
      const batch = decodePageBatch(
        {
          pageNumbers,
          hashes: poolHashes.subarray(at * HASH_BYTES, (at + BATCH_PAGES) * HASH_BYTES),
          kinds: Buffer.alloc(BATCH_PAGES, PAGE_KIND_DATA),
          data: pool.subarray(at * PAGE_SIZE, (at + BATCH_PAGES) * PAGE_SIZE),
        },
        PAGE_SIZE,
      );
      const t0 = performance.now();
      await store.put(batch, scratch);
      ms += performance.now() - t0;
    }
  } finally {
    await store.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
  const bytes = batches * BATCH_PAGES * PAGE_SIZE;
  return { bytes, ms, mbPerSec: bytes / 1e6 / (ms / 1000), dir: parent, fsType: fs.stdout.trim() || 'unknown' };
}
