/**
 * Can this host track writes with userfaultfd WP_ASYNC + PAGEMAP_SCAN? Answered for real, once per process:
 * the agent creates a uffd on a scratch mapping of its own, registers it, and checks that the first scan
 * reports every present page, a second scan none, and a scan after one write exactly that page.
 */
import { PAGE_SIZE } from '../../../shared/kernel/page-size.js';
import { WrittenPagesScanner } from '../../../shared/kernel/pagemap-written.js';
import { emptyRuns, runsPageCount, type PageRuns } from '../../../shared/kernel/pagemap.js';
import {
  O_CLOEXEC,
  O_NONBLOCK,
  UFFD_FEATURE_WP_ASYNC,
  UFFD_FEATURE_WP_UNPOPULATED,
  UFFD_USER_MODE_ONLY,
  uffdApi,
  uffdRegisterWp,
  uffdUnregister,
} from '../../../shared/kernel/userfaultfd.js';
import { closeFd, mapScratch, userfaultfd } from '../../../shared/native/ptrace.js';

export type ProbeResult = { ok: true } | { ok: false; reason: string };

export const UFFD_OPEN_FLAGS = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;

let offered: number | undefined;

/** The uffd features this kernel offers (UFFDIO_API with none asked, on a uffd of the agent's own). */
export function offeredUffdFeatures(): number {
  if (offered !== undefined) return offered;
  const fd = userfaultfd(UFFD_OPEN_FLAGS);
  try {
    offered = uffdApi(fd, 0);
  } finally {
    closeFd(fd);
  }
  return offered;
}

/** The features the tracker asks for: WP_ASYNC, and WP_UNPOPULATED when offered (WP_ASYNC implies it). */
export function wantedUffdFeatures(): number {
  return UFFD_FEATURE_WP_ASYNC | (offeredUffdFeatures() & UFFD_FEATURE_WP_UNPOPULATED);
}

const SCRATCH_PAGES = 16;
const WRITTEN_PAGE = 5;

function describe(runs: PageRuns): string {
  return runs.starts.map((s, i) => `${s}+${runs.counts[i]}`).join(',') || 'none';
}

function probeOnce(): ProbeResult {
  if (process.arch !== 'x64') return { ok: false, reason: `syscall injection is implemented for x86_64 only, not ${process.arch}` };
  let features: number;
  try {
    features = offeredUffdFeatures();
  } catch (e) {
    return { ok: false, reason: `userfaultfd is not available: ${(e as Error).message}` };
  }
  if ((features & UFFD_FEATURE_WP_ASYNC) === 0) {
    return { ok: false, reason: `the kernel offers no UFFD_FEATURE_WP_ASYNC (features 0x${features.toString(16)}; needs Linux >= 6.7)` };
  }
  const scratch = mapScratch(SCRATCH_PAGES * PAGE_SIZE);
  let fd = -1;
  let scanner: WrittenPagesScanner | undefined;
  const first = Number(scratch.address / BigInt(PAGE_SIZE));
  try {
    for (let p = 0; p < SCRATCH_PAGES; p++) scratch.view[p * PAGE_SIZE] = 1;
    fd = userfaultfd(UFFD_OPEN_FLAGS);
    uffdApi(fd, wantedUffdFeatures());
    uffdRegisterWp(fd, first, first + SCRATCH_PAGES);
    scanner = new WrittenPagesScanner(process.pid, '/proc/self/pagemap');
    const arming = emptyRuns();
    scanner.scan(first, first + SCRATCH_PAGES, arming);
    if (runsPageCount(arming) !== SCRATCH_PAGES) {
      return { ok: false, reason: `the first PAGEMAP_SCAN reported ${runsPageCount(arming)} of ${SCRATCH_PAGES} present pages` };
    }
    const clean = emptyRuns();
    scanner.scan(first, first + SCRATCH_PAGES, clean);
    if (runsPageCount(clean) !== 0) return { ok: false, reason: `a clean PAGEMAP_SCAN reported pages ${describe(clean)}` };
    scratch.view[WRITTEN_PAGE * PAGE_SIZE + 7] = 2;
    const one = emptyRuns();
    scanner.scan(first, first + SCRATCH_PAGES, one);
    if (one.starts.length !== 1 || one.starts[0] !== first + WRITTEN_PAGE || one.counts[0] !== 1) {
      return { ok: false, reason: `after writing one page PAGEMAP_SCAN reported ${describe(one)}` };
    }
    uffdUnregister(fd, first, first + SCRATCH_PAGES);
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: `uffd-wp probe failed: ${(e as Error).message}` };
  } finally {
    scanner?.close();
    if (fd >= 0) closeFd(fd);
    scratch.unmap();
  }
}

let cached: ProbeResult | undefined;

/** The probe's answer, computed on first use. */
export function probeUffdWp(): ProbeResult {
  cached ??= probeOnce();
  return cached;
}
