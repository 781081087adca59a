/**
 * Finishes a migration whose process died, from its journal (source-journal.ts), never by guessing:
 *
 *   last entry                      the original                 what the resolver does
 *   started, frozen, restored       running, or frozen by a      a dump still running is killed (its tree
 *                                   dump that outlived its        detaches), the tree is thawed, the images
 *                                   agent                         dir removed, the dest session aborted
 *   committing                      frozen                        asks the dest (commit-outcome.ts): committed
 *                                                                 kills the original, refused thaws it, no
 *                                                                 answer leaves it frozen (exit 3, try again)
 *   committed                       frozen or gone               kills the original
 *   done                            as it was left               nothing
 *
 * The journal is locked while it resolves: a migration still running (or being resolved elsewhere) is refused
 * with MIGRATION_IN_PROGRESS. A process is only signalled while its pid and start time match the journal's.
 */
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { sweepImagesRoot } from '../images-dir.js';
import { criuProcessesFor, waitGoneOrKill } from '../../shared/criu/criu-processes.js';
import { FerryError, asFerryError } from '../../shared/errors/ferry-error.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { signalProcess, signalTree } from '../../shared/kernel/signal-tree.js';
import type { Logger } from '../../shared/logging/logger.js';
import { askCommit, unresolvedError } from './commit-outcome.js';
import type { DestPort } from './ports.js';
import { JournalFile, journalPath } from '../../shared/journal/journal-file.js';
import { SourceJournal, sourceJournalIds, readSourceJournal, type JournaledMigration, type MigrationOutcome } from './source-journal.js';

export interface ResolverDeps {
  journalDir: string;
  connectDest: (address: string, timeoutMs: number, signal: AbortSignal) => Promise<DestPort>;
  log: Logger;
  signal: AbortSignal;
  /** How long the dest is asked about a Commit that may have reached it. */
  answerPatienceMs: number;
}

export interface Resolution {
  migrationId: string;
  outcome: MigrationOutcome;
  /** The journal said it had ended before: nothing was done now. */
  alreadyDone: boolean;
  /** What exists where, as checked. */
  detail: string;
}

const CONNECT_TIMEOUT_MS = 5_000;
/** A dump its agent left running ends within this (its freeze timeout's default) or is killed. */
const DUMP_WAIT_MS = 120_000;

/** The original's processes that are still the journaled ones (pid and start time). */
function stillOriginal(m: JournaledMigration): number[] {
  return m.started.tree.filter((p) => readStat(p.hostPid)?.startTime === p.startTime).map((p) => p.hostPid);
}

function rootStillOriginal(m: JournaledMigration): boolean {
  const root = m.started.tree.find((p) => p.hostPid === m.started.pid);
  return root !== undefined && readStat(root.hostPid)?.startTime === root.startTime;
}

/** Signals the original's tree and each of its journaled processes still alive; returns how many those were. */
function signalOriginal(m: JournaledMigration, signal: 'SIGCONT' | 'SIGKILL'): number {
  const pids = stillOriginal(m);
  if (rootStillOriginal(m)) signalTree(m.started.pid, signal);
  for (const pid of pids) signalProcess(pid, signal);
  return pids.length;
}
const thawOriginal = (m: JournaledMigration): number => signalOriginal(m, 'SIGCONT');
const killOriginal = (m: JournaledMigration): number => signalOriginal(m, 'SIGKILL');

/** Resolves one migration; MIGRATION_UNRESOLVED (the original stays frozen) when the dest does not answer. */
export async function resolveMigration(migrationId: string, deps: ResolverDeps): Promise<Resolution> {
  const { journal, migration: m } = await SourceJournal.take(deps.journalDir, migrationId);
  const log = deps.log.child({ migrationId, resolving: m.state });
  try {
    if (m.state === 'done') {
      return { migrationId, outcome: m.outcome ?? 'rolled-back', alreadyDone: true, detail: `the journal says it ended ${m.outcome ?? 'rolled back'}` };
    }
    if (m.state === 'committed') {
      const killed = killOriginal(m);
      await journal.record('done', { outcome: 'migrated', resolved: true });
      log.info('resolved: the dest had committed; the original is gone', { killed });
      return { migrationId, outcome: 'migrated', alreadyDone: false, detail: `the dest ${m.started.to} runs the copy (pid ${m.restoredPid ?? '?'}); the original was killed` };
    }
    if (m.state === 'committing') return await askAndFinish(m, journal, deps, log);
    return await rollBack(m, journal, deps, log);
  } finally {
    // The images dir of a dead migration goes whatever the outcome (its lease died with its process); after the
    // resolution, so that a dump still at work was waited for first.
    if (m.imagesDir !== undefined && m.state !== 'done') await sweepAfter(m.imagesDir, log);
    await journal.close();
  }
}

