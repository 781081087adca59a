/**
 * A restarted dest agent resolves each session a dead one left from its journal (restart-recovery.ts), never by
 * guessing: a restored copy is taken over stopped (never resumed, never killed on its own), a committed one is
 * resumed, an aborted one killed, a receiving or restoring one ended; a reused pid is never signalled. A task
 * network's copy: a running committed one has the hold tables a crash left let go of, and a revived one whose
 * hold cannot be let go has its Commit refused, never resumed unreachable (review 16, findings 1 and 3).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { destJournalDir, ENDED_RETENTION_MS, readDestJournal } from '../../dest-agent/dest-journal.js';
import { recoverSessions, RESTART_GRACE_MS, type ReviveInit } from '../../dest-agent/restart-recovery.js';
import { RESTORED_PID_FILE } from '../../dest-agent/restore.js';
import type { DestSession } from '../../dest-agent/session.js';
import { markSessionDir } from '../../dest-agent/work-dir.js';
import { JournalFile } from '../../shared/journal/journal-file.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { createLogger, silentLogger } from '../../shared/logging/logger.js';
import { waitFor } from '../../testbed/workloads/memtest.js';
import { addNetworkHold, holdTablesIn, isNetworkHeld, openNetworkHold } from '../../shared/kernel/nft-hold.js';
import { startDest } from '../support/dest-grpc.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { startNetnsSleeper } from '../../testbed/workloads/netns-sleeper.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function workDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ferry-recover-'));
  dirs.push(d);
  return d;
}

async function stoppedSleeper(): Promise<number> {
  const c = spawn('sleep', ['600'], { stdio: 'ignore' });
  children.push(c);
  await new Promise((r) => c.once('spawn', r));
  process.kill(c.pid!, 'SIGSTOP');
  await waitFor(() => readStat(c.pid!)?.state === 'T', 5_000, 'sleep stopped');
  return c.pid!;
}

const gone = (pid: number): boolean => readStat(pid) === undefined || readStat(pid)?.state === 'Z';

/** A session as a dead agent left it: its marked dir and its journal up to `states`. */
async function leftBehind(work: string, id: string, states: [string, Record<string, unknown>?][]): Promise<string> {
  const dir = join(work, id);
  await mkdir(join(dir, 'images'), { recursive: true });
  await markSessionDir(dir, id);
  const j = (await JournalFile.open(destJournalDir(work), id, 'dest.journal-write'))!;
  await j.record('receiving', { epoch: '77', peer: 'local' });
  for (const [state, fields] of states) await j.record(state, fields);
  await j.close();
  return dir;
}

const noRevive = (): Promise<DestSession> => Promise.reject(new Error('nothing should be revived'));

