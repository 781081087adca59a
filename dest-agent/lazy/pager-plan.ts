/**
 * The pager's plan file (native/pager/ferry-pager.c reads it; the layout is the design's, little-endian):
 *
 *   header (32 B): "FRYPLAN1", u32 version = 1, u32 page_size, u32 n_files, u32 n_tasks, u64 reserved = 0
 *   files:  n_files x { u32 path_len; path (absolute, no NUL) }, then zero padding to 8 bytes
 *   tasks:  n_tasks x { u32 ns_pid; u32 n_ranges; u64 n_pages;
 *                       n_ranges x { u64 start_addr; u64 n_pages; u64 first_index };
 *                       n_pages x { u32 file (0xFFFFFFFF = zero page, 0xFFFFFFFE = remote); u32 flags (bit0
 *                                   confirmed); u64 offset };
 *                       n_pages x 16 B hash (XXH3-128, the layout of hashPages) }
 *
 * A task's pages are its manifest's, in pagemap order (present and lazy entries alike); ranges are the lazy
 * entries split at VMA edges (UFFDIO_COPY must stay inside one VMA), and only their pages are the pager's to
 * fill. A remote page (post-copy: the dest holds no bytes of it) has no place in the store: flags 0, offset and
 * hash ignored, and the pager serves it only from the source's REPLACE. The encoder refuses what the pager would refuse (IMAGE_INVALID: the plan is built from a peer's images
 * and manifest), so a bad plan never reaches it.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { imageError } from '../../shared/criu/image-file.js';
import { vmaCanBeLazy, type MmVma } from '../../shared/criu/mm-image.js';
import { PAGE_SIZE, PE_LAZY, PE_PRESENT, type Pagemap, type PagemapEntry } from '../../shared/criu/pagemap-image.js';
import { PAGE_HASH_BYTES } from '../../shared/native/addon.js';

export const PLAN_MAGIC = 'FRYPLAN1';
export const PLAN_VERSION = 1;
export const PLAN_HEADER_BYTES = 32;
export const MAX_PLAN_FILES = 65536;
export const MAX_PLAN_TASKS = 4096;
/** `file` of a page that was never present: the pager copies zeros (whose hash the plan must carry). */
export const ZERO_PAGE = 'zero' as const;
export const ZERO_FILE = 0xffff_ffff;
/** `file` of a page the dest has no bytes of (post-copy): never confirmed, ready only with its REPLACE. */
export const REMOTE_PAGE = 'remote' as const;
export const REMOTE_FILE = 0xffff_fffe;
const RANGE_BYTES = 24;
const PAGE_RECORD_BYTES = 16;
const PAGE_CONFIRMED = 1;
const MAX_ADDRESS = 2n ** 64n;

export interface PlanRange {
  /** Page-aligned address in the task (a number only when exact). */
  startAddr: bigint | number;
  nPages: number;
  /** Manifest index of the range's first page. */
  firstIndex: number;
}

export interface PlanPage {
  /** Index into PlanInput.files, ZERO_PAGE, or REMOTE_PAGE. */
  file: number | typeof ZERO_PAGE | typeof REMOTE_PAGE;
  /** Byte offset of the page in that file (0 for a zero or remote page). */
  offset: number;
  /** The source read it from the frozen original: the pager may serve it without a CONFIRM. */
  confirmed: boolean;
}

/**
 * The pages of a task as columns, one entry per manifest index (what the dest builds inside the freeze: no
 * object per page). `file` is ZERO_FILE for a zero page, REMOTE_FILE for a remote one.
 */
export interface PlanPageColumns {
  file: Uint32Array;
  offset: Float64Array;
  /** 1 = confirmed. */
  confirmed: Uint8Array;
}

export interface PlanTask {
  /** The pid CRIU sends on lazy-pages.socket: the image pid (pagemap-<nsPid>.img). */
  nsPid: number;
  ranges: readonly PlanRange[];
  /** One per manifest index. */
  pages: readonly PlanPage[] | PlanPageColumns;
  /** PAGE_HASH_BYTES per manifest index. */
  hashes: Uint8Array;
}

