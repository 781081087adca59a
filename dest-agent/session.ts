/**
 * One migration as the dest sees it. The session owns its state; `transition()` is the only way to change it
 * and refuses any move not in this table (documented for operators in docs/protocol.md):
 *
 *   from        to          by
 *   receiving   restoring   Restore, once the images are complete
 *   restoring   restored    criu restore left a stopped copy and the pages read back good
 *   restored    committed   Commit resumed the copy (an eager restore: every page was in)
 *   restored    filling     Commit resumed the copy of a lazy restore: its pager is still filling pages
 *   filling     committed   the pager put every page in
 *   filling     aborted     the pager failed or died: its guardian killed the copy (the source resumes the original)
 *   receiving   aborted     Abort, or the agent stopping
 *   restoring   aborted     the restore failed (the copy, if any, is killed), Abort, or the agent stopping
 *   restored    aborted     Abort, the commit lease ran out, or the agent stopping
 *
 * committed and aborted are final. The restored copy stays stopped until Commit; only Commit resumes it, and
 * nothing undoes a commit (a copy whose pages could not all be given is killed, never left running). Every state a session enters, its opening included, is journaled (dest-journal.ts:
 * on disk before the caller acts on it) and announced to one listener. A restarted agent revives a session
 * that was restored (restart-recovery.ts); every other state it finds is ended there.
 */
import { mkdir, rm } from 'node:fs/promises';
import type { JournalFile } from '../shared/journal/journal-file.js';
import { join } from 'node:path';
import type { ErrorKey } from '../shared/errors/codes.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { LogFields, Logger } from '../shared/logging/logger.js';
import type { Phase } from '../shared/phases.js';
import { LevelFilePool } from './level-file-pool.js';
import { TaskPageStore } from './page-store.js';
import type { PeerKey } from './peer-key.js';
import { MAX_TASKS } from './request-bounds.js';
import { SessionBudget } from './session-budget.js';
import { UploadedImages } from './uploaded-images.js';
import { LOGS_DIR, markSessionDir } from './work-dir.js';
import { openDestJournal } from './dest-journal.js';
import type { PagerLink } from './lazy/pager-link.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';

export type DestSessionState = 'receiving' | 'restoring' | 'restored' | 'filling' | 'committed' | 'aborted';

const NEXT: Readonly<Record<DestSessionState, readonly DestSessionState[]>> = {
  receiving: ['restoring', 'aborted'],
  restoring: ['restored', 'aborted'],
  restored: ['committed', 'filling', 'aborted'],
  filling: ['committed', 'aborted'],
  committed: [],
  aborted: [],
};

/** The phase in which a session enters each state: the phase of a refused move. */
const PHASE_OF: Readonly<Record<DestSessionState, Phase>> = {
  receiving: 'prepare',
  restoring: 'restore',
  restored: 'restore',
  filling: 'commit',
  committed: 'commit',
  aborted: 'rollback',
};

export interface DestSessionTransition {
  readonly session: DestSession;
  /** Undefined when the session was just opened. */
  readonly from: DestSessionState | undefined;
  readonly to: DestSessionState;
  /** What the step knows (reason, restored pid, timings), for the log; never page contents. */
  readonly fields: LogFields;
}

/** Called synchronously on every transition, after the state changed. Must not throw. */
export type DestSessionListener = (t: DestSessionTransition) => void;

export interface DestSessionInit {
  workDir: string;
  id: string;
  epoch: bigint;
  pageSize: number;
  log: Logger;
  onTransition: DestSessionListener;
  /** Announced with the opening (the request's task name, expected bytes). */
  fields?: LogFields;
  /** Who opened it (peer-key.ts), for the per-peer bounds. */
  peer?: PeerKey;
  /** What it may hold (session-budget.ts); no bound unless told. */
  budget?: SessionBudget;
  /** The agent's level files; the session's own (8 files) unless told. */
  files?: LevelFilePool;
  /** Store levels per task. */
  maxStoreLevels?: number;
}

