import { rmSync } from 'node:fs';
import { it } from 'vitest';
import { createTwoHosts, makeTempDir, runMigrate, startDestAgent } from '../testbed/two-hosts.js';
import { startMemtest } from '../testbed/workloads/memtest.js';

it('one migration, logs', async () => {
  const mib = Number(process.env.MIB ?? 256);
  const stateDir = makeTempDir('ferry-scratch-state-');
  const hosts = await createTwoHosts();
  const dest = await startDestAgent(hosts, { env: { FERRY_LOG_LEVEL: 'debug' } });
  const task = await startMemtest({ name: `scr-${process.pid}`, mib, dirtyMibPerSec: 8, stateDir, netns: hosts.src.netns });
  try {
    const r = await runMigrate(hosts, task.rootPid, dest, { env: { FERRY_LOG_LEVEL: 'debug', FERRY_TEST_FAULTS: '1', FERRY_FAULT: process.env.FAULT ?? '' }, timeoutMs: 60_000, args: (process.env.ARGS ?? '').split(' ').filter(Boolean) });
    if (r.summary) task.adopt(r.summary.restoredPid);
    const s = r.summary!;
    console.log(JSON.stringify({ exit: r.exitCode, downtime: s?.downtimeMs, phases: s?.phases, fillMs: (s as any)?.fillMs, mode: (s as any)?.restoreMode, finalDeltaPages: s?.finalDeltaPages, dump: s?.dumpPages }));
    for (const l of r.stderr.split('\n')) if (/final delta|restored|rebuild|fill|lazy|pager|tracker|commit/i.test(l)) console.log('SRC', l.slice(0, 400));
    for (const l of dest.stderr().split('\n')) if (/restored|fill|pager|committed|rebuild|lazy images/i.test(l)) console.log('DST', l.slice(0, 400));
    if (r.summary) console.log('verify', JSON.stringify(await task.verify(r.summary.restoredPid)));
  } finally {
    await task.stop();
    await dest.stop();
    await hosts.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  }
}, 200_000);
