/**
 * A lazy restore served by Ferry's pager, on one host, without the agents: the pager e2e test and the fill
 * benchmark use it. A normal `criu dump --leave-stopped` of a task; its pages-N.img becomes the store (page k of
 * the pagemap's present pages is at k * 4096 of that file, so the level file is the pages image itself); the
 * pagemap is rewritten for the lazy restore (PE_LAZY entries carry no data, PRESENT-only entries keep theirs in a
 * pages image that holds only them); the plan's ranges are the lazy entries split at the VMA edges of mm-N.img,
 * its hashes those of the store's pages.
 */
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { criuDump, criuRestore } from '../shared/criu/criu-runner.js';
import { decodeMmVmas } from '../shared/criu/mm-image.js';
import { decodePagemap, encodePagemap, isPresent, PAGE_SIZE, type Pagemap } from '../shared/criu/pagemap-image.js';
import { hashPages, PAGE_HASH_BYTES } from '../shared/native/addon.js';
import { manifestPageCount, planRanges, REMOTE_PAGE, splitLazyPagemap, writePlanFile, type PlanPage, type PlanRange } from '../dest-agent/lazy/pager-plan.js';
import { pagerBinary, startPager, type StartedPager } from '../dest-agent/lazy/pager-process.js';
import { processStartTime, readPidState } from './process-probes.js';
import { waitFor } from './wait-for.js';

const HASH_CHUNK_PAGES = 16384; // 64 MiB at a time: a 1 GiB store is never read into memory whole

export interface LazyTaskImages {
  nsPid: number;
  pagemap: Pagemap;
  /** Pages of the manifest (every pagemap entry's). */
  nPages: number;
  ranges: PlanRange[];
  /** Pages inside the ranges: what the pager fills. */
  rangePages: number;
  /** The store's level file: the dump's pages image, moved out of the images dir. */
  storeFile: string;
  hashes: Buffer;
}

export interface LazyImages {
  imagesDir: string;
  tasks: LazyTaskImages[];
}

/** `criu dump --leave-stopped` of the tree at rootPid (the caller kills the original afterwards). */
export async function dumpForLazy(criu: string, rootPid: number, imagesDir: string): Promise<void> {
  await criuDump({ criu, pid: rootPid, imagesDir, logFile: join(imagesDir, 'dump.log'), leaveStopped: true, logLevel: 2, timeoutMs: 300_000 });
}

async function hashFile(path: string, nPages: number): Promise<Buffer> {
  const hashes = Buffer.alloc(nPages * PAGE_HASH_BYTES);
  const buf = Buffer.alloc(HASH_CHUNK_PAGES * PAGE_SIZE);
  const fd = openSync(path, 'r');
  try {
    for (let k = 0; k < nPages; k += HASH_CHUNK_PAGES) {
      const n = Math.min(HASH_CHUNK_PAGES, nPages - k);
      const got = readSync(fd, buf, 0, n * PAGE_SIZE, k * PAGE_SIZE);
      if (got !== n * PAGE_SIZE) throw new Error(`${path}: short read at page ${k}`);
      hashPages(buf, n, PAGE_SIZE, hashes.subarray(k * PAGE_HASH_BYTES));
      await new Promise((r) => setImmediate(r));
    }
  } finally {
    closeSync(fd);
  }
  return hashes;
}

/** Reads count pages of a store file from page index `first`. */
export function readStorePages(storeFile: string, first: number, count: number): Buffer {
  const buf = Buffer.alloc(count * PAGE_SIZE);
  const fd = openSync(storeFile, 'r');
  try {
    const got = readSync(fd, buf, 0, buf.length, first * PAGE_SIZE);
    if (got !== buf.length) throw new Error(`${storeFile}: short read at page ${first}`);
  } finally {
    closeSync(fd);
  }
  return buf;
}

/**
 * Turns a normal dump into a lazy one served from a store in storeDir (see the file comment). Every pagemap entry
 * of a normal dump has data, so manifest index k is page k of the pages image.
 */
