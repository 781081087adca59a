/** What a test checks for afterwards: files a migration left, processes that carry a workload's name, namespaces. */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { WORK_DIR_MARKER } from '../dest-agent/work-dir.js';

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

/** Inode of a namespace file (/proc/PID/ns/net, /run/netns/NAME): equal inodes are the same namespace. */
export function nsInode(path: string): number {
  return statSync(path).ino;
}

/** Host pids of live (non-zombie) processes running `program` (the basename of argv[0]) whose argv contains
 * `flag value` as two consecutive words. The program matters: a launcher (unshare, nsenter) carries the same words. */
export function pidsWithArgs(program: string, flag: string, value: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf(flag);
      if (basename(argv[0] ?? '') === program && i >= 0 && argv[i + 1] === value) found.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

