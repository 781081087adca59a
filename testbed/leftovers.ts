/** What a test checks for afterwards: files a migration left, processes that carry a workload's name or work in a
 * dir (a CRIU left running), namespaces. */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { WORK_DIR_MARKER } from '../dest-agent/work-dir.js';
import { readSourceEnvironment, sourceJournalDir } from '../source-agent/config/environment.js';
import { readSourceJournal, sourceJournalIds } from '../source-agent/migration/source-journal.js';

/**
 * Entries of dir other than logs/ and the work dir's marker (a migration's session dir on the dest, its images
 * dir on the source), and every journal in journal/ whose session has not ended (named `journal/ID: STATE`).
 */
export function leftovers(dir: string): string[] {
  try {
    const open = existsSync(join(dir, 'journal'))
      ? readdirSync(join(dir, 'journal')).flatMap((f) => {
          const last = readFileSync(join(dir, 'journal', f), 'utf8').trimEnd().split('\n').at(-1) ?? '';
          const state = (JSON.parse(last || '{}') as { state?: string }).state;
          return state === 'committed' || state === 'aborted' ? [] : [`journal/${f}: ${state}`];
        })
      : [];
    return [...readdirSync(dir).filter((e) => e !== 'logs' && e !== 'journal' && e !== WORK_DIR_MARKER), ...open];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * The source's migrations under a state dir (FERRY_STATE_DIR) whose journal does not say `done`, as `ID: STATE`:
 * what a restarted source (or `ferry migrate --resume`) still has to finish. Read with the product's own reader.
 */
export async function unresolvedSourceMigrations(stateDir: string): Promise<string[]> {
  const dir = sourceJournalDir(readSourceEnvironment({ FERRY_STATE_DIR: stateDir }));
  const open: string[] = [];
  for (const id of await sourceJournalIds(dir)) {
    const m = await readSourceJournal(dir, id).catch((e: Error) => ({ state: `unreadable (${e.message})` }));
    if (m.state !== 'done') open.push(`${id}: ${m.state}`);
  }
  return open;
}

/** Inode of a namespace file (/proc/PID/ns/net, /run/netns/NAME): equal inodes are the same namespace. */
export function nsInode(path: string): number {
  return statSync(path).ino;
}

/** [pid, argv] of every process whose argv can be read now (a zombie's is empty). */
function* processArgvs(): Generator<[number, string[]]> {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      yield [Number(entry), readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')];
    } catch {
      /* gone meanwhile */
    }
  }
}

/** Host pids of live (non-zombie) processes running `program` (the basename of argv[0]) whose argv contains
 * `flag value` as two consecutive words. The program matters: a launcher (unshare, nsenter) carries the same words. */
export function pidsWithArgs(program: string, flag: string, value: string): number[] {
  const found: number[] = [];
  for (const [pid, argv] of processArgvs()) {
    const i = argv.indexOf(flag);
    if (basename(argv[0] ?? '') === program && i >= 0 && argv[i + 1] === value) found.push(pid);
  }
  return found;
}

/** Host pids of live processes running `program` with an argument that is `dir` or a path below it (e.g. a criu
 * whose -D or --work-dir is in a dest's work dir or a source's images dir); --opt=PATH counts as PATH. */
export function pidsWithArgUnder(program: string, dir: string): number[] {
  const root = dir.replace(/\/+$/, '');
  const under = (p: string): boolean => p === root || p.startsWith(`${root}/`);
  const found: number[] = [];
  for (const [pid, argv] of processArgvs()) {
    if (basename(argv[0] ?? '') === program && argv.slice(1).some((a) => under(a) || under(a.slice(a.indexOf('=') + 1)))) found.push(pid);
  }
  return found;
}
