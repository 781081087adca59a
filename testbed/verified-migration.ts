/**
 * One migration of a memtest task through a source-agent daemon to a dest agent in the other host, checked the
 * way the end-to-end tests check a restored copy: exit 0 with a summary; the copy runs (not stopped) in the dest
 * host's network namespace, holds every page and keeps writing; the original is gone; exactly one process
 * carries the task's name; no session dir or open journal on the dest, no images or unresolved journal on the
 * source. The soak repeats it.
 */
import type { MigrationSummary } from '../source-agent/migration/events.js';
import type { DestAgentHandle } from './dest-agent.js';
import { runMigrateVia } from './ferry-migrate.js';
import { describeResult, type FerryResult } from './ferry-process.js';
import { nsInode, pidsWithArgs } from './leftovers.js';
import type { TwoHosts } from './netns-hosts.js';
import { readPidState } from './process-probes.js';
import type { SourceAgentDaemonHandle } from './source-agent-daemon.js';
import { waitFor } from './wait-for.js';
import type { MemtestHandle, VerifyReport } from './workloads/memtest.js';

/** A killed original is reaped by its parent soon after; a restored copy's is the host's init (~2 s here). */
const GONE_MS = 10_000;
/** The dest removes a committed session's dir right after Commit; the source its images after the kill. */
const CLEAN_MS = 5_000;

export interface VerifiedMigrationOptions {
  hosts: TwoHosts;
  task: MemtestHandle;
  /** Host pid of the copy to move (the original, or the copy a previous migration restored). */
  pid: number;
  /** The daemon of the host the copy runs in. */
  via: SourceAgentDaemonHandle;
  /** The dest agent of the other host. */
  dest: DestAgentHandle;
  /** Bound on `ferry migrate`. Default 90 s. */
  timeoutMs?: number;
  /** More flags for `ferry migrate`. */
  args?: string[];
  /** Ends `ferry migrate` (SIGTERM: it rolls back) and every wait. */
  signal?: AbortSignal;
}

export interface VerifiedMigration {
  result: FerryResult;
  summary: MigrationSummary;
  restoredPid: number;
  /** The copy's own check of every page, right after the migration. */
  verify: VerifyReport;
}

export async function migrateVerified(o: VerifiedMigrationOptions): Promise<VerifiedMigration> {
  const { task, pid, dest } = o;
  const result = await runMigrateVia(o.hosts, o.via, pid, dest, { timeoutMs: o.timeoutMs ?? 90_000, args: o.args, signal: o.signal });
  const summary = result.summary;
  // Whatever else fails, the task's stop() must kill the copy too.
  if (summary) task.adopt(summary.restoredPid);
  const fail = (what: string): never => {
    throw new Error(`migration of pid ${pid} from ${o.via.host.name} to ${dest.address}: ${what}\n${describeResult(result)}`);
  };
  if (result.exitCode !== 0 || !summary) fail('did not exit 0 with a summary');
  const copy = summary!.restoredPid;
  if (copy === pid) fail(`the restored pid is the original's (${pid})`);
  const state = readPidState(copy);
  if (!state || !/^[RSD]$/.test(state)) fail(`the copy (pid ${copy}) is in state ${state ?? 'gone'}, not running`);
  if (nsInode(`/proc/${copy}/ns/net`) !== nsInode(dest.host.netns)) fail(`the copy (pid ${copy}) is not in ${dest.host.name}'s network namespace`);
  const verify = await task.verify(copy);
  if (verify.bad_pages !== 0) fail(`the copy has ${verify.bad_pages} bad pages (first ${verify.first_bad_page})`);
  if (task.ready.dirty_mib_per_s > 0) {
    await waitFor(async () => (await task.stats(copy)).writes > verify.writes, 5_000, `the copy (pid ${copy}) to keep writing`, o.signal);
  }
  await waitFor(() => readPidState(pid) === undefined, GONE_MS, `the original (pid ${pid}) to be gone`, o.signal).catch((e: Error) => fail(e.message));
  const carriers = pidsWithArgs('memtest', '--name', task.name);
  if (carriers.length !== 1 || carriers[0] !== copy) fail(`processes carrying --name ${task.name}: ${carriers.join(', ')} (want only ${copy})`);
  let unresolved: string[] = [];
  await waitFor(
    async () => {
      unresolved = await o.via.unresolved();
      return dest.leftovers().length === 0 && o.via.leftovers().length === 0 && unresolved.length === 0;
    },
    CLEAN_MS,
    () =>
      `no session on the dest (${dest.leftovers().join(', ') || 'none'}), no images on the source (${o.via.leftovers().join(', ') || 'none'}) ` +
      `and no unresolved journal on the source (${unresolved.join(', ') || 'none'})`,
    o.signal,
  ).catch((e: Error) => fail(e.message));
  return { result, summary: summary!, restoredPid: copy, verify };
}
