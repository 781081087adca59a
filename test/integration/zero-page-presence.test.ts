/**
 * Presence counts what CRIU dumps: not the shared zero page (a page only read), not a uffd-wp marker. And the
 * uffd-wp tracker must not put markers in untouched ptes: its write-protecting scan of a whole area did, presence
 * counted them as swapped (ZDTM maps03, a 10 GiB area with 2 pages written, sent the dest ~2.6 million zero
 * pages, FERRY-3008), and CRIU dumps them as pages (ZDTM pthread00's thread stacks, FERRY-3008 in the final
 * delta). A C target: an area of which a few pages are written, some only read, the rest untouched.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { PagemapReader, runsPageCount } from '../../shared/kernel/pagemap.js';
import { readMaps } from '../../shared/kernel/proc-maps.js';
import { zeroPagePfn } from '../../shared/kernel/zero-page.js';
import { UffdWpTracker } from '../../source-agent/trackers/uffd-wp/uffd-wp-tracker.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const AREA_PAGES = 65_536; // 256 MiB
const WRITTEN = 8; // pages 0, 8192, 16384, ...
const READ_ONLY = 4096; // the last 4096 pages are read, never written

const TARGET_C = String.raw`
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
  long ps = 4096, pages = ${AREA_PAGES};
  volatile unsigned char *a = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) return 1;
  madvise((void *)a, pages * ps, MADV_NOHUGEPAGE);
  for (long i = 0; i < ${WRITTEN}; i++) a[i * (pages / ${WRITTEN}) * ps] = 1;
  unsigned sum = 0;
  for (long p = pages - ${READ_ONLY}; p < pages; p++) sum += a[p * ps];
  printf("ready %lx %u\n", (unsigned long)a, sum);
  fflush(stdout);
  pause();
  return 0;
}
`;

const run = canRun('zero-page presence', isRoot(), hasCommand('gcc'));

describe.runIf(run)('presence leaves the zero page out', () => {
  let dir = '';
  let child: ChildProcess | undefined;
  let areaPage = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-zero-page-'));
    writeFileSync(join(dir, 'target.c'), TARGET_C);
    execFileSync('gcc', ['-O1', '-o', join(dir, 'target'), join(dir, 'target.c')]);
    child = spawn(join(dir, 'target'), [], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child!.stdout! });
      const timer = setTimeout(() => reject(new Error('target did not get ready in 10 s')), 10_000);
      rl.once('line', (l) => {
        clearTimeout(timer);
        rl.close();
        resolve(l);
      });
    });
    areaPage = parseInt(/^ready ([0-9a-f]+) /.exec(line)![1]!, 16) / PAGE_SIZE;
  }, 30_000);

  afterAll(() => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  const area = () => readMaps(child!.pid!)!.filter((v) => v.startPage === areaPage);

  it('counts only the written pages, with PAGEMAP_SCAN and with pread (where pfns are visible)', () => {
    expect(area()).toHaveLength(1);
    const scan = new PagemapReader(child!.pid!, { method: 'scan' });
    const pread = new PagemapReader(child!.pid!, { method: 'pread' });
    try {
      expect(runsPageCount(scan.presentRuns(area()))).toBe(WRITTEN);
      const preadPages = runsPageCount(pread.presentRuns(area()));
      if (zeroPagePfn() === undefined) {
        console.info('pagemap hides pfns here: the pread method counts the read-only pages too');
        expect(preadPages).toBe(WRITTEN + READ_ONLY);
      } else expect(preadPages).toBe(WRITTEN);
    } finally {
      scan.close();
      pread.close();
    }
  });

  it('the uffd-wp tracker sends only the written pages and leaves no uffd-wp marker in the untouched ones', async () => {
    if (!canRun('uffd-wp zero-page case', { ok: (await UffdWpTracker.probe()).ok, reason: 'uffd-wp is not available here' })) return;
    const tracker = new UffdWpTracker(PAGE_SIZE);
    const sent: number[] = [];
    try {
      const task = { hostPid: child!.pid!, key: child!.pid! };
      for (let round = 0; round < 2; round++) {
        await tracker.round([task], new Map(), (_t, batch) => {
          for (let i = 0; i < batch.pageNumbers.length / 8; i++) sent.push(batch.pageNumbers.readUInt32LE(i * 8) + batch.pageNumbers.readUInt32LE(i * 8 + 4) * 2 ** 32);
          return Promise.resolve();
        }, AbortSignal.timeout(20_000));
      }
    } finally {
      tracker.close();
    }
    expect(sent.filter((p) => p >= areaPage && p < areaPage + AREA_PAGES)).toHaveLength(WRITTEN);
    // A marker is a swap entry in pagemap (bit 62); CRIU would dump each as a page (ZDTM pthread00's stacks).
    const entries = Buffer.alloc(AREA_PAGES * 8);
    const fd = openSync(`/proc/${child!.pid!}/pagemap`, 'r');
    try {
      readSync(fd, entries, 0, entries.length, areaPage * 8);
    } finally {
      closeSync(fd);
    }
    let swapEntries = 0;
    for (let i = 0; i < AREA_PAGES; i++) if ((entries.readUInt32LE(i * 8 + 4) & 0x40000000) !== 0) swapEntries++;
    expect(swapEntries).toBe(0);
  }, 60_000);
});
