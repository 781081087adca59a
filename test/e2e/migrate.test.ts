/**
 * End to end: a 128 MiB memtest workload dirtying 16 MiB/s moves from the src host to the dst host (two network
 * namespaces) with the compiled `ferry migrate`. The restored copy must hold every page intact, keep running
 * and writing, live in the dst namespace; the original must be gone; the summary must add up; and neither side
 * may keep images or session files.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  eventually,
  hasCriu,
  httpGetIn,
  leftovers,
  makeTempDir,
  metricValue,
  nsInode,
  pidsWithArgs,
  requireBuilt,
  runMigrate,
  startDestAgent,
  type DestAgentHandle,
  type FerryResult,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const MIB = 128;
const DIRTY_MIB_PER_S = 16;
const NAME = `e2e-mig-${process.pid}`;

const runnable =
  canRun('e2e migration', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('tc'), hasCommand('gcc'), hasCommand('unshare')) &&
  canRun('e2e migration (CRIU)', hasCriu());

describe.skipIf(!runnable)('ferry migrate between two network-namespace hosts', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let task: MemtestHandle | undefined;
  let stateDir: string | undefined;
  let imagesRoot: string | undefined;
  let result: FerryResult;

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-state-');
    imagesRoot = makeTempDir('ferry-e2e-images-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts, { metrics: true });
    task = await startMemtest({ name: NAME, mib: MIB, dirtyMibPerSec: DIRTY_MIB_PER_S, stateDir, netns: hosts.src.netns });
    expect((await task.verify()).bad_pages).toBe(0);

    result = await runMigrate(hosts, task.rootPid, dest, { env: { FERRY_IMAGES_DIR: imagesRoot }, timeoutMs: 90_000 });
    // Whatever the outcome, stop() must also kill a restored copy.
    if (result.summary) task.adopt(result.summary.restoredPid);
  }, 120_000);

  afterAll(async () => {
    await task?.stop();
    await dest?.stop();
    await hosts?.destroy();
    for (const d of [stateDir, imagesRoot]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('exits 0 with a summary', () => {
    expect(result.exitCode, describeResult(result)).toBe(0);
    expect(result.summary).toBeDefined();
    const s = result.summary!;
    const p = s.phases;
    const f = (ms: number | undefined): string => `${Math.round(ms ?? 0)} ms`;
    console.log(
      [
        `e2e migration of ${MIB} MiB dirtying ${DIRTY_MIB_PER_S} MiB/s: ${s.rounds.length} rounds (${s.decision})`,
        ...s.rounds.map(
          (r) => `  round ${r.round}: ${r.dirtyPages} dirty of ${r.presentPages} present, ${r.zeroPages} zero, ${r.bytesSent} bytes in ${f(r.durationMs)}`,
        ),
        `  pages sent ${s.pagesSent} (${s.pageBytesSent} bytes) of ${s.presentPages} present; final delta ${s.finalDeltaPages} of ${s.dumpPages} dumped; images ${s.imageBytesSent} bytes`,
        `  total ${f(s.totalMs)}, downtime ${f(s.downtimeMs)} (dump ${f(p.dumpMs)}, final delta ${f(p.finalDeltaMs)}, rebuild ${f(p.rebuildMs)}, restore ${f(p.restoreMs)}, commit ${f(p.commitMs)})`,
        `  migrate process ${result.durationMs} ms wall`,
      ].join('\n'),
    );
  });

  it('reports consistent figures', () => {
    const s = result.summary!;
    expect(s.pid).toBe(task!.rootPid);
    expect(s.dest).toBe(dest!.address);
    expect(s.tasks).toBe(1);
    expect(s.rounds.length).toBeGreaterThanOrEqual(1);
    expect(s.rounds.map((r) => r.round)).toEqual(s.rounds.map((_, i) => i));
    // Round 0 carries at least the workload's own pages.
    expect(s.presentPages).toBeGreaterThanOrEqual((MIB * 1024 * 1024) / 4096);
    expect(s.pagesSent).toBeGreaterThanOrEqual(s.presentPages);
    expect(s.pageBytesSent).toBeGreaterThan(0);
    expect(s.dumpPages).toBeGreaterThan(0);
    expect(s.finalDeltaPages).toBeLessThanOrEqual(s.dumpPages);
    expect(s.imageBytesSent).toBeGreaterThan(0);
    expect(s.downtimeMs).toBeGreaterThan(0);
    expect(s.downtimeMs).toBeLessThan(s.totalMs);
    expect(s.phases.dumpMs).toBeGreaterThan(0);
    expect(s.phases.restoreMs).toBeGreaterThan(0);
  });

  it('emitted every phase in order, then the summary last', () => {
    const phases = result.lines.flatMap((l) => (l.kind === 'phase' ? [l.phase] : []));
    expect(phases).toEqual(['prepare', 'precopy', 'freeze', 'final-delta', 'restore', 'commit', 'fill']);
    expect(result.lines.filter((l) => l.kind === 'round')).toHaveLength(result.summary!.rounds.length);
    expect(result.lines.at(-1)?.kind).toBe('summary');
  });

  it('the restored copy holds every page, keeps writing and lives in the dst namespace', async () => {
    const pid = result.summary!.restoredPid;
    expect(pid).not.toBe(task!.rootPid);
    expect(readPidState(pid)).toMatch(/^[RSD]$/);
    const a = await task!.verify(pid);
    expect(a).toMatchObject({ name: NAME, pid: 1, host_pid: pid, bad_pages: 0, bad_words: 0 });
    await sleep(250);
    const b = await task!.verify(pid);
    expect(b.bad_pages).toBe(0);
    expect(b.writes).toBeGreaterThan(a.writes);
    expect(nsInode(`/proc/${pid}/ns/net`)).toBe(nsInode(hosts!.dst.netns));
    expect(nsInode(`/proc/${pid}/ns/net`)).not.toBe(nsInode(hosts!.src.netns));
  });

  it('the original is gone and only the restored copy runs', async () => {
    const original = task!.rootPid;
    // Killed by the source after the commit; a zombie is reaped by its parent (unshare) soon after.
    await eventually(() => readPidState(original) === undefined, 10_000, `the original (pid ${original}) to be gone`);
    expect(pidsWithArgs('memtest', '--name', NAME)).toEqual([result.summary!.restoredPid]);
  });

  it('leaves no session dir on the dest and no images on the source', () => {
    expect(dest!.leftovers()).toEqual([]);
    expect(leftovers(imagesRoot!)).toEqual([]);
    // The source keeps CRIU's dump log for diagnosis; that is all it keeps.
    expect(leftovers(join(imagesRoot!, 'logs')).every((f) => f.endsWith('.log'))).toBe(true);
  });

  it('the pages went over one mutual-TLS page channel (the default)', () => {
    const opened = dest!
      .stderr()
      .split('\n')
      .filter((l) => l.includes('"page channel open"'))
      .map((l) => JSON.parse(l) as { channel: number; of: number; tls: boolean });
    expect(opened).toEqual([expect.objectContaining({ channel: 0, of: 1, tls: true })]);
  });

  it("the dest agent's /metrics counts the committed session and every page sent", async () => {
    expect(dest!.exited()).toBe(false);
    expect(dest!.metricsPort).toBeGreaterThan(0);
    const text = await httpGetIn(hosts!.dst, `http://${hosts!.dst.address}:${dest!.metricsPort}/metrics`);
    expect(metricValue(text, 'ferry_dest_sessions_total{result="committed"}')).toBe(1);
    expect(metricValue(text, 'ferry_dest_pages_received_total')).toBe(result.summary!.pagesSent);
    expect(metricValue(text, 'ferry_dest_page_bytes_received_total')).toBe(result.summary!.pageBytesSent);
    expect(metricValue(text, 'ferry_dest_restore_duration_seconds_count')).toBe(1);
  });
});

describe.skipIf(!runnable)('stop-and-copy and the plain-dump fallback', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-state-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    for (const t of tasks) await t.stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it.each([
    ['lazy', {}],
    ['full', { FERRY_DUMP: 'full' }],
  ] as const)('--no-precopy with a %s dump: every page travels in the final delta and the copy verifies', async (kind, env) => {
    const task = await startMemtest({ name: `${NAME}-snc-${kind}`, mib: 32, dirtyMibPerSec: 4, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--no-precopy'], env, timeoutMs: 60_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    task.adopt(s.restoredPid);
    expect(s.rounds).toEqual([]);
    expect(s.dumpKind).toBe(kind);
    expect(s.finalDeltaPages).toBe(s.dumpPages);
    expect(s.finalDeltaTaskPages > 0).toBe(kind === 'lazy');
    expect((await task.verify(s.restoredPid)).bad_pages).toBe(0);
    expect(dest!.leftovers()).toEqual([]);
  }, 90_000);

  it.each([
    ['0 (the gRPC page stream)', 0],
    ['3', 3],
  ] as const)('pre-copy with --page-channels %s: the copy verifies', async (_name, channels) => {
    const task = await startMemtest({ name: `${NAME}-pc${channels}`, mib: 32, dirtyMibPerSec: 4, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--page-channels', String(channels)], timeoutMs: 60_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    task.adopt(r.summary!.restoredPid);
    expect(r.summary!.rounds.length).toBeGreaterThanOrEqual(1);
    expect((await task.verify(r.summary!.restoredPid)).bad_pages).toBe(0);
    expect(dest!.leftovers()).toEqual([]);
  }, 90_000);
});