export interface PlanInput {
  /** Absolute paths of the store's level files. */
  files: readonly string[];
  tasks: readonly PlanTask[];
  pageSize?: number;
}

function bad(what: string): never {
  throw imageError('pager plan', what);
}

function toBig(v: bigint | number, what: string): bigint {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) bad(`${what}: ${v} is not an exact integer`);
  return BigInt(v);
}

function checkCount(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) bad(`${what}: ${n} is not a count`);
}

/** The object form as columns (the encoder's one shape). */
function columnsOf(pages: readonly PlanPage[] | PlanPageColumns): PlanPageColumns {
  if (!Array.isArray(pages)) return pages as PlanPageColumns;
  const list = pages as readonly PlanPage[];
  const c: PlanPageColumns = { file: new Uint32Array(list.length), offset: new Float64Array(list.length), confirmed: new Uint8Array(list.length) };
  for (const [k, p] of list.entries()) {
    const sentinel = p.file === ZERO_PAGE ? ZERO_FILE : p.file === REMOTE_PAGE ? REMOTE_FILE : undefined;
    if (sentinel === undefined && !(Number.isInteger(p.file) && (p.file as number) >= 0 && (p.file as number) < MAX_PLAN_FILES)) bad(`page ${k}: file ${String(p.file)} is no file index`);
    c.file[k] = sentinel ?? (p.file as number);
    c.offset[k] = sentinel === undefined ? p.offset : 0;
    c.confirmed[k] = p.confirmed ? 1 : 0;
  }
  return c;
}

function pageCount(pages: readonly PlanPage[] | PlanPageColumns): number {
  return Array.isArray(pages) ? pages.length : (pages as PlanPageColumns).file.length;
}

