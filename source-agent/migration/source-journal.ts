/**
 * The source's journal of one migration (shared/journal/journal-file.ts): what a restarted source needs to
 * finish or undo it. The orchestrator writes it at the decision points, each on disk before it is acted on:
 *
 *   started     the dest may hold a session (dest address, epoch, the tree by pid and start time)
 *   frozen      the tree is about to be dumped (the images dir; with --tcp-established, `tcpLock`: the dump's
 *               log and the netns of CRIU's lock, for the undo of such a dump; for a task in its own network
 *               namespace, `hold`: the namespace and its TaskNetwork, for letting go of the hold)
 *   restored    the dest holds a stopped copy
 *   committing  a Commit may reach the dest from here on: only the dest's answer decides the original's fate
 *   committed   the dest runs the copy: the original must die; with `fill: 'pending'` (lazy restore) only
 *               once the dest says every page is in (the fill, from `<id>.manifests`), or it is thawed if the
 *               dest says the fill failed (it killed its copy)
 *   filled      the dest holds every page of the lazy copy: the original must die
 *   done        migrated, or rolled back (the original runs); the manifests file is removed
 *
 * Before `committing` a restart rolls back (thaw, Abort); at `committing` it asks the dest; at `committed` with
 * a pending fill it runs the fill; otherwise from `committed` on it kills the original. The file is locked by the process running the migration (or resolving it).
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { JournalFile, journalIds, journalPath, readJournal, type JournalEntry } from '../../shared/journal/journal-file.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { isTcpDumpLock, type TcpDumpLock } from '../../shared/criu/tcp-dump-undo.js';
import { isTaskNetworkHold, type TaskNetworkHold } from '../../shared/kernel/task-network-hold.js';
import { removeFillManifests, saveFillManifests, type FillManifest } from './fill-manifests.js';

export type SourceJournalState = 'started' | 'frozen' | 'restored' | 'committing' | 'committed' | 'filled' | 'done';
/** original-lost: the frozen original died before the dest held every page (post-copy, lazy restore): nothing to finish. */
export type MigrationOutcome = 'migrated' | 'rolled-back' | 'original-lost';

/** A process of the tree as journaled: a pid is only this process while its start time matches. */
export interface JournaledProcess {
  hostPid: number;
  startTime: number;
}

export interface StartedFields {
  pid: number;
  to: string;
  epoch: string;
  tree: JournaledProcess[];
}

/** What the journal of one migration says, folded. */
export interface JournaledMigration {
  migrationId: string;
  /** The last state written. */
  state: SourceJournalState;
  started: StartedFields;
  imagesDir?: string;
  /** The dump was --tcp-established: where its lock is (tcp-dump-undo.ts). */
  tcpLock?: TcpDumpLock;
  /** The task has its own network namespace, held before the dump (task-network-hold.ts). */
  hold?: TaskNetworkHold;
  /** The ifindex of the hold's outer veth end at the freeze: the resolver deletes that link only (outer-veth.ts). */
  outerIfindex?: number;
  restoredPid?: number;
  /** The dest restored lazily: a Commit confirmed leaves the original frozen until the fill is done. */
  lazyRestore: boolean;
  /** Committed with a lazy restore whose fill has not been reported done (the original waits, frozen). */
  fillPending: boolean;
  outcome?: MigrationOutcome;
  /** When the last entry was written (wall-clock ms). */
  at: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The tree's processes with their start times (those that exited since are left out). */
export function journaledTree(pids: readonly number[]): JournaledProcess[] {
  return pids.flatMap((hostPid) => {
    const st = readStat(hostPid);
    return st ? [{ hostPid, startTime: st.startTime }] : [];
  });
}

export class SourceJournal {
  private constructor(
    readonly migrationId: string,
    private readonly dir: string,
    private readonly file: JournalFile,
  ) {}

  /** A new migration's journal, locked by this process, its `started` entry on disk. */
  static async begin(dir: string, migrationId: string, started: StartedFields): Promise<SourceJournal> {
    const file = await JournalFile.open(dir, migrationId, 'source.journal-write');
    if (!file) throw new FerryError('INTERNAL', { side: 'source', detail: `the journal of the new migration ${migrationId} is locked` });
    const j = new SourceJournal(migrationId, dir, file);
    await j.record('started', { ...started });
    return j;
  }

