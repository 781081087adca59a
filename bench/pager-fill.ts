/**
 * The pager's fill rate (`npm run bench:pager-fill`): memtest at 256 MiB and 1 GiB, one normal dump each, then
 * lazy restores from it with every page confirmed and the copy left stopped, so the fill is the pager alone
 * (UFFDIO_COPY into fresh pages of the task, hash check included). 1 and 2 fill threads, interleaved, REPS times.
 * GB/s = filledPages * 4096 / fillUs (from criu's RSTF to the last page). Prints a table; the VM's fresh-page
 * faulting varies run to run, so compare within a run. BENCH_PAGER_REMOTE=1 (post-copy): every lazy page is
 * remote in the plan and this process sends them all as REPLACE over the control socket, as the dest agent
 * would (1024 pages a call, 64 a frame); the rate is then remote bytes over the time from the first REPLACE
 * to the pager's exit (socket, spill file, UFFDIO_COPY).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readPagerStatus } from '../dest-agent/lazy/pager-process.js';
import { connectPager, type PagerControl } from '../dest-agent/lazy/pager-control.js';
import {
  dumpForLazy,
  lazyRestore,
  pagerSessionPaths,
  prepareLazyImages,
  readStorePages,
  startTestPager,
  waitDead,
  writeLazyPlan,
  type LazyImages,
  type LazyTaskImages,
  type PagerSessionPaths,
} from '../testbed/pager-restore.js';
import { processStartTime } from '../testbed/process-probes.js';
import { criuPath } from '../testbed/requirements.js';
import { makeTempDir } from '../testbed/temp-dirs.js';
import { startMemtest } from '../testbed/workloads/memtest.js';

const SIZES_MIB = (process.env.BENCH_PAGER_MIB ?? '256,1024').split(',').map(Number);
const REPS = Number(process.env.BENCH_PAGER_REPS ?? 3);
const THREADS = [1, 2];
const REMOTE = process.env.BENCH_PAGER_REMOTE === '1';

/** Answers the pager's wants with the store's bytes (criu's restorer faults on a page or two before RSTF). */
async function connectReplacing(lazy: LazyImages, s: PagerSessionPaths): Promise<PagerControl> {
  const c = await connectPager(s.controlPath);
  c.on('want', (w) => {
    const t = lazy.tasks.find((x) => x.nsPid === w.task);
    if (t) c.replace(w.task, w.index, readStorePages(t.storeFile, w.index, w.count)).catch(() => undefined);
  });
  return c;
}

/** Sends every remote page of every task as REPLACE; resolves when the last is written. */
async function replaceAll(lazy: LazyImages, c: PagerControl): Promise<number> {
  let pages = 0;
  for (const t of lazy.tasks) {
    for (const r of t.ranges) {
      for (let k = r.firstIndex; k < r.firstIndex + r.nPages; k += 1024) {
        const n = Math.min(1024, r.firstIndex + r.nPages - k);
        await c.replace(t.nsPid, k, readStorePages(t.storeFile, k, n));
        pages += n;
      }
    }
  }
  return pages;
}

async function main(): Promise<void> {
  const criu = criuPath();
  if (!criu) throw new Error('no usable CRIU (scripts/provision-criu.sh)');
  const root = makeTempDir('ferry-pager-fill-');
  const rows: string[] = [];
  try {
    for (const mib of SIZES_MIB) {
      const dir = join(root, `m${mib}`);
      mkdirSync(join(dir, 'images'), { recursive: true });
      mkdirSync(join(dir, 'store'));
      const m = await startMemtest({ name: `fill${mib}`, mib, dirtyMibPerSec: 0, stateDir: join(dir, 'state') });
      try {
        await dumpForLazy(criu, m.rootPid, join(dir, 'images'));
        const start = processStartTime(m.rootPid);
        process.kill(m.rootPid, 'SIGKILL');
        await waitDead(m.rootPid, start, 15_000);
        const lazy = await prepareLazyImages(join(dir, 'images'), join(dir, 'store'));
        let run = 0;
        for (let rep = 0; rep < REPS; rep++) {
          const order = rep % 2 === 0 ? THREADS : [...THREADS].reverse();
          for (const threads of order) {
            const s = pagerSessionPaths(join(dir, `run-${run++}`));
            mkdirSync(s.dir);
            const inRange = (t: LazyTaskImages, k: number): boolean => t.ranges.some((r) => k >= r.firstIndex && k < r.firstIndex + r.nPages);
            await writeLazyPlan(lazy, s.planFile, REMOTE ? { remote: inRange } : {});
            const pager = await startTestPager(lazy, s, threads);
            const control = REMOTE ? await connectReplacing(lazy, s) : undefined;
            const restored = await lazyRestore(criu, lazy, s);
            const restoredStart = processStartTime(restored);
            const t0 = performance.now();
            const replaced = control ? await replaceAll(lazy, control) : 0;
            // A live timer, not an unref'd one: the pager child is unref'd and would leave the loop empty.
            let timer: NodeJS.Timeout | undefined;
            const exit = await Promise.race([pager.exited, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('pager did not exit in 300 s')), 300_000)))]);
            clearTimeout(timer);
            const wallMs = performance.now() - t0;
            control?.close();
            const st = await readPagerStatus(s.statusFile);
            process.kill(restored, 'SIGKILL');
            await waitDead(restored, restoredStart, 15_000);
            if (exit.code !== 0 || st?.state !== 'filled') throw new Error(`pager exit ${JSON.stringify(exit)}, status ${JSON.stringify(st)}`);
            const gbs = REMOTE ? (replaced * 4096) / (wallMs * 1e6) : (st.filledPages * 4096) / (st.fillUs * 1000);
            const took = REMOTE ? wallMs : st.fillUs / 1000;
            const row = `| ${mib} MiB | ${threads} | ${rep + 1} | ${st.filledPages}${REMOTE ? ` (${st.remotePages} remote)` : ''} | ${took.toFixed(1)} ms | ${gbs.toFixed(2)} GB/s |`;
            console.log(row);
            rows.push(row);
            rmSync(s.dir, { recursive: true, force: true });
          }
        }
      } finally {
        await m.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  console.log(['', '| size | threads | rep | pages | fill | rate |', '|---|---|---|---|---|---|', ...rows].join('\n'));
}

await main();