/** Encodes a plan, checking every bound the pager checks. Throws IMAGE_INVALID. */
export function encodePlan(input: PlanInput): Buffer {
  const pageSize = input.pageSize ?? PAGE_SIZE;
  if (input.files.length > MAX_PLAN_FILES) bad(`${input.files.length} files > ${MAX_PLAN_FILES}`);
  if (input.tasks.length > MAX_PLAN_TASKS) bad(`${input.tasks.length} tasks > ${MAX_PLAN_TASKS}`);
  const paths = input.files.map((f, i) => {
    if (!isAbsolute(f) || f.includes('\0')) bad(`file ${i} (${f}) is not an absolute path without NUL`);
    const b = Buffer.from(f, 'utf8');
    if (b.length >= 4096) bad(`file ${i}: path of ${b.length} bytes`);
    return b;
  });
  let size = PLAN_HEADER_BYTES + paths.reduce((n, p) => n + 4 + p.length, 0);
  size = Math.ceil(size / 8) * 8;
  const pids = new Set<number>();
  for (const [ti, t] of input.tasks.entries()) {
    const where = `task ${ti} (pid ${t.nsPid})`;
    if (!Number.isInteger(t.nsPid) || t.nsPid < 1 || t.nsPid > 0x7fff_ffff) bad(`${where}: bad pid`);
    if (pids.has(t.nsPid)) bad(`${where}: pid twice`);
    pids.add(t.nsPid);
    const n = pageCount(t.pages);
    const cols = columnsOf(t.pages);
    if (cols.offset.length !== n || cols.confirmed.length !== n) bad(`${where}: page columns of unequal length`);
    if (t.hashes.byteLength !== n * PAGE_HASH_BYTES) bad(`${where}: ${t.hashes.byteLength} hash bytes for ${n} pages`);
    let prevEnd = 0n;
    const used = new Uint8Array(n);
    for (const [ri, r] of t.ranges.entries()) {
      const start = toBig(r.startAddr, `${where} range ${ri} start`);
      checkCount(r.nPages, `${where} range ${ri} pages`);
      checkCount(r.firstIndex, `${where} range ${ri} first index`);
      if (start % BigInt(pageSize) !== 0n) bad(`${where} range ${ri}: start 0x${start.toString(16)} not page aligned`);
      if (r.nPages === 0 || r.firstIndex + r.nPages > n) bad(`${where} range ${ri}: pages [${r.firstIndex}, +${r.nPages}) outside the manifest's ${n}`);
      const end = start + BigInt(r.nPages) * BigInt(pageSize);
      if (end > MAX_ADDRESS) bad(`${where} range ${ri}: runs past the address space`);
      if (start < prevEnd) bad(`${where} range ${ri}: not ascending`);
      prevEnd = end;
      for (let k = r.firstIndex; k < r.firstIndex + r.nPages; k++) {
        if (used[k]) bad(`${where}: manifest page ${k} in two ranges`);
        used[k] = 1;
      }
    }
    for (let k = 0; k < n; k++) {
      const file = cols.file[k]!;
      if (file === ZERO_FILE) continue;
      if (file === REMOTE_FILE) {
        if (cols.confirmed[k]) bad(`${where} page ${k}: a remote page cannot be confirmed`);
        continue;
      }
      if (file >= input.files.length) bad(`${where} page ${k}: file ${file} of ${input.files.length}`);
      const off = cols.offset[k]!;
      if (!(off >= 0) || !Number.isSafeInteger(off)) bad(`${where} page ${k} offset: ${off} is not a count`);
    }
    size += 16 + t.ranges.length * RANGE_BYTES + n * (PAGE_RECORD_BYTES + PAGE_HASH_BYTES);
  }

  const out = Buffer.alloc(size);
  out.write(PLAN_MAGIC, 0, 'latin1');
  out.writeUInt32LE(PLAN_VERSION, 8);
  out.writeUInt32LE(pageSize, 12);
  out.writeUInt32LE(input.files.length, 16);
  out.writeUInt32LE(input.tasks.length, 20);
  let pos = PLAN_HEADER_BYTES;
  for (const p of paths) {
    pos = out.writeUInt32LE(p.length, pos);
    pos += p.copy(out, pos);
  }
  pos = Math.ceil(pos / 8) * 8;
  for (const t of input.tasks) {
    pos = out.writeUInt32LE(t.nsPid, pos);
    pos = out.writeUInt32LE(t.ranges.length, pos);
    pos = out.writeBigUInt64LE(BigInt(pageCount(t.pages)), pos);
    for (const r of t.ranges) {
      pos = out.writeBigUInt64LE(BigInt(r.startAddr), pos);
      pos = out.writeBigUInt64LE(BigInt(r.nPages), pos);
      pos = out.writeBigUInt64LE(BigInt(r.firstIndex), pos);
    }
    // Page records through a 32-bit view (pos is 8-aligned here, the buffer unpooled): no BigInt per page.
    const cols = columnsOf(t.pages);
    const n = cols.file.length;
    const words = new Uint32Array(out.buffer, out.byteOffset + pos, n * 4);
    for (let k = 0; k < n; k++) {
      const noBytes = cols.file[k] === ZERO_FILE || cols.file[k] === REMOTE_FILE;
      const off = noBytes ? 0 : cols.offset[k]!;
      words[4 * k] = cols.file[k]!;
      words[4 * k + 1] = cols.confirmed[k] ? PAGE_CONFIRMED : 0;
      words[4 * k + 2] = off % 0x1_0000_0000;
      words[4 * k + 3] = Math.floor(off / 0x1_0000_0000);
    }
    pos += n * PAGE_RECORD_BYTES;
    out.set(t.hashes, pos);
    pos += t.hashes.byteLength;
  }
  if (pos !== size) throw new Error(`plan encoder: wrote ${pos} of ${size} bytes`);
  return out;
}