async function askAndFinish(m: JournaledMigration, journal: SourceJournal, deps: ResolverDeps, log: Logger): Promise<Resolution> {
  const { migrationId } = m;
  const target = { migrationId, epoch: m.started.epoch, rootPid: m.started.pid, to: m.started.to };
  let dest: DestPort;
  try {
    dest = await deps.connectDest(m.started.to, CONNECT_TIMEOUT_MS, deps.signal);
  } catch (e) {
    throw unresolvedError(target, e);
  }
  try {
    // The dead process may have delivered a Commit: "undelivered" proves nothing here, only an answer does.
    const outcome = await askCommit(dest, target, log, { signal: deps.signal, undeliveredPatienceMs: undefined, answerPatienceMs: deps.answerPatienceMs });
    if (outcome.kind === 'committed') {
      await journal.record('committed', { restoredPid: outcome.restoredPid, resolved: true });
      const killed = killOriginal(m);
      await journal.record('done', { outcome: 'migrated', resolved: true });
      log.info('resolved: the dest committed; the original was killed', { killed, restoredPid: outcome.restoredPid });
      return { migrationId, outcome: 'migrated', alreadyDone: false, detail: `the dest ${m.started.to} runs the copy (pid ${outcome.restoredPid}); the original was killed` };
    }
    if (outcome.kind === 'refused') {
      const thawed = thawOriginal(m);
      await journal.record('done', { outcome: 'rolled-back', code: outcome.error.code, resolved: true });
      log.info('resolved: the dest holds no copy; the original was thawed', { thawed, answer: outcome.error.detail });
      return { migrationId, outcome: 'rolled-back', alreadyDone: false, detail: `the dest ${m.started.to} holds no copy (${outcome.error.detail ?? outcome.error.message}); the original runs (${thawed} processes thawed)` };
    }
    throw outcome.error;
  } finally {
    dest.close();
  }
}

async function rollBack(m: JournaledMigration, journal: SourceJournal, deps: ResolverDeps, log: Logger): Promise<Resolution> {
  const { migrationId } = m;
  if (m.imagesDir !== undefined) {
    // A dump left running would stop the tree again (--leave-stopped) after the thaw: it ends first, on its
    // own (killed while it injects its parasite it kills the task), or past DUMP_WAIT_MS killed.
    const dumps = criuProcessesFor(m.imagesDir);
    if (dumps.length > 0) {
      log.warn('waiting for a criu dump its agent left running', { criu: dumps });
      const { killed } = await waitGoneOrKill(dumps, DUMP_WAIT_MS);
      if (killed.length > 0) log.warn('killed a criu dump that did not end', { criu: killed });
    }
  }
  const thawed = thawOriginal(m);
  if (m.imagesDir !== undefined) await rm(m.imagesDir, { recursive: true, force: true });
  const aborted = await abortDest(m, deps).catch((e: unknown) => asFerryError(e, 'DEST_UNREACHABLE'));
  await journal.record('done', { outcome: 'rolled-back', resolved: true });
  log.info('resolved: rolled back', { thawed, destAbort: aborted instanceof FerryError ? aborted.message : aborted });
  const dest = aborted instanceof FerryError ? `the dest ${m.started.to} could not be told (${aborted.message}); it removes the session on its own` : `the dest ${m.started.to} session was aborted`;
  return { migrationId, outcome: 'rolled-back', alreadyDone: false, detail: `no Commit was ever sent: the original runs (${thawed} processes thawed); ${dest}` };
}

async function sweepAfter(imagesDir: string, log: Logger): Promise<void> {
  await sweepImagesRoot(dirname(imagesDir), log).catch((e: unknown) => log.warn('images root not swept', { err: e }));
}

async function abortDest(m: JournaledMigration, deps: ResolverDeps): Promise<string> {
  const dest = await deps.connectDest(m.started.to, CONNECT_TIMEOUT_MS, deps.signal);
  try {
    const r = await dest.abort({ migrationId: m.migrationId, epoch: m.started.epoch, reason: 'the source resolved an interrupted migration' });
    if (r.alreadyCommitted) throw new FerryError('INTERNAL', { detail: 'the dest says it committed a migration that never sent Commit' });
    return r.killedRestoredCopy ? 'aborted, its copy killed' : 'aborted';
  } finally {
    dest.close();
  }
}

/** The migrations in `dir` not journaled as done, oldest first. A damaged journal is reported, not skipped silently. */
export async function unresolvedMigrations(dir: string, log: Logger): Promise<JournaledMigration[]> {
  const out: JournaledMigration[] = [];
  for (const id of await sourceJournalIds(dir)) {
    try {
      const m = await readSourceJournal(dir, id);
      if (m.state !== 'done') out.push(m);
    } catch (e) {
      if (e instanceof FerryError && e.key === 'RESUME_NOTHING_TO_RESUME') {
        // Torn at its first line: nothing to resolve, once no live writer holds it.
        const held = await JournalFile.open(dir, id, 'source.journal-write');
        if (held) {
          await rm(journalPath(dir, id), { force: true });
          await held.close();
        }
        continue;
      }
      log.error('a migration journal is unreadable: check that migration by hand', { migrationId: id, err: e });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}
