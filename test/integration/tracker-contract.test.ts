/**
 * The tracker contract (test/support/tracker-contract.ts) against every tracker this host supports. Soft-dirty
 * needs a kernel with CONFIG_MEM_SOFT_DIRTY: where the probe fails it skips here with the probe's reason, and
 * the two-VM harness (`bash deploy/ci/two-vm.sh run`) runs the same contract in a guest that has it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { HashTracker } from '../../source-agent/trackers/hash-tracker.js';
import { SoftDirtyTracker } from '../../source-agent/trackers/soft-dirty/soft-dirty-tracker.js';
import type { DirtyTracker } from '../../source-agent/trackers/tracker.js';
import { UffdWpTracker } from '../../source-agent/trackers/uffd-wp/uffd-wp-tracker.js';
import { buildTrackerTarget, runTrackerContract } from '../support/tracker-contract.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const SOURCE = fileURLToPath(new URL('../../testbed/workloads/tracker-target.c', import.meta.url));
const runnable = canRun('tracker contract', isRoot(), hasCommand('gcc'));

const softDirty = await SoftDirtyTracker.probe();
const uffd = await UffdWpTracker.probe();
const trackers: { name: string; make: () => DirtyTracker; skip: string | undefined }[] = [
  { name: 'hash', make: () => new HashTracker(PAGE_SIZE), skip: undefined },
  { name: 'uffd-wp', make: () => new UffdWpTracker(PAGE_SIZE), skip: uffd.ok ? undefined : uffd.reason },
  { name: 'soft-dirty', make: () => new SoftDirtyTracker(PAGE_SIZE), skip: softDirty.ok ? undefined : softDirty.reason },
];

describe.runIf(runnable)('tracker contract', () => {
  let dir = '';
  let binary = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-contract-'));
    binary = join(dir, 'tracker-target');
    buildTrackerTarget(SOURCE, binary);
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const t of trackers) {
    if (t.skip) console.warn(`SKIP tracker contract for ${t.name}: ${t.skip}`);
    it.skipIf(t.skip !== undefined)(`${t.name}: writes, VMA changes, fork and exit`, async () => {
      const report = await runTrackerContract(t.make(), binary);
      console.log(`contract ${t.name}: read pages per round ${report.readPages.join(',')}; extras outside the region ${report.extras.join(',')}`);
      for (const c of report.checks) expect(c.ok, `${t.name}: ${c.name}: ${c.detail}`).toBe(true);
      expect(report.checks.length).toBeGreaterThanOrEqual(9);
    }, 60_000);
  }
});
