/**
 * The criu processes working on an images dir, found from /proc, and a bounded wait for them to end. A
 * restarted agent uses them: a restore its predecessor started runs on (it must not be orphaned half-way),
 * and the images it reads may be removed only once it is gone.
 */
import { readdirSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { readProcText, readStat } from '../kernel/proc-status.js';
import { waitGone } from '../kernel/process-wait.js';
import { killCriuAndDescendants } from './criu-runner.js';

/** After SIGKILL, how long to wait for the killed processes to disappear. */
const REAP_WAIT_MS = 5000;

const gone = (pid: number): boolean => {
  const state = readStat(pid)?.state;
  return state === undefined || state === 'Z' || state === 'X';
};

/**
 * criu's own arguments in a command line: after argv[0] when that is criu, or after the criu path when a
 * dynamic loader runs it (`ld-linux-x86-64.so.2 --library-path ... /path/criu dump ...`, as the provisioned
 * criu does); undefined for any other program.
 */
export function criuArguments(argv: readonly string[]): string[] | undefined {
  const first = basename(argv[0] ?? '');
  if (first === 'criu') return argv.slice(1);
  if (!/^ld(-linux[\w.-]*)?\.so(\.\d+)?$/.test(first)) return undefined;
  const at = argv.findIndex((a, i) => i > 0 && basename(a) === 'criu');
  return at < 0 ? undefined : argv.slice(at + 1);
}

/** The images dir criu's arguments name (`-D DIR`, `--images-dir DIR` or `--images-dir=DIR`), as given. */
export function criuImagesDir(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-D' || a === '--images-dir') return args[i + 1];
    if (a.startsWith('--images-dir=')) return a.slice('--images-dir='.length);
  }
  return undefined;
}

/**
 * The live criu processes whose arguments name exactly this images dir (resolved to an absolute path, as Ferry
 * passes it; a dir that merely starts with the same characters is another dir). Only criu itself: its forks,
 * which carry its command line until they become the tasks a restore makes, are left out (a fork is a child of
 * a criu found here), so that waiting for these to end never waits for, or kills, a restored task.
 */
export function criuProcessesFor(imagesDir: string): number[] {
  const want = resolve(imagesDir);
  const found = new Map<number, number>(); // pid -> ppid
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    let text: string | undefined;
    try {
      text = readProcText(`/proc/${pid}/cmdline`);
    } catch {
      continue; // unreadable: not one this agent could have started
    }
    if (!text) continue; // gone, a zombie or a kernel thread
    const args = criuArguments(text.replace(/\0$/, '').split('\0'));
    const dir = args && criuImagesDir(args);
    if (dir === undefined || resolve(dir) !== want) continue;
    const stat = readStat(pid);
    if (stat && stat.state !== 'Z' && stat.state !== 'X') found.set(pid, stat.ppid);
  }
  return [...found].filter(([, ppid]) => !found.has(ppid)).map(([pid]) => pid);
}

export interface WaitGoneOrKillResult {
  /** Ended on their own within the timeout. */
  exited: number[];
  /** Still there at the timeout: SIGKILLed with all they started (and waited for, up to REAP_WAIT_MS more). */
  killed: number[];
}

/**
 * Waits up to `timeoutMs` for the criu processes `pids` to end, then kills those left with everything they
 * started and waits for them (bounded): a restore's half-made tree, its criu killed, would run on its own. A pid
 * is killed only while it is still the process it was at the call (same start time): a pid reused meanwhile is
 * someone else's.
 */
export async function waitGoneOrKill(pids: readonly number[], timeoutMs: number): Promise<WaitGoneOrKillResult> {
  const started = new Map<number, number>();
  for (const pid of new Set(pids)) {
    const stat = readStat(pid);
    if (stat) started.set(pid, stat.startTime);
  }
  const live = [...started.keys()];
  await waitGone(live, timeoutMs);
  const killed = live.filter((pid) => !gone(pid) && readStat(pid)?.startTime === started.get(pid));
  for (const pid of killed) await killCriuAndDescendants(pid);
  if (killed.length > 0) await waitGone(killed, REAP_WAIT_MS);
  return { exited: live.filter((pid) => !killed.includes(pid)), killed };
}
