/**
 * One migration as the dest sees it. The session owns its state; `transition()` is the only way to change it
 * and refuses any move not in this table (documented for operators in docs/protocol.md):
 *
 *   from        to          by
 *   receiving   restoring   Restore, once the images are complete
 *   restoring   restored    criu restore left a stopped copy and the pages read back good
 *   restored    committed   Commit resumed the copy
 *   receiving   aborted     Abort, or the agent stopping
 *   restoring   aborted     the restore failed (the copy, if any, is killed), Abort, or the agent stopping
 *   restored    aborted     Abort, the commit lease ran out, or the agent stopping
 *
 * committed and aborted are final. The restored copy stays stopped until Commit; only Commit resumes it, and
 * nothing undoes a commit. Every state a session enters, its opening included, is announced to one listener.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ErrorKey } from '../shared/errors/codes.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { LogFields, Logger } from '../shared/logging/logger.js';
import type { Phase } from '../shared/phases.js';
import { TaskPageStore } from './page-store.js';
import { UploadedImages } from './uploaded-images.js';

export type DestSessionState = 'receiving' | 'restoring' | 'restored' | 'committed' | 'aborted';

const NEXT: Readonly<Record<DestSessionState, readonly DestSessionState[]>> = {
  receiving: ['restoring', 'aborted'],
  restoring: ['restored', 'aborted'],
  restored: ['committed', 'aborted'],
  committed: [],
  aborted: [],
};

/** The phase in which a session enters each state: the phase of a refused move. */
const PHASE_OF: Readonly<Record<DestSessionState, Phase>> = {
  receiving: 'prepare',
  restoring: 'restore',
  restored: 'restore',
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
  commitLease: NodeJS.Timeout | undefined;

  private constructor(
    readonly id: string,
    readonly epoch: bigint,
    readonly dir: string,
    readonly pageSize: number,
    readonly log: Logger,
    private readonly onTransition: DestSessionListener,
  ) {
    this.imagesDir = join(dir, 'images');
    this.storeDir = join(dir, 'pages');
    this.logDir = join(dir, '..', 'logs');
    this.images = new UploadedImages(this.imagesDir);
  }

  static async create(init: DestSessionInit): Promise<DestSession> {
    const s = new DestSession(init.id, init.epoch, join(init.workDir, init.id), init.pageSize, init.log, init.onTransition);
    await mkdir(s.imagesDir, { recursive: true });
    await mkdir(s.storeDir, { recursive: true });
    await mkdir(s.logDir, { recursive: true });
    s.onTransition({ session: s, from: undefined, to: s.current, fields: init.fields ?? {} });
    return s;
  }

  get state(): DestSessionState {
    return this.current;
  }

  /** Moves to `to` and announces it; SESSION_CONFLICT when the table does not allow the move. */
  transition(to: DestSessionState, fields: LogFields = {}): void {
    const from = this.current;
    if (!NEXT[from].includes(to)) {
      throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: PHASE_OF[to], detail: `session ${this.id} cannot go from ${from} to ${to}` });
    }
    this.current = to;
    this.onTransition({ session: this, from, to, fields });
  }

  /** Refuses a call that needs the session in `state` (SESSION_CONFLICT unless the caller names its own code). */
  expect(state: DestSessionState, phase: Phase, code: ErrorKey = 'SESSION_CONFLICT'): void {
    if (this.current !== state) throw new FerryError(code, { side: 'dest', phase, detail: `session is ${this.current}` });
  }

  async store(task: number): Promise<TaskPageStore> {
    let st = this.stores.get(task);
    if (!st) {
      st = await TaskPageStore.open(this.storeDir, task, this.pageSize);
      this.stores.set(task, st);
    }
    return st;
  }

  /** Closes the stores and deletes everything on disk (images, pages, logs stay only in the agent log). */
  async removeFiles(): Promise<void> {
    clearTimeout(this.commitLease);
    for (const st of this.stores.values()) await st.close().catch(() => undefined);
    this.stores.clear();
    await rm(this.dir, { recursive: true, force: true });
  }
}
