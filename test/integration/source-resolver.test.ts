/**
 * The source's resolver (source-agent/migration/resolver.ts) finishes a migration whose process died, from its
 * journal and the dest's answer, never by guessing: against real processes (stopped sleepers as the frozen
 * original) and a fake dest that answers as told.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { JournalFile, journalPath } from '../../shared/journal/journal-file.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { createLogger, silentLogger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import type { DestPort } from '../../source-agent/migration/ports.js';
import { resolveMigration, unresolvedMigrations, type ResolverDeps } from '../../source-agent/migration/resolver.js';
import { readSourceJournal, SourceJournal, type SourceJournalState } from '../../source-agent/migration/source-journal.js';
import { waitFor } from '../../testbed/workloads/memtest.js';
import { originalHashes, originalPages, PAGE } from '../fakes/fake-original-pages.js';
import { fillManifestsPath, saveFillManifests } from '../../source-agent/migration/fill-manifests.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';
import { startTcpRepairTask } from '../../testbed/workloads/tcp-repair-task.js';
import { addNftTable, listNftTables } from '../../shared/kernel/nft-tables.js';
import { socketsInRepair } from '../../shared/kernel/tcp-repair.js';
import { addNetworkHold, isNetworkHeld } from '../../shared/kernel/nft-hold.js';
import { startNetnsSleeper } from '../../testbed/workloads/netns-sleeper.js';
import { spawnSync } from 'node:child_process';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { listLinks } from '../../shared/kernel/rtnetlink.js';
import { THIS_NETNS } from '../../shared/kernel/netns-socket.js';

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ferry-resolve-'));
  dirs.push(d);
  return d;
}

/** A frozen original: a stopped sleeper in a process group of its own. */
async function frozenOriginal(): Promise<number> {
  const c = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
  children.push(c);
  await new Promise((r) => c.once('spawn', r));
  process.kill(c.pid!, 'SIGSTOP');
  await waitFor(() => readStat(c.pid!)?.state === 'T', 5_000, 'sleeper stopped');
  return c.pid!;
}

const stateOf = (pid: number): string | undefined => readStat(pid)?.state;
const gone = (pid: number): boolean => stateOf(pid) === undefined || stateOf(pid) === 'Z';

/** A journal as a dead `ferry migrate` left it. */
async function journal(dir: string, pid: number, states: [SourceJournalState, Record<string, unknown>?][], startTime = readStat(pid)!.startTime): Promise<string> {
  const id = randomUUID();
  const j = await SourceJournal.begin(dir, id, { pid, to: '10.77.0.2:7070', epoch: '99', tree: [{ hostPid: pid, startTime }] });
  for (const [state, fields] of states) await j.record(state, fields);
  await j.close();
  return id;
}

