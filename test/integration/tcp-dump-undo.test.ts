/**
 * The undo of a --tcp-established dump against the real kernel, without CRIU: a python child puts one end of a
 * loopback connection in TCP repair (as CRIU's dump leaves it), and a CRIU-like lock table is made in a
 * network namespace of the test's own. The undo takes the socket out of repair (the connection then carries
 * data again) and deletes only the table the dump's log names, never another CRIU-* table.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockTableFromLog, tcpDumpUndoCommand, undoTcpEstablishedDump } from '../../shared/criu/tcp-dump-undo.js';
import { addNetworkHold, isNetworkHeld } from '../../shared/kernel/nft-hold.js';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { addNftTable, listNftTables } from '../../shared/kernel/nft-tables.js';
import { socketsInRepair } from '../../shared/kernel/tcp-repair.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { startTcpRepairTask, type TcpRepairTask } from '../../testbed/workloads/tcp-repair-task.js';

const RUN_ID = '079549e8-1a1d-48f4-bcaf-fc81766e719b';
const runnable = canRun('tcp dump undo', isRoot(), hasCommand('python3'), hasCommand('ip'));

describe.skipIf(!runnable)('the undo of a --tcp-established dump (real kernel)', () => {
  let dir: string;
  let task: TcpRepairTask | undefined;
  const netnsName = `ferry-it-tcp-undo-${process.pid}`;
  const netns = `/run/netns/${netnsName}`;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-tcp-undo-'));
    const r = spawnSync('ip', ['netns', 'add', netnsName], { timeout: 10_000 });
    if (r.status !== 0) throw new Error(`ip netns add: ${r.stderr.toString()}`);
  });

  afterAll(() => {
    task?.stop();
    spawnSync('ip', ['netns', 'del', netnsName], { timeout: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });

  it('names the lock table as CRIU does (inet CRIU-<run id cut to 21 characters>)', () => {
    expect(lockTableFromLog(`(00.000000) CRIU run id = ${RUN_ID}\n(00.000100) Version: 4.2.1\n`)).toEqual({ family: 'inet', name: 'CRIU-079549e8-1a1d-48f4-bc' });
    expect(lockTableFromLog('(00.000000) Version: 4.2.1\n')).toBeUndefined();
  });

  it('takes the socket out of repair (data flows again) and deletes only the table the log names', async () => {
    task = await startTcpRepairTask(dir, 'undo');
    const { pid } = task;
    expect(socketsInRepair([pid])).toHaveLength(1);

    const log = join(dir, 'dump.log');
    writeFileSync(log, `(00.000000) CRIU run id = ${RUN_ID}\n`);
    addNftTable(netns, { family: 'inet', name: 'CRIU-079549e8-1a1d-48f4-bc' });
    addNftTable(netns, { family: 'inet', name: 'CRIU-another-criu-run-id' });
    expect(listNftTables(netns).map((t) => t.name).sort()).toEqual(['CRIU-079549e8-1a1d-48f4-bc', 'CRIU-another-criu-run-id']);

    const report = undoTcpEstablishedDump([pid], { dumpLog: log, netns });
    expect(report.errors).toEqual([]);
    expect(report.released).toHaveLength(1);
    expect(report.tableDeleted).toBe('inet CRIU-079549e8-1a1d-48f4-bc');
    expect(socketsInRepair([pid])).toEqual([]);
    expect(listNftTables(netns).map((t) => t.name)).toEqual(['CRIU-another-criu-run-id']);

    expect(await task.trip()).toBe('ok');

    // Again: nothing left to do, and that is not an error.
    const again = undoTcpEstablishedDump([pid], { dumpLog: log, netns });
    expect(again).toMatchObject({ released: [], errors: [] });
    expect(again.tableDeleted).toBeUndefined();
    // A dump that never started: no log, no lock.
    expect(undoTcpEstablishedDump([pid], { dumpLog: join(dir, 'missing.log'), netns })).toMatchObject({ errors: [], note: expect.stringMatching(/no lock/) });
  }, 60_000);

  const built = join(REPO_ROOT, 'dist', 'shared', 'criu', 'tcp-dump-undo-main.js');
  it.skipIf(!canRun('the freeze guard\'s undo command', { ok: existsSync(built), reason: `needs ${built} (npm run build)` }))(
    "the freeze guard's command lets go of a network hold (only while the held namespace is a checked process's)",
    () => {
      const sleeper = spawnSync('nsenter', [`--net=${netns}`, 'sh', '-c', 'sleep 60 >/dev/null 2>&1 & echo $!'], { encoding: 'utf8', timeout: 10_000 });
      const pid = Number(sleeper.stdout.trim());
      try {
        const hold = { netns: `/proc/${pid}/ns/net`, network: { innerLink: 'eth0', mac: '02:79:09:00:00:65', addresses: ['10.79.9.101/24'], outerLink: 'fyguard00', bridge: 'ferry0' } };
        addNetworkHold(netns);
        // As tcpDumpUndoCommand makes it in dist/ (from sources it is undefined: the program is not built there).
        const argv = [built, 'null', `${pid}:${readStat(pid)!.startTime}`, `--hold=${JSON.stringify(hold)}`];
        expect(tcpDumpUndoCommand([pid], undefined, hold)).toBeUndefined();
        // A pid whose start time does not match is not the original: the hold is left alone.
        const wrong = spawnSync(process.execPath, [built, 'null', `${pid}:1`, argv.at(-1)!], { encoding: 'utf8', timeout: 20_000 });
        expect(wrong.status, wrong.stderr).toBe(0);
        expect(isNetworkHeld(netns)).toBe(true);
        const r = spawnSync(process.execPath, argv, { encoding: 'utf8', timeout: 20_000 });
        // eth0 is not in that namespace: the hold goes, the announcement fails and says so (exit 1).
        const report = JSON.parse(r.stdout.trim()) as { hold: { released: string[]; errors: string[] } };
        expect(report.hold.released.sort()).toEqual(['arp ferry-hold', 'inet ferry-hold']);
        expect(report.hold.errors.join()).toMatch(/10\.79\.9\.101 not announced/);
        expect(isNetworkHeld(netns)).toBe(false);
      } finally {
        if (pid > 0) process.kill(pid, 'SIGKILL');
      }
    },
    60_000,
  );
});