  /**
   * The journal of a migration whose process is gone, locked for its resolution: RESUME_NOTHING_TO_RESUME
   * without one, MIGRATION_IN_PROGRESS while its process lives.
   */
  static async take(dir: string, migrationId: string): Promise<{ journal: SourceJournal; migration: JournaledMigration }> {
    if (!UUID.test(migrationId)) throw new FerryError('BAD_ARGUMENT', { message: `not a migration id: ${migrationId}`, hint: 'A migration id is the UUID of the "started" line of `ferry migrate`.' });
    const migration = await readSourceJournal(dir, migrationId);
    const file = await JournalFile.open(dir, migrationId, 'source.journal-write');
    if (!file) throw new FerryError('MIGRATION_IN_PROGRESS', { detail: `migration ${migrationId}` });
    return { journal: new SourceJournal(migrationId, dir, file), migration };
  }

  /** A `done` also removes the fill's manifests: nothing resolves a finished migration again. */
  async record(state: SourceJournalState, fields: Record<string, unknown> = {}): Promise<void> {
    await this.file.record(state, fields);
    if (state === 'done') await removeFillManifests(this.dir, this.migrationId);
  }

  /** What a resolver needs to run a lazy restore's fill again (fill-manifests.ts); on disk when it resolves. */
  async saveFillManifests(manifests: readonly FillManifest[], pageSize: number): Promise<void> {
    await saveFillManifests(this.dir, this.migrationId, manifests, pageSize);
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

/** The journals in `dir` (by migration id), oldest first. */
export async function sourceJournalIds(dir: string): Promise<string[]> {
  return journalIds(dir, (id) => UUID.test(id));
}

/** Folds a migration's journal; RESUME_NOTHING_TO_RESUME without one, JOURNAL_UNREADABLE when damaged. */
export async function readSourceJournal(dir: string, migrationId: string): Promise<JournaledMigration> {
  const path = journalPath(dir, migrationId);
  let entries: JournalEntry[];
  try {
    entries = await readJournal(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FerryError('RESUME_NOTHING_TO_RESUME', { detail: `no ${path}` });
    throw e;
  }
  const first = entries[0];
  // Torn at its first write: the migration died before it asked anything of the dest.
  if (!first) throw new FerryError('RESUME_NOTHING_TO_RESUME', { detail: `${path} is empty: the migration died before it began` });
  if (first.state !== 'started') throw new FerryError('JOURNAL_UNREADABLE', { detail: `${path}: it does not begin with "started"` });
  const m: JournaledMigration = { migrationId, state: 'started', started: checkStarted(first, path), lazyRestore: false, fillPending: false, at: first.at };
  for (const e of entries) {
    m.state = e.state as SourceJournalState;
    m.at = e.at;
    if (e.state === 'frozen' && typeof e.imagesDir === 'string') m.imagesDir = e.imagesDir;
    if (e.state === 'frozen' && isTcpDumpLock(e.tcpLock)) m.tcpLock = e.tcpLock;
    if (e.state === 'frozen' && isTaskNetworkHold(e.hold)) m.hold = e.hold;
    if (e.state === 'frozen' && Number.isInteger(e.outerIfindex) && (e.outerIfindex as number) > 0) m.outerIfindex = e.outerIfindex as number;
    if ((e.state === 'restored' || e.state === 'committed') && typeof e.restoredPid === 'number') m.restoredPid = e.restoredPid;
    if (e.state === 'restored') m.lazyRestore = e.restore === 'lazy';
    if (e.state === 'committed') m.fillPending = e.fill === 'pending';
    if (e.state === 'filled') m.fillPending = false;
    if (e.state === 'done') m.outcome = e.outcome === 'migrated' || e.outcome === 'original-lost' ? e.outcome : 'rolled-back';
  }
  return m;
}

function checkStarted(e: JournalEntry, path: string): StartedFields {
  const tree = Array.isArray(e.tree) ? (e.tree as unknown[]) : [];
  const ok =
    Number.isSafeInteger(e.pid) &&
    typeof e.to === 'string' &&
    typeof e.epoch === 'string' &&
    tree.every((p) => p && typeof p === 'object' && Number.isSafeInteger((p as JournaledProcess).hostPid) && Number.isSafeInteger((p as JournaledProcess).startTime));
  if (!ok) throw new FerryError('JOURNAL_UNREADABLE', { detail: `${path}: its "started" entry lacks the task or the dest` });
  return { pid: e.pid as number, to: e.to as string, epoch: e.epoch as string, tree: tree as JournaledProcess[] };
}
