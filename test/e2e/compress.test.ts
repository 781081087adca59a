/**
 * End to end (issue 15): a heap-like memtest (compressible pages, each still checked by the task itself) moves
 * between the two network-namespace hosts with --compress zstd and with --compress off. Both copies verify every
 * page; zstd sends a fraction of the bytes on the wire and says so per round and in the summary; off sends every
 * byte as it is.
 */
import { describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { describeResult, hasCriu, httpGetIn, metricValue, runMigrate } from '../../testbed/two-hosts.js';
import { startMemtest } from '../../testbed/workloads/memtest.js';
import { twoHostFixture } from '../support/two-host-fixture.js';

const MIB = 64;
const NAME = `e2e-zstd-${process.pid}`;

const runnable =
  canRun('e2e compression', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare')) && canRun('e2e compression (CRIU)', hasCriu());

describe.skipIf(!runnable)('ferry migrate --compress between two network-namespace hosts', () => {
  const f = twoHostFixture('ferry-e2e-state-', undefined, { metrics: true });

  it.each(['zstd', 'off'] as const)('--compress %s: the copy verifies every page, and the summary says what went on the wire', async (mode) => {
    const { hosts, dest, dir } = f;
    const task = await startMemtest({ name: `${NAME}-${mode}`, mib: MIB, dirtyMibPerSec: 4, content: 'objects', stateDir: dir, netns: hosts.src.netns });
    f.stops.push(() => task.stop());
    expect((await task.verify()).bad_pages).toBe(0);
    const r = await runMigrate(hosts, task.rootPid, dest, { args: ['--compress', mode], timeoutMs: 90_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    task.adopt(s.restoredPid);
    const v = await task.verify(s.restoredPid);
    expect(v).toMatchObject({ bad_pages: 0, bad_words: 0 });
    console.log(
      `--compress ${mode}: ${s.rounds.map((x) => `round ${x.round} ${x.codec} ${x.bytesSent} -> ${x.wireBytes}`).join(', ')}; ` +
        `pages ${s.pageBytesSent} bytes raw, ${s.pageWireBytes} on the wire; total ${Math.round(s.totalMs)} ms, downtime ${Math.round(s.downtimeMs)} ms`,
    );
    expect(s.compress).toBe(mode);
    if (mode === 'zstd') {
      expect(s.pageCodec).toBe('zstd');
      expect(s.rounds[0]!.codec).toBe('zstd');
      // Heap-like pages shrink several times (their ratio is printed above).
      expect(s.pageWireBytes).toBeLessThan(s.pageBytesSent / 2);
      expect(s.rounds[0]!.wireBytes).toBeLessThan(s.rounds[0]!.bytesSent / 2);
    } else {
      expect(s.pageCodec).toBe('none');
      expect(s.rounds.every((x) => x.codec === 'none' && x.wireBytes === x.bytesSent)).toBe(true);
      expect(s.pageWireBytes).toBe(s.pageBytesSent);
    }
    // The dest counts the page bytes it stored (decoded), whatever went on the wire.
    const text = await httpGetIn(hosts.dst, `http://${hosts.dst.address}:${dest.metricsPort}/metrics`);
    expect(metricValue(text, 'ferry_dest_page_bytes_received_total')).toBeGreaterThanOrEqual(s.pageBytesSent);
    expect(dest.leftovers()).toEqual([]);
  }, 120_000);
});
