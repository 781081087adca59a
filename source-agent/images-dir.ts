/**
 * The images dir of a migration's dump, under a lease. The dir is `<imagesRoot>/<migrationId>-<12 hex>` (tmpfs
 * by default, so a leaked one holds up to the task's size in RAM); its lease is an flock on
 * `<imagesRoot>/<name>.lease`, outside the dir because everything inside is uploaded to the dest as a CRIU image.
 * The lease is taken before the dir exists and dropped after it is gone, and the kernel drops it when the agent
 * dies: a dir whose lease nobody holds is a killed agent's leftover, which `sweepImagesRoot` removes.
 * Only names made here are ever touched: the sweep goes by lease files of this form, never by dir names alone.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDirectory } from '../shared/kernel/private-dir.js';
import { tryLockFile, type FileLock } from '../shared/kernel/file-lock.js';
import type { Logger } from '../shared/logging/logger.js';

/** A migration id (randomUUID), a dash, 12 random hex digits. */
const IMAGES_DIR_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[0-9a-f]{12}$/;
const LEASE_SUFFIX = '.lease';

export interface ImagesDir {
  readonly dir: string;
  /** Removes the dir, then drops the lease (dropped even when the removal fails: the next sweep retries). */
  release(): Promise<void>;
}

/** Makes a fresh images dir (mode 0700) for this migration and holds its lease. */
export async function createImagesDir(imagesRoot: string, migrationId: string): Promise<ImagesDir> {
  for (;;) {
    const name = `${migrationId}-${randomBytes(6).toString('hex')}`;
    if (!IMAGES_DIR_NAME.test(name)) throw new RangeError(`not a migration id: ${JSON.stringify(migrationId.slice(0, 80))}`);
    const lease = tryLockFile(join(imagesRoot, name + LEASE_SUFFIX));
    if (!lease) continue; // 48 random bits taken: draw again
    const dir = join(imagesRoot, name);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (e) {
      lease.release();
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw e;
    }
    return { dir, release: () => releaseImagesDir(dir, lease) };
  }
}

async function releaseImagesDir(dir: string, lease: FileLock): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
  } finally {
    lease.release();
  }
}

/**
 * Removes every images dir (and lease file) under `imagesRoot` whose lease nobody holds; returns the names
 * removed. Never throws: what it cannot remove is logged and left to the next sweep. A root that is missing
 * holds nothing (and is not made); one that is not private to this agent (see ensurePrivateDirectory) is left alone.
 */
export async function sweepImagesRoot(imagesRoot: string, log: Logger): Promise<string[]> {
  let names: string[];
  try {
    if (!(await lstat(imagesRoot).catch(() => undefined))) return []; // nothing there, and nothing made
    ensurePrivateDirectory(imagesRoot);
    names = await readdir(imagesRoot);
  } catch (e) {
    log.warn('images root not swept', { imagesRoot, error: e instanceof Error ? e.message : String(e) });
    return [];
  }
  const removed: string[] = [];
  for (const leaseName of names) {
    if (!leaseName.endsWith(LEASE_SUFFIX)) continue;
    const name = leaseName.slice(0, -LEASE_SUFFIX.length);
    if (!IMAGES_DIR_NAME.test(name)) continue;
    let lease: FileLock | undefined;
    try {
      lease = tryLockFile(join(imagesRoot, leaseName));
      if (!lease) continue; // held: a live migration's
      const dir = join(imagesRoot, name);
      const st = await lstat(dir).catch(() => undefined);
      // Ferry makes a real directory there; anything else (a symlink put in its place) is not followed.
      if (st?.isDirectory()) await rm(dir, { recursive: true, force: true });
      if (!st || st.isDirectory()) removed.push(name);
    } catch (e) {
      log.warn('leftover images dir not removed', { dir: join(imagesRoot, name), error: e instanceof Error ? e.message : String(e) });
    } finally {
      lease?.release();
    }
  }
  if (removed.length > 0) log.info('removed images dirs that killed agents left', { imagesRoot, dirs: removed });
  return removed;
}
