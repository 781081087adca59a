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
import { silentLogger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import type { DestPort } from '../../source-agent/migration/ports.js';
import { resolveMigration, unresolvedMigrations, type ResolverDeps } from '../../source-agent/migration/resolver.js';
import { readSourceJournal, SourceJournal, type SourceJournalState } from '../../source-agent/migration/source-journal.js';
import { waitFor } from '../../testbed/workloads/memtest.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

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
function fakeDest(answer: Answer, calls: string[]): ResolverDeps['connectDest'] {
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
      reachable: () => Promise.resolve(true),
      close: () => undefined,
    };
    return Promise.resolve(port);
  };
}

function deps(dir: string, answer: Answer, calls: string[] = []): ResolverDeps {
  return { journalDir: dir, connectDest: fakeDest(answer, calls), log: silentLogger, signal: new AbortController().signal, answerPatienceMs: 500 };
}

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
    const r = await resolveMigration(id, deps(dir, 'commit', calls));
    expect(r.outcome).toBe('rolled-back');
    expect(calls).toEqual(['connect', 'abort 99']); // never a Commit
    await waitFor(() => stateOf(pid) === 'S', 5_000, 'the original thawed');
    expect(existsSync(images)).toBe(false);
  });

  it('at "committed": kills the original without asking', async () => {
    const dir = await tmp();
    const pid = await frozenOriginal();
    const id = await journal(dir, pid, [['committing'], ['committed', { restoredPid: 4242 }]]);
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
