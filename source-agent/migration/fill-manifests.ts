/**
 * The manifests a lazy restore's fill works from, kept beside the journal as `<journalDir>/<id>.manifests` from
 * before the Commit until the journal says done: a resolver (after this agent died) runs the fill again from
 * them against the frozen original, without the images dir (which goes with its agent).
 *
 * Binary, little-endian, bounded (a file that breaks a bound is refused as JOURNAL_UNREADABLE):
 *   header  char[8] "FRYFILL1"; u32 version = 2; u32 n_tasks; u32 page_size; u32 reserved
 *   task    u32 task (the images' key); u32 host_pid; u32 n_runs; u32 reserved; u64 n_pages
 *           n_runs x { u64 first_page; u64 count }   (the pagemap's entries: manifest index order)
 *           n_pages x 16 bytes of hash; ceil(n_pages / 8) bytes of the unconfirmed bitmap (LSB first)
 *           version 2: ceil(n_pages / 8) bytes of the remote bitmap (post-copy: the dest has no bytes of these)
 * Version 1 files (from before post-copy) are still read: they have no remote pages.
 */
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import type { PageRuns } from '../../shared/kernel/pagemap.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';

export interface FillManifest {
  /** The images' key of the task (its pid in the root's pid namespace). */
  task: number;
  /** The frozen original's process that holds these pages. */
  hostPid: number;
  /** The pagemap's entries: page i of the manifest is the i-th page of these runs. */
  runs: PageRuns;
  /** XXH3-128 per page, manifest order. */
  hashes: Buffer;
  /** One bit per page, LSB first: 1 = to confirm against the original. Empty: all confirmed. */
  unconfirmed: Buffer;
  /** Post-copy: one bit per page, LSB first: 1 = the dest has no bytes of it (always sent as bytes). Empty: none. */
  remote: Buffer;
}

const MAGIC = 'FRYFILL1';
const VERSION = 2;
const HEADER = 24;
const TASK_HEADER = 24;
/** 64 GiB of 4 KiB pages' hashes with room: a bigger file is not one of ours. */
export const MAX_FILL_MANIFESTS_BYTES = 512 * 1024 * 1024;
const MAX_TASKS = 65_536;

export function fillManifestsPath(journalDir: string, migrationId: string): string {
  return join(journalDir, `${migrationId}.manifests`);
}

export function encodeFillManifests(manifests: readonly FillManifest[], pageSize: number): Buffer {
  const pagesOf = (m: FillManifest): number => m.hashes.length / HASH_BYTES;
  const size = manifests.reduce((n, m) => n + TASK_HEADER + m.runs.starts.length * 16 + m.hashes.length + 2 * Math.ceil(pagesOf(m) / 8), HEADER);
  const b = Buffer.alloc(size);
  b.write(MAGIC, 0, 'latin1');
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(manifests.length, 12);
  b.writeUInt32LE(pageSize, 16);
  let o = HEADER;
  for (const m of manifests) {
    const n = pagesOf(m);
    b.writeUInt32LE(m.task, o);
    b.writeUInt32LE(m.hostPid, o + 4);
    b.writeUInt32LE(m.runs.starts.length, o + 8);
    b.writeBigUInt64LE(BigInt(n), o + 16);
    o += TASK_HEADER;
    for (let i = 0; i < m.runs.starts.length; i++, o += 16) {
      b.writeBigUInt64LE(BigInt(m.runs.starts[i]!), o);
      b.writeBigUInt64LE(BigInt(m.runs.counts[i]!), o + 8);
    }
    o += m.hashes.copy(b, o);
    m.unconfirmed.copy(b, o, 0, Math.min(m.unconfirmed.length, Math.ceil(n / 8)));
    o += Math.ceil(n / 8);
    m.remote.copy(b, o, 0, Math.min(m.remote.length, Math.ceil(n / 8)));
    o += Math.ceil(n / 8);
  }
  return b;
}