export class DestSession {
  private current: DestSessionState = 'receiving';
  readonly stores = new Map<number, TaskPageStore>();
  readonly imagesDir: string;
  readonly storeDir: string;
  /** CRIU logs outlive the session: a failed restore must stay diagnosable after the rollback. */
  readonly logDir: string;
  /** The images uploaded so far, and how much of each. */
  readonly images: UploadedImages;
  restoredPid: number | undefined;
  /** The task's own network as restored here (restore-task-network.ts): its hold goes at the Commit. */
  taskNetwork: TaskNetwork | undefined;
  /** The pager of a lazy restore (pager-link.ts); undefined for an eager one. */
  pager: PagerLink | undefined;
  /** The stores a lazy restore's pager reads (closed; their files removed with the session). */
  lazyStores: TaskPageStore[] = [];
  /** Pages of each task's manifest, for the Fill stream's bounds. */
  fillPages: Map<number, number> | undefined;
  /** Post-copy: each task's remote bitmap (pages the dest has no bytes of: the Fill never confirms them). */
  fillRemote: Map<number, Buffer> | undefined;
  /** When Commit resumed the copy (a repeated Commit of a filling session gets the same answer). */
  resumedAtUs: bigint | undefined;
  commitLease: NodeJS.Timeout | undefined;
  readonly peer: PeerKey;
  readonly budget: SessionBudget;
  private readonly files: LevelFilePool;
  private readonly maxStoreLevels: number | undefined;
  /** Aborts a session that hears nothing while it receives (expireWhenIdle); refreshed by touch(). */
  private idle: NodeJS.Timeout | undefined;
  private journal!: JournalFile;
  /** The round of the last page batch received (the final delta's count as the round after the last one). */
  private lastRound: number | undefined;
  private imagesArriving = false;
  /** Every line about this session, with its phase and round as they are when the line is written. */
  readonly log: Logger;

  private constructor(
    readonly id: string,
    readonly epoch: bigint,
    readonly dir: string,
    readonly pageSize: number,
    log: Logger,
    private readonly onTransition: DestSessionListener,
    init: DestSessionInit,
  ) {
    this.log = log.withContext(() => ({ phase: this.phase, round: this.phase === 'precopy' ? this.lastRound : undefined }));
    this.imagesDir = join(dir, 'images');
    this.storeDir = join(dir, 'pages');
    this.logDir = join(dir, '..', LOGS_DIR);
    this.peer = init.peer ?? 'local';
    this.budget = init.budget ?? SessionBudget.unlimited(init.pageSize);
    this.files = init.files ?? new LevelFilePool(8);
    this.maxStoreLevels = init.maxStoreLevels;
    this.images = new UploadedImages(this.imagesDir, this.budget);
  }

  static async create(init: DestSessionInit): Promise<DestSession> {
    const s = new DestSession(init.id, init.epoch, join(init.workDir, init.id), init.pageSize, init.log, init.onTransition, init);
    await mkdir(s.dir, { recursive: true });
    await markSessionDir(s.dir, s.id);
    await mkdir(s.imagesDir, { recursive: true });
    await mkdir(s.storeDir, { recursive: true });
    await mkdir(s.logDir, { recursive: true });
    s.journal = await openDestJournal(init.workDir, s.id);
    await s.journal.record('receiving', { epoch: s.epoch.toString(), peer: s.peer });
    s.onTransition({ session: s, from: undefined, to: s.current, fields: init.fields ?? {} });
    return s;
  }

  /** A session a previous agent restored, taken over by this one in `restored` or `filling` (restart-recovery.ts). */
  static async revive(init: DestSessionInit & { restoredPid: number; state: 'restored' | 'filling'; resumedAtUs?: bigint; taskNetwork?: TaskNetwork }): Promise<DestSession> {
    const s = new DestSession(init.id, init.epoch, join(init.workDir, init.id), init.pageSize, init.log, init.onTransition, init);
    s.current = init.state;
    s.resumedAtUs = init.resumedAtUs;
    s.restoredPid = init.restoredPid;
    s.taskNetwork = init.taskNetwork;
    s.journal = await openDestJournal(init.workDir, s.id);
    s.onTransition({ session: s, from: undefined, to: s.current, fields: { ...init.fields, revived: true } });
    return s;
  }