/** Writes the plan beside and renames it into place (mode 0600): the pager never reads a half-written plan. */
export async function writePlanFile(path: string, input: PlanInput): Promise<number> {
  const buf = encodePlan(input);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, buf, { mode: 0o600 });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return buf.length;
}

export interface DecodedPlanTask {
  nsPid: number;
  ranges: { startAddr: bigint; nPages: number; firstIndex: number }[];
  pages: PlanPage[];
  hashes: Buffer;
}

export interface DecodedPlan {
  pageSize: number;
  files: string[];
  tasks: DecodedPlanTask[];
}

/** Decodes a plan (tests, and a restarted agent reading its own plan), with the pager's bounds. IMAGE_INVALID. */
export function decodePlan(buf: Buffer): DecodedPlan {
  const need = (pos: number, n: number, what: string): void => {
    if (n > buf.length - pos) bad(`${what} runs past the end (${buf.length} bytes)`);
  };
  need(0, PLAN_HEADER_BYTES, 'header');
  if (buf.toString('latin1', 0, 8) !== PLAN_MAGIC) bad('bad magic');
  const version = buf.readUInt32LE(8);
  if (version !== PLAN_VERSION) bad(`version ${version}`);
  const pageSize = buf.readUInt32LE(12);
  const nFiles = buf.readUInt32LE(16);
  const nTasks = buf.readUInt32LE(20);
  if (nFiles > MAX_PLAN_FILES || nTasks > MAX_PLAN_TASKS) bad(`${nFiles} files, ${nTasks} tasks`);
  if (buf.readBigUInt64LE(24) !== 0n) bad('reserved field not 0');
  let pos = PLAN_HEADER_BYTES;
  const files: string[] = [];
  for (let i = 0; i < nFiles; i++) {
    need(pos, 4, `file ${i}`);
    const len = buf.readUInt32LE(pos);
    pos += 4;
    need(pos, len, `file ${i} path`);
    files.push(buf.toString('utf8', pos, pos + len));
    pos += len;
  }
  const padded = Math.ceil(pos / 8) * 8;
  need(pos, padded - pos, 'padding');
  pos = padded;
  const tasks: DecodedPlanTask[] = [];
  for (let t = 0; t < nTasks; t++) {
    need(pos, 16, `task ${t}`);
    const nsPid = buf.readUInt32LE(pos);
    const nRanges = buf.readUInt32LE(pos + 4);
    const nPagesBig = buf.readBigUInt64LE(pos + 8);
    pos += 16;
    if (nRanges > (buf.length - pos) / RANGE_BYTES) bad(`task ${t}: ${nRanges} ranges`);
    const ranges: DecodedPlanTask['ranges'] = [];
    for (let r = 0; r < nRanges; r++, pos += RANGE_BYTES) {
      const nPages = Number(buf.readBigUInt64LE(pos + 8));
      const firstIndex = Number(buf.readBigUInt64LE(pos + 16));
      if (BigInt(firstIndex) + BigInt(nPages) > nPagesBig || nPages === 0) bad(`task ${t} range ${r}: outside the manifest`);
      ranges.push({ startAddr: buf.readBigUInt64LE(pos), nPages, firstIndex });
    }
    if (nPagesBig > BigInt(Math.floor((buf.length - pos) / (PAGE_RECORD_BYTES + PAGE_HASH_BYTES)))) bad(`task ${t}: ${nPagesBig} pages`);
    const nPages = Number(nPagesBig);
    const pages: PlanPage[] = [];
    for (let k = 0; k < nPages; k++, pos += PAGE_RECORD_BYTES) {
      const file = buf.readUInt32LE(pos);
      const flags = buf.readUInt32LE(pos + 4);
      if (file !== ZERO_FILE && file !== REMOTE_FILE && file >= nFiles) bad(`task ${t} page ${k}: file ${file}`);
      if ((flags & ~PAGE_CONFIRMED) !== 0) bad(`task ${t} page ${k}: unknown flags ${flags}`);
      if (file === REMOTE_FILE && flags !== 0) bad(`task ${t} page ${k}: a remote page marked confirmed`);
      const kind = file === ZERO_FILE ? ZERO_PAGE : file === REMOTE_FILE ? REMOTE_PAGE : file;
      pages.push({ file: kind, offset: Number(buf.readBigUInt64LE(pos + 8)), confirmed: (flags & PAGE_CONFIRMED) !== 0 });
    }
    const hashes = buf.subarray(pos, pos + nPages * PAGE_HASH_BYTES);
    pos += nPages * PAGE_HASH_BYTES;
    tasks.push({ nsPid, ranges, pages, hashes });
  }
  if (pos !== buf.length) bad(`${buf.length - pos} bytes after the last task`);
  return { pageSize, files, tasks };
}

