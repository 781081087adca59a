/**
 * Runs inside a two-VM harness guest (deploy/ci/two-vm.sh), whose kernel has soft-dirty: the soft-dirty probe,
 * then the tracker contract against the soft-dirty tracker and, for comparison, the hash tracker.
 *
 *   node .vm/test/vm/soft-dirty-in-vm.js OUT.json      (from /opt/ferry; the target binary is /share/tracker-target)
 *
 * Exits 1 when the probe or any check fails. Compiled by the harness; not part of the vitest suite.
 */
import { writeFileSync } from 'node:fs';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { HashTracker } from '../../source-agent/trackers/hash-tracker.js';
import { SoftDirtyTracker } from '../../source-agent/trackers/soft-dirty/soft-dirty-tracker.js';
import { runTrackerContract, type ContractReport } from '../support/tracker-contract.js';

const out = process.argv[2] ?? '/dev/stdout';
const target = process.env.FERRY_TRACKER_TARGET ?? '/share/tracker-target';
const probe = await SoftDirtyTracker.probe();
const reports: ContractReport[] = [];
if (probe.ok) {
  reports.push(await runTrackerContract(new SoftDirtyTracker(PAGE_SIZE), target));
  reports.push(await runTrackerContract(new HashTracker(PAGE_SIZE), target));
}
const failed = reports.flatMap((r) => r.checks.filter((c) => !c.ok).map((c) => `${r.tracker}: ${c.name}: ${c.detail}`));
writeFileSync(out, `${JSON.stringify({ probe, reports, failed }, null, 2)}\n`);
for (const r of reports) console.log(`${r.tracker}: ${r.checks.filter((c) => c.ok).length}/${r.checks.length} checks; read pages per round ${r.readPages.join(',')}`);
if (!probe.ok) console.error(`soft-dirty probe failed: ${probe.reason}`);
for (const f of failed) console.error(`FAILED ${f}`);
process.exitCode = probe.ok && failed.length === 0 ? 0 : 1;
