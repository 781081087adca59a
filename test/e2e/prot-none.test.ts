/**
 * End to end, PROT_NONE memory (issue 13, ZDTM maps04): a task that holds data in an area it made PROT_NONE
 * moves between two network-namespace hosts. process_vm_readv cannot read that area, so pre-copy, the final delta,
 * its read-back check and (lazy restore) the fill read it through /proc/PID/mem; before, the migration failed with
 * MEMORY_READ_FAILED in the final delta. The copy checks itself after the move: it opens the area, checks every page and seals it again.
 */
import { describe, expect, it } from 'vitest';
import { twoHostFixture } from '../support/two-host-fixture.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { describeResult, eventually, hasCriu, runMigrate } from '../../testbed/two-hosts.js';
import { taskCopies } from '../../testbed/task-copies.js';
import { readPidState, startMemtest } from '../../testbed/workloads/memtest.js';
import { probeLazyRestore } from '../../dest-agent/lazy/lazy-restore-support.js';

const SEALED_MIB = 16;
const SEALED_PAGES = (SEALED_MIB * 1024 * 1024) / 4096;

const lazy = await probeLazyRestore();
const runnable =
  canRun('e2e PROT_NONE memory', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare')) &&
  canRun('e2e PROT_NONE memory (CRIU)', hasCriu());

describe.skipIf(!runnable)('a task with data in a PROT_NONE area between two network-namespace hosts', () => {
  const fx = twoHostFixture('ferry-e2e-protnone-');

  const modes: { restore: 'eager' | 'lazy'; args: string[]; skip?: string }[] = [
    { restore: 'eager', args: ['--restore', 'eager'] },
    { restore: 'lazy', args: ['--restore', 'lazy'], ...(!lazy.ok && { skip: lazy.reason }) },
  ];
  for (const mode of modes) {
    it(`keeps its sealed bytes (${mode.restore} restore)`, async (ctx) => {
      if (mode.skip !== undefined) {
        console.log(`skipped: lazy restore is not possible here: ${mode.skip}`);
        ctx.skip();
      }
      const task = await startMemtest({ name: `protnone-${mode.restore}-${process.pid}`, mib: 32, dirtyMibPerSec: 4, sealedMib: SEALED_MIB, stateDir: fx.dir, netns: fx.hosts.src.netns });
      fx.stops.push(() => task.stop());
      expect(await task.verify()).toMatchObject({ sealed_pages: SEALED_PAGES, sealed_bad_pages: 0, bad_pages: 0 });

      const r = await runMigrate(fx.hosts, task.rootPid, fx.dest, { args: mode.args, timeoutMs: 90_000 });
      if (r.summary) task.adopt(r.summary.restoredPid);
      expect(r.exitCode, describeResult(r)).toBe(0);
      const s = r.summary!;
      expect(s.restoreMode).toBe(mode.restore);
      expect(readPidState(s.restoredPid)).toMatch(/^[RSD]$/);
      // The copy opens the sealed area, checks each page against its pattern and seals it again.
      const check = await task.verify(s.restoredPid);
      expect(check).toMatchObject({ host_pid: s.restoredPid, sealed_pages: SEALED_PAGES, sealed_bad_pages: 0, bad_pages: 0, bad_words: 0 });
      await eventually(() => readPidState(task.rootPid) === undefined, 10_000, 'the original to be gone');
      expect(taskCopies(fx.hosts, task.name).map((c) => c.pid)).toEqual([s.restoredPid]);
      // Pre-copy reads areas without PROT_READ too (proc-maps.ts, dumpableVmas; through /proc/PID/mem): the sealed
      // pages, unchanged since, are not read again from the stopped task in the final delta.
      expect(s.presentPages).toBeGreaterThanOrEqual(SEALED_PAGES);
      expect(Number(s.finalDeltaTaskPages)).toBeLessThan(SEALED_PAGES);
      console.log(
        `PROT_NONE ${SEALED_MIB} MiB, ${mode.restore} restore: final delta ${s.finalDeltaPages} of ${s.dumpPages} dumped (${s.finalDeltaTaskPages} read from the stopped task); downtime ${Math.round(s.downtimeMs)} ms; all ${check.pages + check.sealed_pages} pages intact`,
      );
    }, 120_000);
  }
});
