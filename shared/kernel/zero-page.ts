/**
 * The pfn of the kernel's shared zero page, as pagemap shows it: an anonymous page that was only read (or that
 * userfaultfd write-protection populated: the uffd-wp tracker's first scan maps every untouched page of a
 * registered area to it) is present in pagemap but holds no data, and CRIU does not dump it (its
 * kdat.zero_page_pfn test). PAGEMAP_SCAN says so itself (PAGE_IS_PFNZERO); the pread method needs the pfn.
 *
 * Its being known also tells that pagemap shows pfns and swap offsets (pagemap.ts uses that to tell uffd-wp
 * markers from swapped pages). Found as CRIU finds it: read one page of a fresh anonymous mapping of this process and look it up in
 * /proc/self/pagemap. Undefined where pfns are hidden (no CAP_SYS_ADMIN: pagemap shows pfn 0) or the page did
 * not come out present; then the pread method cannot tell zero pages and counts them.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { mapScratch } from '../native/ptrace.js';
import { PAGE_SIZE } from './page-size.js';

const PM_PRESENT = 1n << 63n;
const PM_PFN_MASK = (1n << 55n) - 1n;

let cached: { pfn: number | undefined } | undefined;

export function zeroPagePfn(): number | undefined {
  cached ??= { pfn: probeZeroPagePfn() };
  return cached.pfn;
}

function probeZeroPagePfn(): number | undefined {
  let scratch: ReturnType<typeof mapScratch> | undefined;
  let fd = -1;
  try {
    scratch = mapScratch(PAGE_SIZE);
    if (scratch.view[0] !== 0) return undefined; // the read that maps the zero page
    fd = openSync('/proc/self/pagemap', 'r');
    const entry = Buffer.alloc(8);
    if (readSync(fd, entry, 0, 8, Number(scratch.address / BigInt(PAGE_SIZE)) * 8) !== 8) return undefined;
    const e = entry.readBigUInt64LE(0);
    const pfn = Number(e & PM_PFN_MASK);
    return (e & PM_PRESENT) !== 0n && pfn !== 0 ? pfn : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) closeSync(fd);
    scratch?.unmap();
  }
}
