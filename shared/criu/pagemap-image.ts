/**
 * `pagemap-PID.img`: which pages of a task's memory CRIU dumped, and where their data lies.
 * Records: one pagemap_head, then pagemap_entry records. Field numbers (CRIU images/pagemap.proto,
 * checked on CRIU 4.2.1 dumps):
 *   head:  pages_id = 1 (uint32): the data is in `pages-<pages_id>.img`
 *   entry: vaddr = 1 (uint64), compat_nr_pages = 2 (uint32), in_parent = 3 (bool, old dumps),
 *          flags = 4 (uint32), nr_pages = 5 (uint64, CRIU >= 4.2)
 * CRIU 4.2 writes compat_nr_pages = 0 and the real count in field 5; older CRIU writes only field 2.
 * The data of every PE_PRESENT entry lies in pages-<pages_id>.img, back to back, in entry order.
 *
 * The decoder is strict, because the dest reads pagemaps a peer sent: entries must ascend without
 * overlapping (CRIU writes them so, and both the final delta and the parent chain rely on the order), and
 * their flags must be one of the sets CRIU writes. Anything else is IMAGE_INVALID.
 */
import { CRIU_MAGIC, decodingImage, imageError, iterateImageOf, writeImage } from './image-file.js';
import { WireReader, WireWriter } from './protobuf-wire.js';

export const PAGE_SIZE = 4096;
const PAGE_SIZE_BIG = 4096n;
const ADDRESS_LIMIT = 2n ** 64n;

/** Pages are in the parent dump (pre-dump chains). */
export const PE_PARENT = 1;
/** Pages may be served lazily (set by CRIU on private anonymous memory even without --lazy-pages). */
export const PE_LAZY = 2;
/** Pages have data in pages-<pages_id>.img. */
export const PE_PRESENT = 4;

/**
 * The flag sets CRIU writes (criu/page-xfer.c): data here, lazy without data, lazy with data, in the parent
 * (always alone). Unknown bits, no flag at all, or PARENT with another flag would leave it unclear where a
 * page's data is, and CRIU and Ferry could read the same image differently.
 */
const VALID_FLAGS: ReadonlySet<number> = new Set([PE_PRESENT, PE_LAZY, PE_LAZY | PE_PRESENT, PE_PARENT]);

/**
 * No real task has more entries (vm.max_map_count is 65530 by default, and an entry never spans two VMAs);
 * refused before a peer's image costs the dest memory.
 */
export const MAX_PAGEMAP_ENTRIES = 1 << 22;

export interface PagemapEntry {
  vaddr: bigint;
  /** vaddr / 4096: exact as a number for any 64-bit address. */
  firstPage: number;
  nrPages: number;
  flags: number;
}

export interface Pagemap {
  pagesId: number;
  entries: PagemapEntry[];
}

export function isPresent(e: Pick<PagemapEntry, 'flags'>): boolean {
  return (e.flags & PE_PRESENT) !== 0;
}

/** Decodes a pagemap image. `image` names the file in errors. */
export function decodePagemap(buf: Buffer, image = 'pagemap.img'): Pagemap {
  const records = iterateImageOf(buf, 'PAGEMAP', image);
  return decodingImage(image, () => {
    const head = records.next();
    if (head.done) throw imageError(image, 'no pagemap head record');
    const pagesId = decodeHead(head.value, image);
    const entries: PagemapEntry[] = [];
    let end = 0n;
    for (const record of records) {
      const where = `${image} entry ${entries.length}`;
      if (entries.length === MAX_PAGEMAP_ENTRIES) throw imageError(image, `more than ${MAX_PAGEMAP_ENTRIES} entries`);
      const e = decodeEntry(record, where);
      if (e.vaddr < end) {
        throw imageError(where, `entry at 0x${e.vaddr.toString(16)} overlaps or precedes the entry before it, which ends at 0x${end.toString(16)}`);
      }
      end = e.vaddr + BigInt(e.nrPages) * PAGE_SIZE_BIG;
      entries.push(e);
    }
    return { pagesId, entries };
  });
}

function decodeHead(buf: Uint8Array, image: string): number {
  const r = new WireReader(buf);
  let pagesId: number | undefined;
  while (!r.done) {
    const t = r.tag();
    if (t.field === 1) pagesId = r.uint32(t.wireType);
    else r.skip(t.wireType);
  }
  if (pagesId === undefined) throw imageError(image, 'pagemap head without pages_id');
  return pagesId;
}

