/**
 * The undo of a --tcp-established dump against the real kernel, without CRIU: a python child puts one end of a
 * loopback connection in TCP repair (as CRIU's dump leaves it), and a CRIU-like lock table is made in a
 * network namespace of the test's own. The undo takes the socket out of repair (the connection then carries
 * data again) and deletes only the table the dump's log names, never another CRIU-* table.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockTableFromLog, undoTcpEstablishedDump } from '../../shared/criu/tcp-dump-undo.js';
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
});
