/**
 * The open files of the page stores' levels, shared by the whole agent and bounded: a level file is opened
 * when it is written or read and stays open while it is used recently; past `max` the least recently used
 * idle one is closed (and reopened when needed again). So descending pages, many tasks or many sessions
 * cost files on disk, never the agent's file descriptors.
 */
import { open, type FileHandle } from 'node:fs/promises';

interface Entry {
  handle: Promise<FileHandle>;
  users: number;
}

export class LevelFilePool {
  /** Insertion order is recency: a used entry is moved to the end. */
  private readonly entries = new Map<string, Entry>();

  constructor(readonly max: number) {}

  /** Creates (or truncates) the file at `path`; it then belongs to the pool until forget(). */
  async create(path: string): Promise<void> {
    await this.forget(path);
    await this.use(path, () => Promise.resolve(), 'w+');
  }

  /** Runs `fn` with the file open; it is not closed while any `fn` runs on it. */
  async use<T>(path: string, fn: (fh: FileHandle) => Promise<T>, flags = 'r+'): Promise<T> {
    let e = this.entries.get(path);
    if (e) {
      this.entries.delete(path);
    } else {
      e = { handle: open(path, flags), users: 0 };
    }
    this.entries.set(path, e);
    e.users++;
    try {
      const fh = await e.handle.catch((err: unknown) => {
        if (this.entries.get(path) === e) this.entries.delete(path);
        throw err;
      });
      await this.evict();
      return await fn(fh);
    } finally {
      e.users--;
    }
  }

  /** Closes the file if open (before it is renamed or removed). */
  async forget(path: string): Promise<void> {
    const e = this.entries.get(path);
    if (!e) return;
    this.entries.delete(path);
    await e.handle.then((fh) => fh.close()).catch(() => undefined);
  }

  get openFiles(): number {
    return this.entries.size;
  }

  private async evict(): Promise<void> {
    for (const [path, e] of this.entries) {
      if (this.entries.size <= this.max) return;
      if (e.users > 0) continue;
      this.entries.delete(path);
      await e.handle.then((fh) => fh.close()).catch(() => undefined);
    }
  }
}