  /**
   * While the session receives, `onIdle` runs once no call reached it for `ms` (touch() restarts the wait).
   * Leaving `receiving` ends the wait: a restore has its timeout, a restored copy its commit lease.
   */
  expireWhenIdle(ms: number, onIdle: () => void): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(onIdle, ms);
    this.idle.unref();
  }

  /** A call reached the session. */
  touch(): void {
    this.idle?.refresh();
  }

  get state(): DestSessionState {
    return this.current;
  }

  /**
   * The migration's phase as this side sees it, for the log: prepare until the first page, precopy while pages
   * come, final-delta once the images do; then what the state says.
   */
  get phase(): Phase {
    switch (this.current) {
      case 'receiving':
        return this.imagesArriving ? 'final-delta' : this.lastRound === undefined ? 'prepare' : 'precopy';
      case 'restoring':
      case 'restored':
        return 'restore';
      case 'filling':
        return 'fill';
      case 'committed':
        return 'commit';
      case 'aborted':
        return 'rollback';
    }
  }

  /** A page batch of `round` arrived. True for the first of its round. */
  receivedRound(round: number): boolean {
    if (round === this.lastRound) return false;
    this.lastRound = round;
    return true;
  }

  /** The final delta's images began to arrive. */
  imagesBegan(): void {
    this.imagesArriving = true;
  }

  /**
   * Moves to `to` (at once: a call racing this one sees the new state), announces it, and resolves once the
   * journal holds it, so the caller acts only on a decision that survives a crash. SESSION_CONFLICT when the
   * table does not allow the move. `journaled` is what a restart needs besides the state (pids, the lease).
   */
  transition(to: DestSessionState, fields: LogFields = {}, journaled: Record<string, unknown> = {}): Promise<void> {
    const from = this.current;
    // Thrown, not rejected: a refused move is the caller's bug or a race it must see at once.
    if (!NEXT[from].includes(to)) {
      throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: PHASE_OF[to], detail: `session ${this.id} cannot go from ${from} to ${to}` });
    }
    this.current = to;
    if (to !== 'receiving') clearTimeout(this.idle);
    this.onTransition({ session: this, from, to, fields });
    const written = this.journal.record(to, journaled);
    return to === 'committed' || to === 'aborted' ? written.finally(() => this.journal.close()) : written;
  }

  /** Refuses a call that needs the session in `state` (SESSION_CONFLICT unless the caller names its own code). */
  expect(state: DestSessionState, phase: Phase, code: ErrorKey = 'SESSION_CONFLICT'): void {
    if (this.current !== state) throw new FerryError(code, { side: 'dest', phase, detail: `session is ${this.current}` });
  }

  /** The task's page store, opened on its first page; PAGE_STORE_LIMIT past MAX_TASKS tasks. */
  store(task: number): TaskPageStore {
    let st = this.stores.get(task);
    if (!st) {
      if (this.stores.size >= MAX_TASKS) {
        throw new FerryError('PAGE_STORE_LIMIT', { side: 'dest', phase: 'precopy', detail: `pages for more than ${MAX_TASKS} tasks` });
      }
      st = TaskPageStore.create(this.storeDir, task, this.pageSize, { files: this.files, budget: this.budget, maxLevels: this.maxStoreLevels });
      this.stores.set(task, st);
    }
    return st;
  }

  /** Closes the stores and deletes everything on disk (images, pages, logs stay only in the agent log). */
  async removeFiles(): Promise<void> {
    clearTimeout(this.commitLease);
    clearTimeout(this.idle);
    for (const st of [...this.stores.values(), ...this.lazyStores]) await st.close().catch(() => undefined);
    this.stores.clear();
    this.lazyStores = [];
    await this.journal.close(); // the journal itself stays: it tells how the session ended
    await rm(this.dir, { recursive: true, force: true });
  }
}
