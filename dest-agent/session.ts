/**
 * One migration as the dest sees it. State union (documented for operators in docs/protocol.md):
 *   receiving -> restoring -> restored -> committed
 *        \            \           \----> aborted (Abort, or the commit lease ran out)
 *         \------------\----------------> aborted
 * The restored copy stays stopped until Commit; only Commit resumes it, and nothing undoes a commit.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TaskPageStore } from './page-store.js';
import type { Logger } from '../shared/logging/logger.js';

export type DestSessionState = 'receiving' | 'restoring' | 'restored' | 'committed' | 'aborted';

export class DestSession {
  state: DestSessionState = 'receiving';
  readonly stores = new Map<number, TaskPageStore>();
  readonly imagesDir: string;
  readonly storeDir: string;
  /** The parent-image chain CRIU restores the pages from (built from the store at the freeze). */
  readonly chainDir: string;
  /** CRIU logs outlive the session: a failed restore must stay diagnosable after the rollback. */
  readonly logDir: string;
  restoredPid: number | undefined;
  commitLease: NodeJS.Timeout | undefined;
  /** Bytes received per image, to check offsets and sizes. */
  readonly images = new Map<string, { written: number; total: number }>();

  private constructor(
    readonly id: string,
    readonly epoch: bigint,
    readonly dir: string,
    readonly pageSize: number,
    readonly log: Logger,
  ) {
    this.imagesDir = join(dir, 'images');
    this.storeDir = join(dir, 'pages');
    this.chainDir = join(dir, 'chain');
    this.logDir = join(dir, '..', 'logs');
  }

  static async create(workDir: string, id: string, epoch: bigint, pageSize: number, log: Logger): Promise<DestSession> {
    const s = new DestSession(id, epoch, join(workDir, id), pageSize, log);
    await mkdir(s.imagesDir, { recursive: true });
    await mkdir(s.storeDir, { recursive: true });
    await mkdir(s.logDir, { recursive: true });
    return s;
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