type Answer = 'commit' | 'reject' | 'unreachable';
/** The dest's Fill: done once `needed` pages were answered (after the first request), or FILL_FAILED at once. */
interface FillAnswer {
  kind: 'done' | 'failed';
  needed: number;
}
function fakeDest(answer: Answer, calls: string[], fill: FillAnswer = { kind: 'done', needed: 0 }): ResolverDeps['connectDest'] {
  return () => {
    calls.push('connect');
    if (answer === 'unreachable') return Promise.reject(new FerryError('DEST_UNREACHABLE'));
    const port: DestPort = {
      negotiate: () => Promise.reject(new Error('unused')),
      prepare: () => Promise.reject(new Error('unused')),
      openPageStream: () => {
        throw new Error('unused');
      },
      uploadImages: () => Promise.reject(new Error('unused')),
      restore: () => Promise.reject(new Error('unused')),
      commit: (req: m.CommitRequest) => {
        calls.push(`commit ${req.epoch}`);
        return answer === 'commit' ? Promise.resolve({ restoredPid: 4242, resumedAtUnixUs: '1' }) : Promise.reject(new FerryError('COMMIT_REJECTED', { detail: 'commit lease expired' }));
      },
      abort: (req: m.AbortRequest) => {
        calls.push(`abort ${req.epoch}`);
        return Promise.resolve({ existed: true, alreadyCommitted: false, killedRestoredCopy: true });
      },
      fill: (h) => {
        calls.push('fill');
        let answered = 0;
        let first = true;
        let over = false;
        const end = (e: FerryError | undefined): void => {
          if (!over) setImmediate(() => h.end(e));
          over = true;
        };
        return {
          write: (req: m.FillRequest) => {
            if (over) return Promise.reject(new FerryError('DEST_UNREACHABLE'));
            if (!first) {
              calls.push(`fill ${req.task}:${req.firstIndex}+${req.count}${req.data.length > 0 ? ' bytes' : ''}`);
              answered += req.count;
            }
            first = false;
            if (fill.kind === 'failed') end(new FerryError('FILL_FAILED', { side: 'dest', detail: 'the pager died' }));
            else if (answered >= fill.needed) {
              h.event({ done: { filledPages: '4', faults: '0', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1', faultsWaited: '0' } });
              end(undefined);
            }
            return Promise.resolve();
          },
          end: () => undefined,
          cancel: () => end(new FerryError('CANCELLED')),
        };
      },
      reachable: () => Promise.resolve(true),
      close: () => undefined,
    };
    return Promise.resolve(port);
  };
}

function deps(dir: string, answer: Answer, calls: string[] = [], fill?: FillAnswer): ResolverDeps {
  return { journalDir: dir, connectDest: fakeDest(answer, calls, fill), log: silentLogger, signal: new AbortController().signal, answerPatienceMs: 500, readPages: originalPages }; // the sleeper's own memory is not read
}

/** The manifests a lazy restore left beside the journal: 4 pages at page 0x100, the last 3 unconfirmed. */
async function lazyManifests(dir: string, id: string, pid: number): Promise<void> {
  const hashes = originalHashes(0x100, 4);
  await saveFillManifests(dir, id, [{ task: 1, hostPid: pid, runs: { starts: [0x100], counts: [4] }, hashes, unconfirmed: Buffer.from([0b1110]), remote: Buffer.alloc(0) }], PAGE);
}
const LAZY_COMMITTED: [SourceJournalState, Record<string, unknown>?][] = [['restored', { restoredPid: 4242, restore: 'lazy' }], ['committing'], ['committed', { restoredPid: 4242, fill: 'pending' }]];

describe('source resolver', () => {
  it('at "committing", a dest that committed: the original is killed, the journal done (migrated)', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['frozen', { imagesDir: join(dir, 'gone') }], ['restored', { restoredPid: 4242 }], ['committing']]);
    const calls: string[] = [];
    const r = await resolveMigration(id, deps(dir, 'commit', calls));
    expect(r).toMatchObject({ outcome: 'migrated', alreadyDone: false });
    expect(calls).toEqual(['connect', 'commit 99']);
    await waitFor(() => gone(pid), 5_000, 'the original killed');
    expect(await readSourceJournal(dir, id)).toMatchObject({ state: 'done', outcome: 'migrated', restoredPid: 4242 });
  });

  it('at "committing", a dest that refuses: the original is thawed, the journal done (rolled back)', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['committing']]);
    const r = await resolveMigration(id, deps(dir, 'reject'));
    expect(r.outcome).toBe('rolled-back');
    expect(r.detail).toContain('commit lease expired');
    await waitFor(() => stateOf(pid) === 'S', 5_000, 'the original thawed');
    expect((await readSourceJournal(dir, id)).outcome).toBe('rolled-back');
  });

  it('at "committing", a dest that does not answer: COMMIT_UNCONFIRMED naming the --resume, the original stays frozen, the journal open', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['committing']]);
    const e = await expectFerryRejection(resolveMigration(id, deps(dir, 'unreachable')), 'COMMIT_UNCONFIRMED');
    expect(e.detail).toContain(`ferry migrate --resume ${id}`);
    expect(stateOf(pid)).toBe('T');
    expect((await readSourceJournal(dir, id)).state).toBe('committing');
    expect((await unresolvedMigrations(dir, silentLogger)).map((x) => x.migrationId)).toEqual([id]);
  });

  it('before "committing": thaws the original, removes the images dir, aborts the dest session', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const images = join(dir, 'images-x');
    await mkdir(images);
    await writeFile(join(images, 'pages-1.img'), 'x');
    const id = await journal(dir, pid, [['frozen', { imagesDir: images }], ['restored', { restoredPid: 4242 }]]);
    const calls: string[] = [];
    const lines: Record<string, unknown>[] = [];
    const log = createLogger({ side: 'source' }, (l) => void lines.push(JSON.parse(l) as Record<string, unknown>), 'debug', 'json');
    const r = await resolveMigration(id, { ...deps(dir, 'commit', calls), log });
    expect(r.outcome).toBe('rolled-back');
    expect(calls).toEqual(['connect', 'abort 99']); // never a Commit
    // Its log says which migration, and that this is its rollback (issue 14).
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatchObject({ side: 'source', migrationId: id, phase: 'rollback', resolving: 'restored' });
    await waitFor(() => stateOf(pid) === 'S', 5_000, 'the original thawed');
    expect(existsSync(images)).toBe(false);
  });

  it.skipIf(!canRun('resolver: tcp-established undo', isRoot(), hasCommand('python3'), hasCommand('ip')))(
    'before "committing", after a --tcp-established dump: the sockets leave repair and the lock goes before the thaw; after a kill only the lock goes',
    async () => {
      const dir = await tmp();
      const netnsName = `ferry-it-resolver-${process.pid}`;
      const netns = `/run/netns/${netnsName}`;
      expect(spawnSync('ip', ['netns', 'add', netnsName], { timeout: 10_000 }).status).toBe(0);
      const task = await startTcpRepairTask(dir, 'resolver');
      try {
        const runId = randomUUID();
        const lockTable = { family: 'inet', name: `CRIU-${runId}`.slice(0, 26) };
        const dumpLog = join(dir, 'dump.log');
        await writeFile(dumpLog, `(00.000000) CRIU run id = ${runId}\n`);
        addNftTable(netns, lockTable);
        process.kill(task.pid, 'SIGSTOP');
        await waitFor(() => stateOf(task.pid) === 'T', 5_000, 'the original stopped');
        const id = await journal(dir, task.pid, [['frozen', { imagesDir: join(dir, 'images-t'), tcpLock: { dumpLog, netns } }]]);
        expect((await resolveMigration(id, deps(dir, 'commit'))).outcome).toBe('rolled-back');
        await waitFor(() => stateOf(task.pid) !== 'T', 5_000, 'the original thawed');
        expect(socketsInRepair([task.pid])).toEqual([]);
        expect(listNftTables(netns)).toEqual([]);
        expect(await task.trip()).toBe('ok');

        // Committed: killed, then the lock (made again) goes once it is gone.
        addNftTable(netns, lockTable);
        const id2 = await journal(dir, task.pid, [['frozen', { tcpLock: { dumpLog, netns } }], ['committing'], ['committed', { restoredPid: 4242 }]]);
        expect((await resolveMigration(id2, deps(dir, 'unreachable'))).outcome).toBe('migrated');
        expect(gone(task.pid)).toBe(true);
        expect(listNftTables(netns)).toEqual([]);
      } finally {
        task.stop();
        spawnSync('ip', ['netns', 'del', netnsName], { timeout: 10_000 });
      }
    },
    30_000,
  );

  it.skipIf(!canRun('resolver: network hold', isRoot(), hasCommand('ip'), hasCommand('nsenter')))(
    'before "committing", a task in its own network namespace: the hold is let go (its address announced) and it is thawed; after a kill its veth is deleted, or found gone',
    async () => {
      const dir = await tmp();
      const sleeper = await startNetnsSleeper(`ferry-it-resolver-hold-${process.pid}`, '10.79.9.100/24');
      try {
        const { pid, netns } = sleeper;
        addNetworkHold(netns);
        const network = { innerLink: 'eth0', mac: '02:79:09:00:00:64', addresses: ['10.79.9.100/24'], outerLink: 'fyresolver0', bridge: 'ferry0' };
        const id = await journal(dir, pid, [['frozen', { imagesDir: join(dir, 'images-h'), hold: { netns, network } }]]);
        expect(await readSourceJournal(dir, id)).toMatchObject({ hold: { netns, network } });
        const lines: Record<string, unknown>[] = [];
        const log = createLogger({ side: 'source' }, (l) => void lines.push(JSON.parse(l) as Record<string, unknown>), 'debug', 'json');
        expect((await resolveMigration(id, { ...deps(dir, 'commit'), log })).outcome).toBe('rolled-back');
        await waitFor(() => stateOf(pid) !== 'T', 5_000, 'the original thawed');
        expect(isNetworkHeld(netns)).toBe(false);
        expect(lines.find((l) => l.msg === "the original's network hold let go")).toMatchObject({ released: ['inet ferry-hold', 'arp ferry-hold'], announced: ['10.79.9.100'], errors: [] });

        // Committed: killed; its outer veth (no such link here) is found gone, which is no error.
        addNetworkHold(netns);
        const id2 = await journal(dir, pid, [['frozen', { hold: { netns, network } }], ['committing'], ['committed', { restoredPid: 4242 }]]);
        expect((await resolveMigration(id2, deps(dir, 'unreachable'))).outcome).toBe('migrated');
        expect(gone(pid)).toBe(true);
      } finally {
        sleeper.stop();
      }
    },
    30_000,
  );

  it.skipIf(!canRun('resolver: outer veth', isRoot(), hasCommand('ip')))(
    "after a kill, the original's outer veth is deleted only while it has the journaled ifindex (another link of that name stays)",
    async () => {
      const dir = await tmp();
      const name = `fyrs${(process.pid % 0xffff).toString(16)}`;
      const add = spawnSync('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`], { encoding: 'utf8', timeout: 10_000 });
      if (add.status !== 0) throw new Error(`ip link add: ${add.stderr}`);
      try {
        const exists = (): boolean => listLinks(THIS_NETNS).some((l) => l.name === name);
        const ifindex = listLinks(THIS_NETNS).find((l) => l.name === name)!.ifindex;
        const network = { innerLink: 'eth0', mac: '02:79:09:00:00:65', addresses: ['10.79.9.101/24'], outerLink: name, bridge: 'ferry0' };
        for (const [journaled, stays] of [
          [ifindex + 1000, true],
          [ifindex, false],
        ] as const) {
          const pid = await frozenOriginal();
          const id = await journal(dir, pid, [['frozen', { hold: { netns: `/proc/${pid}/ns/net`, network }, outerIfindex: journaled }], ['committing'], ['committed', { restoredPid: 4242 }]]);
          expect(await readSourceJournal(dir, id)).toMatchObject({ outerIfindex: journaled });
          expect((await resolveMigration(id, deps(dir, 'unreachable'))).outcome).toBe('migrated');
          expect(gone(pid)).toBe(true);
          expect(exists()).toBe(stays);
        }
      } finally {
        spawnSync('ip', ['link', 'del', name], { timeout: 10_000 });
      }
    },
    30_000,
  );

  it('at "committed": kills the original without asking', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['committing'], ['committed', { restoredPid: 4242 }]]);
    const calls: string[] = [];
    expect((await resolveMigration(id, deps(dir, 'unreachable', calls))).outcome).toBe('migrated');
    expect(calls).toEqual([]);
    await waitFor(() => gone(pid), 5_000, 'the original killed');
  });

  it('at "committed" with the fill of a lazy restore pending: runs the fill from the manifests, then kills the original (issue 11)', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, LAZY_COMMITTED);
    await lazyManifests(dir, id, pid);
    const calls: string[] = [];
    const r = await resolveMigration(id, deps(dir, 'commit', calls, { kind: 'done', needed: 3 }));
    expect(r.outcome).toBe('migrated');
    // Never a Commit again: the journal says it was answered. The three unconfirmed pages match: confirmed, no bytes.
    expect(calls).toEqual(['connect', 'fill', 'fill 1:1+3']);
    await waitFor(() => gone(pid), 5_000, 'the original killed');
    const j = await readSourceJournal(dir, id);
    expect(j).toMatchObject({ state: 'done', outcome: 'migrated' });
    expect(existsSync(fillManifestsPath(dir, id))).toBe(false);
  });

  it('a pending fill the dest reports failed (its copy killed): the original is thawed, the journal done (rolled back)', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, LAZY_COMMITTED);
    await lazyManifests(dir, id, pid);
    const r = await resolveMigration(id, deps(dir, 'commit', [], { kind: 'failed', needed: 3 }));
    expect(r.outcome).toBe('rolled-back');
    await waitFor(() => stateOf(pid) === 'S', 5_000, 'the original thawed');
    expect(await readSourceJournal(dir, id)).toMatchObject({ state: 'done', outcome: 'rolled-back' });
    expect(existsSync(fillManifestsPath(dir, id))).toBe(false);
  });

  it('a pending fill and the dest unreachable: MIGRATION_UNRESOLVED naming the --resume, the original stays frozen, the journal and manifests kept', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, LAZY_COMMITTED);
    await lazyManifests(dir, id, pid);
    const e = await expectFerryRejection(resolveMigration(id, deps(dir, 'unreachable')), 'MIGRATION_UNRESOLVED');
    expect(e.detail).toContain(`ferry migrate --resume ${id}`);
    expect(stateOf(pid)).toBe('T');
    expect(await readSourceJournal(dir, id)).toMatchObject({ state: 'committed', fillPending: true });
    expect(existsSync(fillManifestsPath(dir, id))).toBe(true);
  });

  it('at "committing" of a lazy restore the dest answers committed: the fill runs before the kill', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['restored', { restoredPid: 4242, restore: 'lazy' }], ['committing']]);
    await lazyManifests(dir, id, pid);
    const calls: string[] = [];
    expect((await resolveMigration(id, deps(dir, 'commit', calls, { kind: 'done', needed: 3 }))).outcome).toBe('migrated');
    expect(calls).toEqual(['connect', 'commit 99', 'connect', 'fill', 'fill 1:1+3']);
    await waitFor(() => gone(pid), 5_000, 'the original killed');
  });

  it('a pending post-copy fill: the remote pages kept in the manifests go as bytes, then the original is killed (issue 12)', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, LAZY_COMMITTED);
    await saveFillManifests(dir, id, [{ task: 1, hostPid: pid, runs: { starts: [0x100], counts: [4] }, hashes: Buffer.concat([originalHashes(0x100, 2), Buffer.alloc(32)]), unconfirmed: Buffer.from([0b1110]), remote: Buffer.from([0b1100]) }], PAGE);
    const calls: string[] = [];
    expect((await resolveMigration(id, deps(dir, 'commit', calls, { kind: 'done', needed: 3 }))).outcome).toBe('migrated');
    expect(calls).toEqual(['connect', 'fill', 'fill 1:1+3 bytes']);
    await waitFor(() => gone(pid), 5_000, 'the original killed');
  });

  it('a pending fill whose original is gone: ORIGINAL_LOST naming the copy on the dest, the journal ended (original-lost), nothing else signalled', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, LAZY_COMMITTED);
    await lazyManifests(dir, id, pid);
    process.kill(pid, 'SIGKILL');
    await waitFor(() => gone(pid), 5_000, 'the original died');
    const e = await expectFerryRejection(resolveMigration(id, deps(dir, 'commit', [], { kind: 'done', needed: 3 })), 'ORIGINAL_LOST');
    expect(e.sourceState).toBe('gone');
    expect(e.message).toContain('(pid 4242)');
    expect(e.hint).toContain('kill -9 4242');
    expect(await readSourceJournal(dir, id)).toMatchObject({ state: 'done', outcome: 'original-lost' });
    // A second --resume finds it ended.
    expect(await resolveMigration(id, deps(dir, 'commit'))).toMatchObject({ alreadyDone: true, outcome: 'original-lost' });
  });

  it('at "filled": kills the original without asking', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [...LAZY_COMMITTED, ['filled', { filledPages: 4 }]]);
    const calls: string[] = [];
    expect((await resolveMigration(id, deps(dir, 'unreachable', calls))).outcome).toBe('migrated');
    expect(calls).toEqual([]);
    await waitFor(() => gone(pid), 5_000, 'the original killed');
  });

  it('never signals a process that only shares the journaled pid (start time differs)', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['committing'], ['committed', { restoredPid: 4242 }]], 1);
    await resolveMigration(id, deps(dir, 'commit'));
    expect(stateOf(pid)).toBe('T');
  });

  it('a "done" journal is left as it is; a live migration (its journal locked) is refused with MIGRATION_IN_PROGRESS', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const done = await journal(dir, pid, [['done', { outcome: 'migrated' }]]);
    expect(await resolveMigration(done, deps(dir, 'commit'))).toMatchObject({ alreadyDone: true, outcome: 'migrated' });
    const live = await SourceJournal.begin(dir, randomUUID(), { pid, to: 'h:1', epoch: '1', tree: [] });
    try {
      await expectFerryRejection(resolveMigration(live.migrationId, deps(dir, 'commit')), 'MIGRATION_IN_PROGRESS');
    } finally {
      await live.close();
    }
    await expectFerryRejection(resolveMigration(randomUUID(), deps(dir, 'commit')), 'RESUME_NOTHING_TO_RESUME');
  });

  it('a journal torn at its first line (a crash inside the first write) is nothing to resolve, and is removed', async () => {
    const dir = await tmp();
    const id = randomUUID();
    const f = (await JournalFile.open(dir, id, 'source.journal-write'))!;
    await f.close();
    await appendFile(journalPath(dir, id), '{"pid":1,"to":"h:1","sta');
    expect(await unresolvedMigrations(dir, silentLogger)).toEqual([]);
    expect(existsSync(journalPath(dir, id))).toBe(false);
  });
});
