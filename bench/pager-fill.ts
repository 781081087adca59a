/**
 * The pager's fill rate (`npm run bench:pager-fill`): memtest at 256 MiB and 1 GiB, one normal dump each, then
 * lazy restores from it with every page confirmed and the copy left stopped, so the fill is the pager alone
 * (UFFDIO_COPY into fresh pages of the task, hash check included). 1 and 2 fill threads, interleaved, REPS times.
 * GB/s = filledPages * 4096 / fillUs (from criu's RSTF to the last page). Prints a table; the VM's fresh-page
 * faulting varies run to run, so compare within a run.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readPagerStatus } from '../dest-agent/lazy/pager-process.js';
import { dumpForLazy, lazyRestore, pagerSessionPaths, prepareLazyImages, startTestPager, waitDead, writeLazyPlan } from '../testbed/pager-restore.js';
import { processStartTime } from '../testbed/process-probes.js';
import { criuPath } from '../testbed/requirements.js';
import { makeTempDir } from '../testbed/temp-dirs.js';
import { startMemtest } from '../testbed/workloads/memtest.js';

const SIZES_MIB = (process.env.BENCH_PAGER_MIB ?? '256,1024').split(',').map(Number);
const REPS = Number(process.env.BENCH_PAGER_REPS ?? 3);
const THREADS = [1, 2];

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
            await writeLazyPlan(lazy, s.planFile);
            const pager = await startTestPager(lazy, s, threads);
            const restored = await lazyRestore(criu, lazy, s);
            const restoredStart = processStartTime(restored);
            // A live timer, not an unref'd one: the pager child is unref'd and would leave the loop empty.
            let timer: NodeJS.Timeout | undefined;
            const exit = await Promise.race([pager.exited, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('pager did not exit in 300 s')), 300_000)))]);
            clearTimeout(timer);
            const st = await readPagerStatus(s.statusFile);
            process.kill(restored, 'SIGKILL');
            await waitDead(restored, restoredStart, 15_000);
            if (exit.code !== 0 || st?.state !== 'filled') throw new Error(`pager exit ${JSON.stringify(exit)}, status ${JSON.stringify(st)}`);
            const gbs = (st.filledPages * 4096) / (st.fillUs * 1000);
            const row = `| ${mib} MiB | ${threads} | ${rep + 1} | ${st.filledPages} | ${(st.fillUs / 1000).toFixed(1)} ms | ${gbs.toFixed(2)} GB/s |`;
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
