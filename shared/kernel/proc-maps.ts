/**
 * /proc/PID/maps: the task's virtual memory areas, with addresses as page numbers.
 *
 * Page numbers (address / PAGE_SIZE) are exact JS numbers: user addresses stay below 2^57, so page numbers stay
 * below 2^45. They are parsed from the hex text without ever holding a full 64-bit address in a double.
 */
import { PAGE_SIZE } from './page-size.js';
import { readProcText } from './proc-status.js';

/** Hex digits dropped from an address before dividing (16^3 = 4096, the smallest page size Linux has). */
const HEX_DIGITS_4K = 3;
const PAGES_PER_4K = PAGE_SIZE / 4096;
/** Pages per 4 GiB: splits a page's byte address into 32-bit words without forming it (it may exceed 2^53). */
const PAGES_PER_4G = 2 ** 32 / PAGE_SIZE;

/** Low 32 bits of the byte address of `page`. */
export function pageAddressLo(page: number): number {
  return (page % PAGES_PER_4G) * PAGE_SIZE;
}

/** High 32 bits of the byte address of `page`. */
export function pageAddressHi(page: number): number {
  return Math.floor(page / PAGES_PER_4G);
}

/** The page holding the byte address hi * 2^32 + lo. */
export function pageOfAddress(lo: number, hi: number): number {
  return hi * PAGES_PER_4G + Math.floor(lo / PAGE_SIZE);
}

export interface Vma {
  /** First page of the area. */
  startPage: number;
  /** Page after the last page of the area (exclusive). */
  endPage: number;
  /** Four letters as in maps, e.g. 'rw-p'; the last is 'p' (private) or 's' (shared). */
  perms: string;
  /** Byte offset into the mapped file; 0 for anonymous areas. */
  offset: number;
  /** Device of the mapped file as 'major:minor' in hex, '00:00' for anonymous areas. */
  dev: string;
  /** Inode of the mapped file, 0 for anonymous areas. */
  inode: number;
  /** File path, a pseudo-path like '[heap]', '[stack]', '[anon:name]', or '' for anonymous memory. */
  path: string;
}

/** Areas whose contents the kernel provides again on restore; pre-copy never reads them. */
const SPECIAL_AREAS = new Set(['[vsyscall]', '[vvar]', '[vvar_vclock]', '[vdso]', '[uprobes]']);

/** Page number of a page-aligned hex address. */
function hexToPage(hex: string): number {
  const high = hex.slice(0, -HEX_DIGITS_4K);
  // At most 13 hex digits (52 bits) remain, so parseInt is exact; the division by a power of two is too.
  return high === '' ? 0 : Math.floor(parseInt(high, 16) / PAGES_PER_4K);
}

/** Parses a hex number that may exceed 2^53 without silently keeping garbage digits: exact up to 2^53. */
function hexToNumber(hex: string): number {
  if (hex.length <= 13) return parseInt(hex, 16);
  return parseInt(hex.slice(0, -8), 16) * 2 ** 32 + parseInt(hex.slice(-8), 16);
}

/** Parses one line of /proc/PID/maps; undefined for a line that is not a mapping. */
export function parseMapsLine(line: string): Vma | undefined {
  // Five space-separated fields, then the path padded with spaces (the path itself may contain spaces).
  const m = /^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) ?\s*(.*)$/.exec(line);
  if (!m) return undefined;
  const [, start = '', end = '', perms = '', offset = '', dev = '', inode = '', path = ''] = m;
  return {
    startPage: hexToPage(start),
    endPage: hexToPage(end),
    perms,
    offset: hexToNumber(offset),
    dev,
    inode: Number(inode),
    path,
  };
}

/** Parses the whole text of /proc/PID/maps; lines that are not mappings are skipped. */
export function parseMaps(text: string): Vma[] {
  const vmas: Vma[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const vma = parseMapsLine(line);
    if (vma) vmas.push(vma);
  }
  return vmas;
}

/** Reads /proc/PID/maps; undefined when the process does not exist (any more). */
export function readMaps(pid: number): Vma[] | undefined {
  const text = readProcText(`/proc/${pid}/maps`);
  return text === undefined ? undefined : parseMaps(text);
}

export function isPrivate(vma: Vma): boolean {
  return vma.perms[3] === 'p';
}

export function isPrivateWritable(vma: Vma): boolean {
  return vma.perms[1] === 'w' && vma.perms[3] === 'p';
}

/** Anonymous memory: no file behind it ('' or a bracketed name such as [heap], [stack], [anon:x]). */
export function isAnonymous(vma: Vma): boolean {
  return vma.inode === 0 && (vma.path === '' || vma.path.startsWith('['));
}

export function isSpecialArea(vma: Vma): boolean {
  return SPECIAL_AREAS.has(vma.path);
}

/**
 * The areas pre-copy reads: those whose pages CRIU dumps as private memory.
 *
 * CRIU dumps every private mapping, file-backed or anonymous and whatever its protection, but only the pages
 * that are present or swapped and not plain page-cache pages of a file (it skips PME_FILE pages of private file
 * mappings: they were never copied-on-write and are restored by mapping the file again). pagemap.ts applies
 * that page rule; this function applies the area rule, with two differences that only move work to the
 * final delta (which dumps whatever CRIU dumps):
 * - [vdso], [vvar], [vvar_vclock], [vsyscall], [uprobes] are left out (CRIU never dumps vvar; the vdso is a
 *   couple of pages and the restore side may replace it);
 * - shared mappings are left out, as CRIU dumps them separately (shmem images, or the file itself).
 * Areas without PROT_READ ('---p' guard gaps, PROT_NONE reservations and data) are in: their pages are read
 * through /proc/PID/mem (ProcessMemoryReader's fallback). A first try (issue 13) sent an untouched PROT_NONE
 * reservation as zero pages, so post-copy lost its remote pages: that was the uffd-wp tracker's whole-area scan
 * putting a marker in every untouched pte and presence counting markers (pagemap.ts), since fixed.
 */
export function dumpableVmas(vmas: readonly Vma[]): Vma[] {
  return vmas.filter((v) => isPrivate(v) && !isSpecialArea(v) && v.endPage > v.startPage);
}