export function decodeFillManifests(b: Buffer, where: string): { pageSize: number; manifests: FillManifest[] } {
  const bad = (why: string): never => {
    throw new FerryError('JOURNAL_UNREADABLE', { side: 'source', detail: `${where}: ${why}` });
  };
  const need = (o: number, n: number): void => {
    if (o + n > b.length) bad(`truncated at ${o}`);
  };
  need(0, HEADER);
  if (b.toString('latin1', 0, 8) !== MAGIC) bad('not a fill manifests file');
  const version = b.readUInt32LE(8);
  if (version !== 1 && version !== VERSION) bad(`version ${version}, not 1 or ${VERSION}`);
  const bitmaps = version === 1 ? 1 : 2;
  const nTasks = b.readUInt32LE(12);
  const pageSize = b.readUInt32LE(16);
  if (nTasks > MAX_TASKS) bad(`${nTasks} tasks`);
  let o = HEADER;
  const manifests: FillManifest[] = [];
  for (let t = 0; t < nTasks; t++) {
    need(o, TASK_HEADER);
    const task = b.readUInt32LE(o);
    const hostPid = b.readUInt32LE(o + 4);
    const nRuns = b.readUInt32LE(o + 8);
    const nPages = Number(b.readBigUInt64LE(o + 16));
    o += TASK_HEADER;
    // Every bound before any allocation sized by the file's own numbers.
    need(o, nRuns * 16 + nPages * HASH_BYTES + bitmaps * Math.ceil(nPages / 8));
    const runs: PageRuns = { starts: [], counts: [] };
    let covered = 0;
    for (let i = 0; i < nRuns; i++, o += 16) {
      runs.starts.push(Number(b.readBigUInt64LE(o)));
      const count = Number(b.readBigUInt64LE(o + 8));
      runs.counts.push(count);
      covered += count;
    }
    if (covered !== nPages) bad(`task ${task}: runs cover ${covered} of ${nPages} pages`);
    const hashes = Buffer.from(b.subarray(o, o + nPages * HASH_BYTES));
    o += nPages * HASH_BYTES;
    const unconfirmed = Buffer.from(b.subarray(o, o + Math.ceil(nPages / 8)));
    o += Math.ceil(nPages / 8);
    const remoteBits = bitmaps === 2 ? b.subarray(o, o + Math.ceil(nPages / 8)) : Buffer.alloc(0);
    // All clear is "none", as in the manifest: the fill then checks no bit per page.
    const remote = remoteBits.some((x) => x !== 0) ? Buffer.from(remoteBits) : Buffer.alloc(0);
    o += bitmaps === 2 ? Math.ceil(nPages / 8) : 0;
    manifests.push({ task, hostPid, runs, hashes, unconfirmed, remote });
  }
  if (o !== b.length) bad(`${b.length - o} bytes after the last task`);
  return { pageSize, manifests };
}

/** Writes the file durably (tmp, fsync, rename, fsync of the dir): it must outlive this process. */
export async function saveFillManifests(journalDir: string, migrationId: string, manifests: readonly FillManifest[], pageSize: number): Promise<void> {
  const path = fillManifestsPath(journalDir, migrationId);
  const fh = await open(`${path}.tmp`, 'w', 0o600);
  try {
    await fh.writeFile(encodeFillManifests(manifests, pageSize));
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(`${path}.tmp`, path);
  const d = await open(journalDir, 'r');
  await d.sync().finally(() => d.close());
}

export async function loadFillManifests(journalDir: string, migrationId: string): Promise<{ pageSize: number; manifests: FillManifest[] }> {
  const path = fillManifestsPath(journalDir, migrationId);
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new FerryError('JOURNAL_UNREADABLE', { side: 'source', detail: `${path} is missing: the fill of this lazy restore cannot be run again` });
    throw e;
  });
  if (st.size > MAX_FILL_MANIFESTS_BYTES) throw new FerryError('JOURNAL_UNREADABLE', { side: 'source', detail: `${path}: ${st.size} bytes, more than ${MAX_FILL_MANIFESTS_BYTES}` });
  return decodeFillManifests(await readFile(path), path);
}

export async function removeFillManifests(journalDir: string, migrationId: string): Promise<void> {
  const path = fillManifestsPath(journalDir, migrationId);
  await rm(path, { force: true });
  await rm(`${path}.tmp`, { force: true });
}
