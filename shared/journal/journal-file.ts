/**
 * An append-only journal of one migration on one agent: one JSON line per decision, each on disk (fdatasync)
 * before the decision is acted on, so that a restarted agent finishes or undoes what was in flight instead of
 * guessing. The file of a migration in progress is flock'ed by its writer: a resolver that gets the lock knows
 * the writer is gone (the kernel drops the lock with the process), one that does not leaves it alone.
 * A crash in the middle of a write leaves a torn last line; readers skip it (the decision it carried was not
 * acted on: acting comes only after the write returned).
 */
import { mkdir, open, readdir, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../errors/ferry-error.js';
import { faultPending, injectFault, type FaultPoint } from '../fault-injection.js';
import { tryExclusiveFlock } from '../native/libc.js';

/** Far more than any migration writes (a dozen lines); a bigger file is not ours and is refused. */
export const MAX_JOURNAL_BYTES = 64 * 1024;
const SUFFIX = '.journal';

export interface JournalEntry {
  readonly state: string;
  /** Wall-clock milliseconds when it was written. */
  readonly at: number;
  readonly [field: string]: unknown;
}

/** A journal being written, locked by this process until close(). */
export class JournalFile {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly tornWritePoint: FaultPoint,
  ) {}

  /**
   * Opens (creating it if need be) the journal of `id` in `dir` (mode 0700, files 0600: they hold the session's
   * epoch) and locks it; undefined when another live process holds it.
   */
  static async open(dir: string, id: string, tornWritePoint: FaultPoint): Promise<JournalFile | undefined> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const path = journalPath(dir, id);
    const fh = await open(path, 'a', 0o600);
    if (!tryExclusiveFlock(fh.fd)) {
      await fh.close();
      return undefined;
    }
    // The new name must survive a crash as well as the lines in it.
    const d = await open(dir, 'r');
    await d.sync().finally(() => d.close());
    return new JournalFile(path, fh, tornWritePoint);
  }

  /** Appends one entry and returns once it is on disk. */
  async record(state: string, fields: Record<string, unknown> = {}): Promise<void> {
    const line = Buffer.from(`${JSON.stringify({ ...fields, state, at: Date.now() })}\n`);
    if (faultPending(this.tornWritePoint)) {
      await this.fh.write(line.subarray(0, line.length >> 1));
      await this.fh.datasync();
      injectFault(this.tornWritePoint);
    }
    await this.fh.write(line);
    await this.fh.datasync();
  }

  /** Releases the lock (the entries stay). Idempotent. */
  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

export function journalPath(dir: string, id: string): string {
  return join(dir, `${id}${SUFFIX}`);
}

/** The ids with a journal in `dir` whose name passes `isId` (anything else there is left alone). */
export async function journalIds(dir: string, isId: (id: string) => boolean): Promise<string[]> {
  const names = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [];
    throw e;
  });
  return names.filter((n) => n.endsWith(SUFFIX)).map((n) => n.slice(0, -SUFFIX.length)).filter(isId);
}

/**
 * The entries of a journal in order; a torn last line is dropped. JOURNAL_UNREADABLE for a file too big or
 * with a broken line before the last (not a crash's doing: damage, or not Ferry's file).
 */
export async function readJournal(path: string): Promise<JournalEntry[]> {
  const st = await stat(path);
  if (st.size > MAX_JOURNAL_BYTES) throw new FerryError('JOURNAL_UNREADABLE', { detail: `${path}: ${st.size} bytes, more than ${MAX_JOURNAL_BYTES}` });
  const lines = (await readFile(path, 'utf8')).split('\n');
  // After the final newline: '' unless the last write was torn. Dropped even when it parses: its write had
  // not returned, so nothing acted on it.
  lines.pop();
  const entries: JournalEntry[] = [];
  for (const [i, line] of lines.entries()) {
    const e = parseEntry(line);
    if (!e) throw new FerryError('JOURNAL_UNREADABLE', { detail: `${path}: line ${i + 1} is not a journal entry` });
    entries.push(e);
  }
  return entries;
}

function parseEntry(line: string): JournalEntry | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v) && typeof (v as JournalEntry).state === 'string' && typeof (v as JournalEntry).at === 'number') return v as JournalEntry;
  } catch {
    /* torn or foreign */
  }
  return undefined;
}

export async function removeJournal(path: string): Promise<void> {
  await rm(path, { force: true });
}