describe('dest restart recovery', () => {
  it('takes over a restored, stopped copy for the rest of its lease: neither resumed nor killed', async () => {
    const work = await workDir();
    const pid = await stoppedSleeper();
    await leftBehind(work, 'sess-restored', [['restoring'], ['restored', { restoredPid: pid, startTime: readStat(pid)!.startTime, leaseUntil: Date.now() + 60_000 }]]);
    const revived: ReviveInit[] = [];
    const found = await recoverSessions(work, silentLogger, (init) => {
      revived.push(init);
      return Promise.resolve({ id: init.id } as DestSession);
    });
    expect(revived).toMatchObject([{ id: 'sess-restored', epoch: 77n, peer: 'local', restoredPid: pid }]);
    expect(found.revived[0]!.leaseMs).toBeGreaterThan(50_000);
    expect(found.ended).toEqual([]);
    expect(readStat(pid)?.state).toBe('T');
    expect(existsSync(join(work, 'sess-restored'))).toBe(true);
  });

  it('gives a revived copy whose lease ran out while the agent was down a grace period, not an instant kill', async () => {
    const work = await workDir();
    const pid = await stoppedSleeper();
    await leftBehind(work, 'sess-late', [['restoring'], ['restored', { restoredPid: pid, startTime: readStat(pid)!.startTime, leaseUntil: Date.now() - 5_000 }]]);
    const found = await recoverSessions(work, silentLogger, (init) => Promise.resolve({ id: init.id } as DestSession));
    expect(found.revived[0]!.leaseMs).toBe(RESTART_GRACE_MS);
  });

  it('never signals a process that only shares the recorded pid; the session ends aborted', async () => {
    const work = await workDir();
    const pid = await stoppedSleeper();
    await leftBehind(work, 'sess-reused', [['restoring'], ['restored', { restoredPid: pid, startTime: 1, leaseUntil: Date.now() + 60_000 }]]);
    const found = await recoverSessions(work, silentLogger, noRevive);
    expect(readStat(pid)?.state).toBe('T');
    expect(found.ended).toMatchObject([{ id: 'sess-reused', outcome: { outcome: 'aborted' } }]);
    expect((await readDestJournal(work, 'sess-reused'))?.state).toBe('aborted');
    expect(existsSync(join(work, 'sess-reused'))).toBe(false);
  });

  it('resumes a committed copy the dead agent had not resumed yet, and remembers the commit', async () => {
    const work = await workDir();
    const pid = await stoppedSleeper();
    const startTime = readStat(pid)!.startTime;
    await leftBehind(work, 'sess-commit', [['restoring'], ['restored', { restoredPid: pid, startTime, leaseUntil: Date.now() + 60_000 }], ['committed', { restoredPid: pid, resumedAtUs: '123' }]]);
    const lines: Record<string, unknown>[] = [];
    const log = createLogger({ side: 'dest' }, (l) => void lines.push(JSON.parse(l) as Record<string, unknown>), 'debug', 'json');
    const found = await recoverSessions(work, log, noRevive);
    await waitFor(() => readStat(pid)?.state === 'S', 5_000, 'committed copy resumed');
    // The line about it says which migration and where it was (issue 14).
    expect(lines.find((l) => l.msg === 'resumed a committed copy: the previous agent died before resuming it')).toMatchObject({ side: 'dest', migrationId: 'sess-commit', phase: 'commit', pid });
    expect(found.ended).toEqual([{ id: 'sess-commit', outcome: { outcome: 'committed', epoch: 77n, peer: 'local', restoredPid: pid, resumedAtUs: 123n } }]);
  });

  it.skipIf(!canRun('dest recovery: network hold', isRoot(), hasCommand('ip'), hasCommand('nsenter')))(
    "a committed copy in its own network namespace: its hold is let go and its address announced before the resume (issue 16)",
    async () => {
      const work = await workDir();
      const sleeper = await startNetnsSleeper(`ferry-it-recover-hold-${process.pid}`, '10.79.9.102/24');
      try {
        const { pid } = sleeper;
        addNetworkHold(sleeper.netns);
        const taskNetwork = { innerLink: 'eth0', mac: '02:79:09:00:00:66', addresses: ['10.79.9.102/24'], outerLink: 'fyrecover0', bridge: 'ferry0' };
        const startTime = readStat(pid)!.startTime;
        await leftBehind(work, 'sess-net', [['restoring', { taskNetwork }], ['restored', { restoredPid: pid, startTime, leaseUntil: Date.now() + 60_000 }], ['committed', { restoredPid: pid, resumedAtUs: '1' }]]);
        expect((await readDestJournal(work, 'sess-net'))?.taskNetwork).toEqual(taskNetwork);
        const lines: Record<string, unknown>[] = [];
        const log = createLogger({ side: 'dest' }, (l) => void lines.push(JSON.parse(l) as Record<string, unknown>), 'debug', 'json');
        await recoverSessions(work, log, noRevive);
        await waitFor(() => readStat(pid)?.state === 'S', 5_000, 'committed copy resumed');
        expect(isNetworkHeld(`/proc/${pid}/ns/net`)).toBe(false);
        const at = (msg: string): number => lines.findIndex((l) => l.msg === msg);
        expect(lines[at("the copy's network hold let go")]).toMatchObject({ announced: ['10.79.9.102'], errors: [] });
        expect(at("the copy's network hold let go")).toBeLessThan(at('resumed a committed copy: the previous agent died before resuming it'));
      } finally {
        sleeper.stop();
      }
    },
    30_000,
  );

  const netRunnable = canRun('dest recovery: network hold', isRoot(), hasCommand('ip'), hasCommand('nsenter'));
  const NET = { innerLink: 'eth0', mac: '02:79:09:00:00:66', addresses: ['10.79.9.102/24'], outerLink: 'fyrecover0', bridge: 'ferry0' };

  it.skipIf(!netRunnable)(
    'a committed copy found running with an opened hold the crash left: its tables deleted and its address announced',
    async () => {
      const work = await workDir();
      const sleeper = await startNetnsSleeper(`ferry-it-recover-left-${process.pid}`, '10.79.9.102/24');
      try {
        const { pid } = sleeper;
        // The dead agent had opened the hold and resumed the copy; the deletion never came.
        addNetworkHold(sleeper.netns);
        openNetworkHold(sleeper.netns);
        process.kill(pid, 'SIGCONT');
        await waitFor(() => readStat(pid)?.state === 'S', 5_000, 'the copy running');
        const startTime = readStat(pid)!.startTime;
        await leftBehind(work, 'sess-left', [['restoring', { taskNetwork: NET }], ['restored', { restoredPid: pid, startTime, leaseUntil: Date.now() + 60_000 }], ['committed', { restoredPid: pid, resumedAtUs: '1' }]]);
        const lines: Record<string, unknown>[] = [];
        const log = createLogger({ side: 'dest' }, (l) => void lines.push(JSON.parse(l) as Record<string, unknown>), 'debug', 'json');
        const found = await recoverSessions(work, log, noRevive);
        expect(holdTablesIn(sleeper.netns)).toEqual([]);
        expect(lines.find((l) => l.msg === "the copy's network hold let go")).toMatchObject({ released: ['inet ferry-hold', 'arp ferry-hold'], announced: ['10.79.9.102'], errors: [] });
        expect(found.ended).toMatchObject([{ id: 'sess-left', outcome: { outcome: 'committed' } }]);
      } finally {
        sleeper.stop();
      }
    },
    30_000,
  );

  it.skipIf(!netRunnable)(
    "refuses the Commit of a revived copy whose hold can be neither opened nor deleted: the copy is killed, never resumed unreachable",
    async () => {
      const work = await workDir();
      const sleeper = await startNetnsSleeper(`ferry-it-recover-stuck-${process.pid}`, '10.79.9.103/24');
      const env = { fault: process.env.FERRY_FAULT, test: process.env.FERRY_TEST_FAULTS };
      const dest = await startDest({ workDir: work });
      try {
        const { pid } = sleeper;
        addNetworkHold(sleeper.netns);
        const id = '5e1f0c2a-hold-4c0d-9a7e-stuck0000001';
        await leftBehind(work, id, [['restoring', { taskNetwork: NET }], ['restored', { restoredPid: pid, startTime: readStat(pid)!.startTime, leaseUntil: Date.now() + 60_000 }]]);
        await dest.service.recover();
        process.env.FERRY_FAULT = 'dest.hold-stuck';
        process.env.FERRY_TEST_FAULTS = '1';
        const refused = await dest.service.commit({ migrationId: id, epoch: '77' }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(refused).toBeInstanceOf(FerryError);
        expect((refused as FerryError).code).toBe(new FerryError('COMMIT_REJECTED').code);
        await waitFor(() => gone(pid), 5_000, 'the stuck copy killed');
        expect((await readDestJournal(work, id))?.state).toBe('aborted');
        // A retried Commit gets the same answer: the source thaws its original.
        await expect(dest.service.commit({ migrationId: id, epoch: '77' })).rejects.toMatchObject({ code: new FerryError('COMMIT_REJECTED').code });
      } finally {
        if (env.fault === undefined) delete process.env.FERRY_FAULT;
        else process.env.FERRY_FAULT = env.fault;
        if (env.test === undefined) delete process.env.FERRY_TEST_FAULTS;
        else process.env.FERRY_TEST_FAULTS = env.test;
        await dest.close();
        sleeper.stop();
      }
    },
    30_000,
  );

  it('kills an aborted copy the dead agent had not killed yet', async () => {
    const work = await workDir();
    const pid = await stoppedSleeper();
    await leftBehind(work, 'sess-abort', [['restoring'], ['restored', { restoredPid: pid, startTime: readStat(pid)!.startTime, leaseUntil: 0 }], ['aborted', { reason: 'x', restoredPid: pid }]]);
    const found = await recoverSessions(work, silentLogger, noRevive);
    await waitFor(() => gone(pid), 5_000, 'aborted copy killed');
    expect(found.ended).toMatchObject([{ id: 'sess-abort', outcome: { outcome: 'aborted', reason: 'x' } }]);
  });

  it('ends a receiving session (aborted in its journal, files removed)', async () => {
    const work = await workDir();
    await leftBehind(work, 'sess-recv', []);
    const found = await recoverSessions(work, silentLogger, noRevive);
    expect(found.ended).toMatchObject([{ id: 'sess-recv', outcome: { outcome: 'aborted' } }]);
    expect(existsSync(join(work, 'sess-recv'))).toBe(false);
  });

  it('ends a session interrupted during its restore at once, and kills what the restore made once criu is gone', async () => {
    const work = await workDir();
    const dir = await leftBehind(work, 'sess-mid', [['restoring']]);
    await new Promise((r) => setTimeout(r, 20));
    const pid = await stoppedSleeper(); // born after "restoring": what criu restored
    await writeFile(join(dir, RESTORED_PID_FILE), `${pid}\n`);
    const found = await recoverSessions(work, silentLogger, noRevive);
    expect(found.ended).toMatchObject([{ id: 'sess-mid', outcome: { outcome: 'aborted' } }]);
    await found.cleanup;
    await waitFor(() => gone(pid), 5_000, 'the interrupted restore’s copy killed');
    expect(existsSync(dir)).toBe(false);
  });

  it('survives a torn last journal line (a crash inside a write): the decision it carried was never acted on', async () => {
    const work = await workDir();
    const pid = await stoppedSleeper();
    await leftBehind(work, 'sess-torn', [['restoring'], ['restored', { restoredPid: pid, startTime: readStat(pid)!.startTime, leaseUntil: Date.now() + 60_000 }]]);
    await appendFile(join(destJournalDir(work), 'sess-torn.journal'), '{"restoredPid":1,"resumedAtUs":"1","state":"comm');
    const found = await recoverSessions(work, silentLogger, (init) => Promise.resolve({ id: init.id } as DestSession));
    expect(found.revived).toHaveLength(1); // still restored: the torn "committed" never resumed anything
    expect(readStat(pid)?.state).toBe('T');
  });

  it('forgets ended sessions older than the retention', async () => {
    const work = await workDir();
    await leftBehind(work, 'sess-old', [['aborted', { reason: 'long ago' }]]);
    const path = join(destJournalDir(work), 'sess-old.journal');
    const text = (await readFile(path, 'utf8')).replaceAll(/"at":\d+/g, `"at":${Date.now() - ENDED_RETENTION_MS - 60_000}`);
    await writeFile(path, text);
    const found = await recoverSessions(work, silentLogger, noRevive);
    expect(found.ended).toEqual([]);
    expect(existsSync(path)).toBe(false);
  });
});