/**
 * The lazy ranges of a task: its PE_LAZY pagemap entries, split at the VMA edges of its mm image, with the
 * manifest index of each range's first page (pagemap order, counting every entry's pages). A lazy page outside
 * every VMA, or a lazy entry in a VMA CRIU would not register, is IMAGE_INVALID: the pager could never fill it.
 */
export function planRanges(pagemap: Pick<Pagemap, 'entries'>, vmas: readonly MmVma[], pageSize = PAGE_SIZE): PlanRange[] {
  const ps = BigInt(pageSize);
  const out: PlanRange[] = [];
  let index = 0;
  let v = 0;
  for (const e of pagemap.entries) {
    if ((e.flags & PE_LAZY) !== 0) {
      let start = e.vaddr;
      const end = e.vaddr + BigInt(e.nrPages) * ps;
      let first = index;
      while (start < end) {
        while (v < vmas.length && (vmas[v] as MmVma).end <= start) v++;
        const vma = vmas[v];
        if (!vma || vma.start > start) bad(`lazy page 0x${start.toString(16)} lies in no VMA of the mm image`);
        if (!vmaCanBeLazy(vma)) bad(`lazy page 0x${start.toString(16)} lies in a VMA CRIU does not register with the uffd`);
        const stop = end < vma.end ? end : vma.end;
        const n = Number((stop - start) / ps);
        out.push({ startAddr: start, nPages: n, firstIndex: first });
        first += n;
        start = stop;
      }
    }
    index += e.nrPages;
  }
  return out;
}

/** Pages in a task's manifest: every pagemap entry's, in pagemap order. */
export function manifestPageCount(pagemap: Pick<Pagemap, 'entries'>): number {
  return pagemap.entries.reduce((n, e) => n + e.nrPages, 0);
}

export interface LazyPagemapSplit {
  /** The pagemap entries for the lazy restore: PE_LAZY entries without data, the others as they were. */
  entries: Pick<PagemapEntry, 'vaddr' | 'nrPages' | 'flags'>[];
  /** Manifest index ranges whose data stays in the pages image (PRESENT-only entries), in order. */
  presentOnly: { firstIndex: number; nPages: number }[];
}

/**
 * Rewrites a pagemap for `criu restore --lazy-pages`: every PE_LAZY entry loses PE_PRESENT (its data is the
 * pager's), PRESENT-only entries keep their data, which must then be the whole pages image, in this order.
 */
export function splitLazyPagemap(pagemap: Pick<Pagemap, 'entries'>): LazyPagemapSplit {
  const entries: LazyPagemapSplit['entries'] = [];
  const presentOnly: LazyPagemapSplit['presentOnly'] = [];
  let index = 0;
  for (const e of pagemap.entries) {
    if ((e.flags & PE_LAZY) !== 0) entries.push({ vaddr: e.vaddr, nrPages: e.nrPages, flags: PE_LAZY });
    else {
      entries.push({ vaddr: e.vaddr, nrPages: e.nrPages, flags: e.flags });
      if ((e.flags & PE_PRESENT) !== 0) presentOnly.push({ firstIndex: index, nPages: e.nrPages });
    }
    index += e.nrPages;
  }
  return { entries, presentOnly };
}
