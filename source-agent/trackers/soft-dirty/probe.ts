/**
 * Does this kernel track soft-dirty? Answered for real, once per process: on a scratch mapping of the agent, every
 * page written, `clear_refs` on the agent itself, then a scan must report no page dirty, and after writing one page
 * exactly that page. A kernel without CONFIG_MEM_SOFT_DIRTY accepts the clear but never sets bit 55.
 * When PAGEMAP_SCAN is there, the pread decoding must give the same answer.
 */
import { PAGE_SIZE } from '../../../shared/kernel/page-size.js';
import { runsPageCount, type PageRuns, type PagemapMethod } from '../../../shared/kernel/pagemap.js';
import type { Vma } from '../../../shared/kernel/proc-maps.js';
import { mapScratch } from '../../../shared/native/ptrace.js';
import { zeroPagePfn } from '../../../shared/kernel/zero-page.js';
import { SoftDirtyPagemap, clearSoftDirty } from './soft-dirty-pagemap.js';

export type SoftDirtyProbeResult = { ok: true; method: PagemapMethod } | { ok: false; reason: string };

const SCRATCH_PAGES = 16;
const WRITTEN_PAGE = 5;

/** Runs as addresses in hex, as every message about memory gives them: 0x7f…000+16 pages. */
function describe(runs: PageRuns): string {
  return runs.starts.map((s, i) => `0x${(s * PAGE_SIZE).toString(16)}+${runs.counts[i]}`).join(',') || 'none';
}

/** The method that gave the expected answer, or what went wrong (`{ reason }`). */
function check(first: number, method: PagemapMethod | undefined, written: boolean): PagemapMethod | { reason: string } {
  const vma: Vma = { startPage: first, endPage: first + SCRATCH_PAGES, perms: 'rw-p', offset: 0, dev: '00:00', inode: 0, path: '' };
  const pagemap = new SoftDirtyPagemap(process.pid, method, '/proc/self/pagemap');
  try {
    const scan = pagemap.scan([vma]);
    const label = `${scan.method}${written ? ' after writing one page' : ' after clear_refs'}`;
    if (runsPageCount(scan.present) !== SCRATCH_PAGES) return { reason: `${label}: ${runsPageCount(scan.present)} of ${SCRATCH_PAGES} pages present` };
    if (!written) return runsPageCount(scan.dirty) === 0 ? scan.method : { reason: `${label}: pages ${describe(scan.dirty)} still soft-dirty` };
    const exact = scan.dirty.starts.length === 1 && scan.dirty.starts[0] === first + WRITTEN_PAGE && scan.dirty.counts[0] === 1;
    if (exact) return scan.method;
    if (runsPageCount(scan.dirty) === 0) return { reason: `${label}: no page soft-dirty (the kernel lacks CONFIG_MEM_SOFT_DIRTY)` };
    return { reason: `${label}: pages ${describe(scan.dirty)} soft-dirty, want ${describe({ starts: [first + WRITTEN_PAGE], counts: [1] })}` };
  } finally {
    pagemap.close();
  }
}

function probeOnce(): SoftDirtyProbeResult {
  let scratch: ReturnType<typeof mapScratch> | undefined;
  try {
    // Found now, not in the scan after clear_refs: its own scratch mapping, made then, would merge with ours and
    // give the merged VMA VM_SOFTDIRTY, which pagemap reports on every page of it (all 16 "still soft-dirty").
    zeroPagePfn();
    scratch = mapScratch(SCRATCH_PAGES * PAGE_SIZE);
    const first = Number(scratch.address / BigInt(PAGE_SIZE));
    for (let p = 0; p < SCRATCH_PAGES; p++) scratch.view[p * PAGE_SIZE] = 1;
    if (!clearSoftDirty('self')) return { ok: false, reason: '/proc/self/clear_refs is missing' };
    const clean = check(first, undefined, false);
    if (typeof clean !== 'string') return { ok: false, reason: clean.reason };
    scratch.view[WRITTEN_PAGE * PAGE_SIZE + 7] = 2;
    const one = check(first, undefined, true);
    if (typeof one !== 'string') return { ok: false, reason: one.reason };
    if (one === 'scan') {
      const viaPread = check(first, 'pread', true);
      if (typeof viaPread !== 'string') return { ok: false, reason: `PAGEMAP_SCAN and pagemap disagree: ${viaPread.reason}` };
    }
    return { ok: true, method: one };
  } catch (e) {
    return { ok: false, reason: `soft-dirty probe failed: ${(e as Error).message}` };
  } finally {
    scratch?.unmap();
  }
}

let cached: SoftDirtyProbeResult | undefined;

/** The probe's answer, computed on first use. */
export function probeSoftDirty(): SoftDirtyProbeResult {
  cached ??= probeOnce();
  return cached;
}