function decodeEntry(buf: Uint8Array, where: string): PagemapEntry {
  const r = new WireReader(buf);
  let vaddr: bigint | undefined;
  let compatNrPages: number | undefined;
  let nrPages: number | undefined;
  let inParent = false;
  let flags: number | undefined;
  while (!r.done) {
    const t = r.tag();
    switch (t.field) {
      case 1:
        vaddr = r.uint64Big(t.wireType);
        break;
      case 2:
        compatNrPages = r.uint32(t.wireType);
        break;
      case 3:
        inParent = r.bool(t.wireType);
        break;
      case 4:
        flags = r.uint32(t.wireType);
        break;
      case 5:
        nrPages = r.uint64(t.wireType);
        break;
      default:
        r.skip(t.wireType);
    }
  }
  if (vaddr === undefined) throw imageError(where, 'entry without vaddr');
  const count = nrPages ?? compatNrPages;
  if (count === undefined) throw imageError(where, 'entry without nr_pages');
  if (count === 0) throw imageError(where, `entry at 0x${vaddr.toString(16)} has 0 pages`);
  if (vaddr % PAGE_SIZE_BIG !== 0n) throw imageError(where, `vaddr 0x${vaddr.toString(16)} is not page aligned`);
  if (vaddr + BigInt(count) * PAGE_SIZE_BIG > ADDRESS_LIMIT) {
    throw imageError(where, `entry 0x${vaddr.toString(16)} + ${count} pages runs past the 64-bit address space`);
  }
  // As CRIU does for images written before field 4 existed: in_parent means PARENT, otherwise PRESENT.
  let effective = flags ?? 0;
  if (inParent) effective |= PE_PARENT;
  else if (flags === undefined) effective = PE_PRESENT;
  if (!VALID_FLAGS.has(effective)) {
    throw imageError(where, `entry at 0x${vaddr.toString(16)} has flags 0x${effective.toString(16)}; CRIU writes PRESENT, LAZY, LAZY|PRESENT or PARENT`);
  }
  return { vaddr, firstPage: Number(vaddr / PAGE_SIZE_BIG), nrPages: count, flags: effective };
}

export interface EncodePagemapOptions {
  /**
   * Write the page count the way CRIU < 4.2 does (field 2 only). By default it is written as CRIU 4.2
   * does: compat_nr_pages = 0 and nr_pages (field 5), byte for byte what CRIU 4.2.1 produces.
   */
  legacyNrPages?: boolean;
}

/** Encodes a pagemap image (for tests, and for the dest if it ever rewrites a pagemap). */
export function encodePagemap(pm: { pagesId: number; entries: readonly Pick<PagemapEntry, 'vaddr' | 'nrPages' | 'flags'>[] }, opts: EncodePagemapOptions = {}): Buffer {
  const records: Buffer[] = [new WireWriter().uint(1, pm.pagesId).finish()];
  for (const e of pm.entries) {
    const w = new WireWriter().uint(1, e.vaddr);
    if (opts.legacyNrPages) {
      if (e.nrPages > 0xffff_ffff) throw new RangeError(`${e.nrPages} pages do not fit the legacy uint32 count`);
      w.uint(2, e.nrPages).uint(4, e.flags);
    } else {
      w.uint(2, 0).uint(4, e.flags).uint(5, e.nrPages);
    }
    records.push(w.finish());
  }
  return writeImage(CRIU_MAGIC.PAGEMAP, records);
}

/** Number of pages that have data in pages-<pagesId>.img. */
export function presentPageCount(pm: Pagemap): number {
  let n = 0;
  for (const e of pm.entries) if (isPresent(e)) n += e.nrPages;
  return n;
}

export interface PresentRange {
  vaddr: bigint;
  firstPage: number;
  nrPages: number;
  /** Byte offset of this range's data in pages-<pagesId>.img. */
  offset: number;
}

/** The PRESENT entries in pagemap order, with where each one's data starts in the pages image. */
export function* presentRanges(pm: Pagemap): Generator<PresentRange> {
  let offset = 0;
  for (const e of pm.entries) {
    if (!isPresent(e)) continue;
    yield { vaddr: e.vaddr, firstPage: e.firstPage, nrPages: e.nrPages, offset };
    offset += e.nrPages * PAGE_SIZE;
  }
}

/**
 * CRIU checks nothing about pages-N.img: a short file makes restore spin for ever. So check that its
 * size is exactly the PRESENT pages times 4096 (IMAGE_INVALID otherwise).
 */
export function checkPagesImageSize(pm: Pagemap, size: number | bigint, image = `pages-${pm.pagesId}.img`): void {
  const pages = presentPageCount(pm);
  const expected = BigInt(pages) * PAGE_SIZE_BIG;
  if (BigInt(size) !== expected) {
    throw imageError(image, `${size} bytes, but the pagemap has ${pages} present pages (${expected} bytes)`);
  }
}