export async function prepareLazyImages(imagesDir: string, storeDir: string): Promise<LazyImages> {
  const tasks: LazyTaskImages[] = [];
  for (const name of (await readdir(imagesDir)).sort()) {
    const m = /^pagemap-(\d+)\.img$/.exec(name);
    if (!m) continue;
    const nsPid = Number(m[1]);
    const pagemap = decodePagemap(await readFile(join(imagesDir, name)), name);
    if (!pagemap.entries.every(isPresent)) throw new Error(`${name}: an entry without data; a normal (not lazy) dump is expected`);
    const vmas = decodeMmVmas(await readFile(join(imagesDir, `mm-${nsPid}.img`)), `mm-${nsPid}.img`);
    const nPages = manifestPageCount(pagemap);
    const pagesImage = join(imagesDir, `pages-${pagemap.pagesId}.img`);
    const storeFile = join(storeDir, `level-${nsPid}.pages`);
    await rename(pagesImage, storeFile);
    const hashes = await hashFile(storeFile, nPages);
    const split = splitLazyPagemap(pagemap);
    const kept = split.presentOnly.map((r) => readStorePages(storeFile, r.firstIndex, r.nPages));
    await writeFile(pagesImage, Buffer.concat(kept));
    await writeFile(join(imagesDir, name), encodePagemap({ pagesId: pagemap.pagesId, entries: split.entries }));
    const ranges = planRanges(pagemap, vmas);
    tasks.push({ nsPid, pagemap, nPages, ranges, rangePages: ranges.reduce((n, r) => n + r.nPages, 0), storeFile, hashes });
  }
  if (tasks.length === 0) throw new Error(`${imagesDir}: no pagemap images`);
  return { imagesDir, tasks };
}

export interface PlanChoices {
  /** Which manifest pages the plan marks confirmed (default: all). */
  confirmed?: (task: LazyTaskImages, index: number) => boolean;
  /** Manifest pages whose plan hash is made wrong (a damaged store, as the pager sees it). */
  damaged?: { nsPid: number; index: number }[];
  /** Post-copy: manifest pages the plan gives no bytes of (REMOTE_FILE); only a REPLACE serves them. */
  remote?: (task: LazyTaskImages, index: number) => boolean;
}

export async function writeLazyPlan(lazy: LazyImages, planFile: string, choices: PlanChoices = {}): Promise<void> {
  const confirmed = choices.confirmed ?? (() => true);
  const remote = choices.remote ?? (() => false);
  await writePlanFile(planFile, {
    files: lazy.tasks.map((t) => t.storeFile),
    tasks: lazy.tasks.map((t, fileIndex) => {
      const pages: PlanPage[] = Array.from({ length: t.nPages }, (_, k) =>
        remote(t, k) ? { file: REMOTE_PAGE, offset: 0, confirmed: false } : { file: fileIndex, offset: k * PAGE_SIZE, confirmed: confirmed(t, k) },
      );
      const hashes = Buffer.from(t.hashes);
      for (const d of choices.damaged ?? []) {
        if (d.nsPid !== t.nsPid) continue;
        const at = d.index * PAGE_HASH_BYTES;
        hashes[at] = (hashes[at] as number) ^ 0xff;
      }
      return { nsPid: t.nsPid, ranges: t.ranges, pages, hashes };
    }),
  });
}

export interface PagerSessionPaths {
  dir: string;
  planFile: string;
  controlPath: string;
  statusFile: string;
  pidFile: string;
  logFile: string;
  restoreLog: string;
}

export function pagerSessionPaths(dir: string): PagerSessionPaths {
  return {
    dir,
    planFile: join(dir, 'plan'),
    controlPath: join(dir, 'control.sock'),
    statusFile: join(dir, 'status'),
    pidFile: join(dir, 'restored.pid'),
    logFile: join(dir, 'pager.log'),
    restoreLog: join(dir, 'restore.log'),
  };
}

export function startTestPager(lazy: LazyImages, s: PagerSessionPaths, threads?: number): Promise<StartedPager> {
  return startPager({
    binary: pagerBinary(),
    planFile: s.planFile,
    socketPath: join(lazy.imagesDir, 'lazy-pages.socket'),
    controlPath: s.controlPath,
    statusFile: s.statusFile,
    pidFile: s.pidFile,
    logFile: s.logFile,
    ...(threads === undefined ? {} : { threads }),
  });
}

/** `criu restore -d --lazy-pages --leave-stopped`: the restored root's host pid, the tree stopped. */
export function lazyRestore(criu: string, lazy: LazyImages, s: PagerSessionPaths): Promise<number> {
  return criuRestore({ criu, imagesDir: lazy.imagesDir, logFile: s.restoreLog, pidFile: s.pidFile, timeoutMs: 120_000, extraArgs: ['--lazy-pages'] });
}

/** Waits until hostPid is gone or a zombie (killed, not yet reaped). */
export async function waitDead(hostPid: number, start: string | undefined, timeoutMs: number): Promise<void> {
  await waitFor(
    () => processStartTime(hostPid) !== start || readPidState(hostPid) === 'Z' || readPidState(hostPid) === undefined,
    timeoutMs,
    `pid ${hostPid} to die`,
  );
}
