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
 *   committed, fill pending         frozen (the dest's copy      runs the fill again from <id>.manifests
 *   (lazy restore)                  runs, paging in)             (confirm-pages.ts): done kills the original,
 *                                                                FILL_FAILED thaws it, no answer leaves it
 *                                                                frozen (try again)
 *   filled                          frozen or gone               kills the original
 *   done                            as it was left               nothing
 * A `committing` whose restore was lazy and that the dest answers committed goes on to the fill.
 *
 * A --tcp-established dump (the journal's `frozen` names its lock) is undone before the thaw: the sockets out
 * of TCP repair, CRIU's lock deleted (tcp-dump-undo.ts); after a kill only the lock goes, once the original is.
 * A task in its own network namespace (`frozen` names its hold): before all that, the hold is let go and the
 * addresses announced (task-network-hold.ts); after a kill, the veth's outer end is deleted once it is gone.
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
import { waitExited } from '../../shared/kernel/process-wait.js';
import { ORIGINAL_EXIT_WAIT_MS } from './kill-original.js';
import { dropCriuLockOnceGone, undoTcpEstablishedDump, type TcpDumpUndoReport } from '../../shared/criu/tcp-dump-undo.js';
import { releaseTaskNetworkHold, type HoldReleaseReport } from '../../shared/kernel/task-network-hold.js';
import { deleteJournaledOuterLink } from '../../shared/kernel/outer-veth.js';
import type { Logger } from '../../shared/logging/logger.js';
import type { Phase } from '../../shared/phases.js';
import { askCommit, fillUnresolvedError, originalLostError, unresolvedError } from './commit-outcome.js';
import { fillUntilDone, whileOriginal, type OriginalPageReader } from '../pages/confirm-pages.js';
import { loadFillManifests, type FillManifest } from './fill-manifests.js';
import { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import type { DestPort } from './ports.js';
import { JournalFile, journalPath } from '../../shared/journal/journal-file.js';
import { SourceJournal, sourceJournalIds, readSourceJournal, type JournaledMigration, type MigrationOutcome } from './source-journal.js';

export interface ResolverDeps {
  journalDir: string;
  connectDest: (address: string, timeoutMs: number, signal: AbortSignal) => Promise<DestPort>;
  log: Logger;
  signal: AbortSignal;
  /** How long the dest is asked about a Commit that may have reached it (and waited for during a fill). */
  answerPatienceMs: number;
  /** Reads the frozen original's pages for a lazy restore's fill; default process_vm_readv. */
  readPages?: OriginalPageReader;
}

let memoryReader: ProcessMemoryReader | undefined;
const readOriginal: OriginalPageReader = (pid, first, count) => (memoryReader ??= new ProcessMemoryReader()).chunks(pid, { starts: [first], counts: [count] });

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
/** How long a kill is waited for before CRIU's lock is deleted (deleted earlier, a socket's reset gets out). */
const GONE_BEFORE_UNLOCK_MS = 5_000;

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
function logUndo(log: Logger, what: string, report: TcpDumpUndoReport | HoldReleaseReport): void {
  if (report.errors.length > 0) log.error(what, { ...report });
  else log.info(what, { ...report });
}

/**
 * The thaw, after the hold is let go (while the root is the original: the journaled netns path is its) and the
 * undo of a --tcp-established dump; their failures logged: the thaw happens regardless.
 */
async function thawOriginal(m: JournaledMigration, log: Logger): Promise<number> {
  if (m.hold && rootStillOriginal(m)) logUndo(log, "the original's network hold let go", await releaseTaskNetworkHold(m.hold));
  if (m.tcpLock) logUndo(log, 'tcp-established dump undone', undoTcpEstablishedDump(stillOriginal(m), m.tcpLock));
  return signalOriginal(m, 'SIGCONT');
}

/**
 * The kill, and a bounded wait until the original is gone, as the migration itself does (kill-original.ts);
 * after a --tcp-established dump, CRIU's lock goes once the original is gone (bounded).
 */
async function killOriginal(m: JournaledMigration, log: Logger): Promise<number> {
  const procs = m.started.tree.map((p) => ({ pid: p.hostPid, startTime: p.startTime }));
  const pids = stillOriginal(m);
  const killed = signalOriginal(m, 'SIGKILL');
  const left = await waitExited(procs, ORIGINAL_EXIT_WAIT_MS);
  if (left.length > 0) log.warn('the original is not gone after SIGKILL; the copy runs on the dest', { left, waitedMs: ORIGINAL_EXIT_WAIT_MS });
  if (m.tcpLock) logUndo(log, "CRIU's lock after the kill", await dropCriuLockOnceGone(pids, m.tcpLock, GONE_BEFORE_UNLOCK_MS));
  if (m.hold && left.length === 0) {
    try {
      // Only the link the freeze journaled: the name may be another's by now (a later run, a copy restored here).
      const outcome = deleteJournaledOuterLink(m.hold.network.outerLink, m.outerIfindex);
      log.info("the original's veth after the kill", { outerLink: m.hold.network.outerLink, outerIfindex: m.outerIfindex, outcome });
    } catch (e) {
      log.error("the original's veth is not deleted: delete it by hand", { outerLink: m.hold.network.outerLink, err: e });
    }
  }
  return killed;
}

/** The phase of a resolution's log lines: what it finishes (the commit, the fill) or undoes. */
function resolvingPhase(m: JournaledMigration): Phase {
  if (m.state === 'committed' && m.fillPending) return 'fill';
  if (m.state === 'done') return m.outcome === 'migrated' ? 'commit' : 'rollback';
  return m.state === 'committing' || m.state === 'committed' || m.state === 'filled' ? 'commit' : 'rollback';
}

/** Resolves one migration; MIGRATION_UNRESOLVED (the original stays frozen) when the dest does not answer. */
export async function resolveMigration(migrationId: string, deps: ResolverDeps): Promise<Resolution> {
  const { journal, migration: m } = await SourceJournal.take(deps.journalDir, migrationId);
  const log = deps.log.child({ side: 'source', migrationId, phase: resolvingPhase(m), resolving: m.state });
  try {
    if (m.state === 'done') {
      return { migrationId, outcome: m.outcome ?? 'rolled-back', alreadyDone: true, detail: `the journal says it ended ${m.outcome ?? 'rolled back'}` };
    }
    if (m.state === 'committed' && m.fillPending) return await finishFill(m, journal, deps, log);
    if (m.state === 'committed' || m.state === 'filled') {
      const killed = await killOriginal(m, log);
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
  const dest = await connectOr(m, deps, (e) => unresolvedError(target, e));
  try {
    // The dead process may have delivered a Commit: "undelivered" proves nothing here, only an answer does.
    const outcome = await askCommit(dest, target, log, { signal: deps.signal, undeliveredPatienceMs: undefined, answerPatienceMs: deps.answerPatienceMs });
    if (outcome.kind === 'committed' && m.lazyRestore) {
      // The copy runs on pages still coming in: the original waits for the fill, as in the migration itself.
      await journal.record('committed', { restoredPid: outcome.restoredPid, fill: 'pending', resolved: true });
      dest.close();
      return await finishFill({ ...m, restoredPid: outcome.restoredPid, fillPending: true }, journal, deps, log);
    }
    if (outcome.kind === 'committed') {
      await journal.record('committed', { restoredPid: outcome.restoredPid, resolved: true });
      const killed = await killOriginal(m, log);
      await journal.record('done', { outcome: 'migrated', resolved: true });
      log.info('resolved: the dest committed; the original was killed', { killed, restoredPid: outcome.restoredPid });
      return { migrationId, outcome: 'migrated', alreadyDone: false, detail: `the dest ${m.started.to} runs the copy (pid ${outcome.restoredPid}); the original was killed` };
    }
    if (outcome.kind === 'refused') {
      const thawed = await thawOriginal(m, log);
      await journal.record('done', { outcome: 'rolled-back', code: outcome.error.code, resolved: true });
      log.info('resolved: the dest holds no copy; the original was thawed', { thawed, answer: outcome.error.detail });
      return { migrationId, outcome: 'rolled-back', alreadyDone: false, detail: `the dest ${m.started.to} holds no copy (${outcome.error.detail ?? outcome.error.message}); the original runs (${thawed} processes thawed)` };
    }
    throw outcome.error;
  } finally {
    dest.close();
  }
}

/**
 * A lazy restore committed and its fill not reported done: the fill again, from the manifests kept beside the
 * journal, against the frozen original (only its journaled processes: a pid reused since is never read).
 */
async function finishFill(m: JournaledMigration, journal: SourceJournal, deps: ResolverDeps, log: Logger): Promise<Resolution> {
  const { migrationId } = m;
  const target = { migrationId, epoch: m.started.epoch, rootPid: m.started.pid, to: m.started.to, restoredPid: m.restoredPid ?? 0 };
  let manifests: FillManifest[] = [];
  let pageSize = PAGE_SIZE;
  try {
    ({ manifests, pageSize } = await loadFillManifests(deps.journalDir, migrationId));
  } catch (e) {
    // Without them no page can be confirmed, but the dest may be done already (it then answers done at once),
    // or report its fill failed: both still resolve.
    log.error('the fill manifests are unreadable: only the dest\'s done or failure can resolve this migration', { err: e });
  }
  // Gone (or its pid reused), checked around every chunk: the pages still owed exist nowhere else (ORIGINAL_LOST).
  const journaled = new Map(m.started.tree.map((p) => [p.hostPid, p.startTime]));
  const readPages = whileOriginal(deps.readPages ?? readOriginal, (pid) => journaled.has(pid) && readStat(pid)?.startTime === journaled.get(pid));
  const dest = await connectOr(m, deps, (e) => fillUnresolvedError(target, e));
  try {
    const outcome = await fillUntilDone(dest, {
      lost: (cause) => originalLostError(target, cause),
      migrationId,
      epoch: m.started.epoch,
      manifests,
      pageSize,
      readPages,
      log,
      signal: deps.signal,
      patienceMs: deps.answerPatienceMs,
      unanswered: (cause) => fillUnresolvedError(target, cause),
    });
    if (outcome.kind === 'unanswered') throw outcome.error;
    if (outcome.kind === 'lost') {
      // Nothing can finish it: journaled as ended (no pass tries again), and the operator told what to kill.
      await journal.record('done', { outcome: 'original-lost', code: outcome.error.code, resolved: true });
      log.error('the frozen original is gone before the dest held every page: the copy on the dest cannot be completed', { err: outcome.error });
      throw outcome.error;
    }
    if (outcome.kind === 'failed') {
      const thawed = await thawOriginal(m, log);
      await journal.record('done', { outcome: 'rolled-back', code: outcome.error.code, resolved: true });
      log.info('resolved: the dest fill failed and its copy was killed; the original was thawed', { thawed, err: outcome.error });
      return { migrationId, outcome: 'rolled-back', alreadyDone: false, detail: `the dest ${m.started.to} fill failed and it killed its copy (${outcome.error.detail ?? outcome.error.message}); the original runs (${thawed} processes thawed)` };
    }
    const d = outcome.result.done;
    await journal.record('filled', { filledPages: Number(d.filledPages), replacedPages: outcome.result.replacedPages, resolved: true });
    const killed = await killOriginal(m, log);
    await journal.record('done', { outcome: 'migrated', resolved: true });
    log.info('resolved: the dest filled its copy; the original was killed', { killed, replacedPages: outcome.result.replacedPages });
    return { migrationId, outcome: 'migrated', alreadyDone: false, detail: `the dest ${m.started.to} runs the copy (pid ${target.restoredPid}) with every page in; the original was killed` };
  } finally {
    dest.close();
  }
}

/** The dest, or the error `unresolved` makes of a failed connection (the original stays frozen). */
async function connectOr(m: JournaledMigration, deps: ResolverDeps, unresolved: (cause: unknown) => FerryError): Promise<DestPort> {
  try {
    return await deps.connectDest(m.started.to, CONNECT_TIMEOUT_MS, deps.signal);
  } catch (e) {
    throw unresolved(e);
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
  const thawed = await thawOriginal(m, log);
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
