/**
 * Driver for the memtest workload (memtest.c): builds it, starts it as a migratable task (pid 1 of its own pid
 * namespace, session leader, only fds 0/1/2), and asks it over signals to check its own memory.
 *
 * The report types mirror the JSON the C program writes, key for key (snake_case), so a report read from a
 * file and one typed here are the same object.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { processStartTime, readPidState } from '../process-probes.js';
import { waitFor } from '../wait-for.js';

// Where they lived first; tests import them from here.
export { readPidState } from '../process-probes.js';
export { waitFor } from '../wait-for.js';

const execFileAsync = promisify(execFile);

const SOURCE = fileURLToPath(new URL('./memtest.c', import.meta.url));
const DRIVER = fileURLToPath(import.meta.url);
/** Outside the sources, ignored by git and eslint; shared by every test run in this checkout. */
const BUILD_DIR = fileURLToPath(new URL('../../build/workloads/', import.meta.url));
const GCC_FLAGS = ['-O2', '-pthread', '-Wall', '-Wextra'];

export interface MemtestOptions {
  /** File-name safe: [A-Za-z0-9._-]{1,64}, not starting with '.'.
   * Reports are `<stateDir>/<name>.{ready,verify,stats}.json`. */
  name: string;
  mib: number;
  /** 0 = idle (it still ticks). */
  dirtyMibPerSec: number;
  stateDir: string;
  /** Path such as /run/netns/X: the task starts inside that network namespace (nsenter --net, never `ip netns
   * exec`, which also makes a mount namespace that CRIU then cannot dump). */
  netns?: string;
  /** Pattern seed, any u64. Default 1. */
  seed?: bigint;
  /** Rewrite only the first hotMib MiB (a working set); the rest stays at generation 0. Default: all of it. */
  hotMib?: number;
  /** MiB of a scratch mapping that SIGWINCH's churn unmaps and zaps in part (default 0: none). */
  churnMib?: number;
  /** The last coldMib MiB PROT_NONE at start, opened and first-touched in order at growMibPerSec: memory a
   * migration's earlier rounds never saw (post-copy's remote pages). Default 0 and 0. */
  coldMib?: number;
  growMibPerSec?: number;
  /** MiB of a mapping filled at start and then made PROT_NONE (process_vm_readv cannot read it; CRIU dumps it):
   * every check opens it, checks it and seals it again. Default 0. */
  sealedMib?: number;
  /** What the data pages hold: random words (default), or heap-like pages (70 % zero, the rest JSON-like text)
   * for the compression benchmark. Either way a pure function of (seed, page, generation): checks work the same. */
  content?: 'random' | 'heap';
  /** After a migration (the first tick on a new host pid): check every page at once, or churn (a lazy restore is
   * then still paging the copy in). The report is read with resumeReport(). */
  onResume?: 'verify' | 'churn';
  /** Append the task's stdout/stderr here instead of /dev/null. The file must still exist when CRIU dumps. */
  logFile?: string;
  /** Bound on build + start + fill. Default: 10 s plus 20 ms per MiB (first touch is slow on this VM class). */
  readyTimeoutMs?: number;
}

export interface ReadyReport {
  name: string;
  /** Namespace pid: 1. */
  pid: number;
  host_pid: number;
  pages: number;
  page_size: number;
  fill_ms: number;
  mib: number;
  hot_mib: number;
  dirty_mib_per_s: number;
  /** u64 as a decimal string. */
  seed: string;
  /** Start of the data mapping, hex ("0x7f..."): a 64-bit address, so never a JS number. */
  base: string;
}

export interface VerifyReport {
  name: string;
  /** Namespace pid (getpid() inside): 1 for the original and for a restored copy. */
  pid: number;
  /** Host pid of the process that wrote the report. */
  host_pid: number;
  pages: number;
  bad_pages: number;
  /** Wrong 8-byte words over all bad pages. */
  bad_words: number;
  first_bad_page: number | null;
  /** Page whose rewrite was interrupted, if any (never set for an in-process check, which runs between writes). */
  in_progress: number | null;
  /** Pages rewritten since the fill (the fill itself does not count). */
  writes: number;
  /** 10 ms ticks of the main loop. */
  ticks: number;
  /** Checks done by this process image, this one included. */
  verifies: number;
  mib: number;
  hot_mib: number;
  dirty_mib_per_s: number;
  seed: string;
  verify_ms: number;
  /** CLOCK_REALTIME when the check began; a driver accepts only checks that began after its request. */
  started_at_ms: number;
  /** CLOCK_REALTIME when the check ended, comparable with Date.now() on the same host. */
  verified_at_ms: number;
  /** Pages written so far (all but the part of --cold-mib not opened yet, which a check skips). */
  grown_pages: number;
  /** Pages of the --sealed-mib mapping; its bad pages count in bad_pages and in sealed_bad_pages. */
  sealed_pages: number;
  sealed_bad_pages: number;
}

export interface StatsReport {
  name: string;
  pid: number;
  host_pid: number;
  writes: number;
  ticks: number;
  /** CLOCK_MONOTONIC of the host the task runs on. */
  mono_ms: number;
  /** CLOCK_REALTIME. */
  at_ms: number;
}

export interface ChurnReport {
  name: string;
  pid: number;
  host_pid: number;
  /** Exit code of the forked child that checked its copy of every page (0 = clean, 1 = bad pages). */
  child_exit: number;
  /** The data mapping moved by mremap from here to there (hex); "0x0" to = the move failed. */
  remapped_from: string;
  remapped_to: string;
  unmapped_pages: number;
  zeroed_pages: number;
  /** Pages of the madvise(DONTNEED) range that did not read zero. */
  zero_bad_pages: number;
  /** Pages of the scratch's last quarter with a wrong pattern. */
  scratch_bad_pages: number;
  churns: number;
  started_at_ms: number;
  churned_at_ms: number;
}

export interface MemtestHandle {
  readonly name: string;
  readonly stateDir: string;
  /** The spawned `[nsenter] unshare` process (a host pid; it waits for the namespace's pid 1). */
  readonly unsharePid: number;
  /** Host pid of the namespace's pid 1, which is the memtest process: the pid to dump. */
  readonly rootPid: number;
  readonly ready: ReadyReport;
  /** Address of page 0 of the data mapping in the task (at the start: a churn moves it). Pages are contiguous, ready.page_size apart. */
  readonly baseAddress: bigint;
  /** SIGUSR1 to hostPid (default rootPid), then waits for a report by that pid of a check begun after the
   * request. Throws at once if the pid is gone or stopped (a stopped task would leave the signal pending). */
  verify(hostPid?: number, timeoutMs?: number): Promise<VerifyReport>;
  /** SIGUSR2, same protocol as verify. */
  stats(hostPid?: number, timeoutMs?: number): Promise<StatsReport>;
  /** SIGWINCH: fork + child check, mremap of the data, munmap + DONTNEED of the scratch; same protocol as verify. */
  churn(hostPid?: number, timeoutMs?: number): Promise<ChurnReport>;
  /** What --on-resume did in the copy `hostPid` (no signal: the copy acted on its own), within the bound. */
  resumeReport(hostPid: number, timeoutMs?: number): Promise<VerifyReport | ChurnReport>;
  /** Registers another host pid (a restored copy) that stop() must kill too. */
  adopt(hostPid: number): void;
  /** SIGKILL to the root, the unshare process and adopted pids; waits until they are gone. Idempotent. Leaves
   * the state dir alone unless removeStateDir. */
  stop(opts?: { removeStateDir?: boolean }): Promise<void>;
}

let built: Promise<string> | undefined;

/** Compiles memtest.c once per process into build/workloads/memtest, again only when the source or this driver
 * (which holds the flags) is newer than the binary. */
export function buildMemtest(): Promise<string> {
  built ??= build().catch((err: unknown) => {
    built = undefined; // let a later call retry, e.g. after the source is fixed
    throw err;
  });
  return built;
}

async function build(): Promise<string> {
  const out = join(BUILD_DIR, 'memtest');
  const newest = Math.max(statSync(SOURCE).mtimeMs, statSync(DRIVER).mtimeMs);
  if (existsSync(out) && statSync(out).mtimeMs >= newest) return out;
  await mkdir(BUILD_DIR, { recursive: true });
  // Build beside and rename: another test process may be running or building the same binary.
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    await execFileAsync('gcc', [...GCC_FLAGS, '-o', tmp, SOURCE]);
  } catch (err) {
    await rm(tmp, { force: true });
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`gcc failed to build ${SOURCE}: ${stderr.trim() || String(err)}`, { cause: err });
  }
  await rename(tmp, out);
  return out;
}

/** Writes bytes into another process's memory through /proc/PID/mem (root, or ptrace rights over it). */
export function writeProcessMemory(hostPid: number, address: bigint, data: Uint8Array): void {
  // Node 20's writeSync silently ignores a bigint position and writes at the file offset (0): convert, checked.
  // User-space x86_64 addresses are below 2^47, well inside the safe range.
  const position = Number(address);
  if (!Number.isSafeInteger(position) || BigInt(position) !== address) {
    throw new Error(`address 0x${address.toString(16)} is beyond what fs can seek to`);
  }
  const fd = openSync(`/proc/${hostPid}/mem`, 'r+');
  try {
    const n = writeSync(fd, data, 0, data.length, position);
    if (n !== data.length) throw new Error(`short write to /proc/${hostPid}/mem: ${n} of ${data.length} bytes`);
  } finally {
    closeSync(fd);
  }
}

/** Missing or recycled. A zombie still counts as present: it holds the pid until its parent reaps it (an orphan
 * restored by `criu restore -d` is reaped by the host's init, on this VM class up to ~2 s later). */
function isGone(hostPid: number, start: string): boolean {
  return processStartTime(hostPid) !== start;
}

function firstChild(hostPid: number): number | undefined {
  let children: string;
  try {
    children = readFileSync(`/proc/${hostPid}/task/${hostPid}/children`, 'utf8');
  } catch {
    return undefined;
  }
  const first = children.trim().split(/\s+/)[0];
  return first ? Number(first) : undefined;
}

function signalIfAlive(hostPid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(hostPid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  // Reports are renamed into place whole, so a parse error is a real bug, not a race.
  return JSON.parse(text) as T;
}

function defaultReportTimeout(mib: number): number {
  // A full check runs at roughly 4 GiB/s; leave room for a loaded or cold host.
  return 10_000 + mib * 10;
}

export async function startMemtest(opts: MemtestOptions): Promise<MemtestHandle> {
  // memtest checks these too, but from here the mistake is reported to the test instead of to /dev/null.
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/.test(opts.name)) throw new Error(`bad memtest name: ${opts.name}`);
  if (!(opts.mib > 0) || !(opts.dirtyMibPerSec >= 0)) {
    throw new Error(`bad memtest size or rate: ${opts.mib} MiB, ${opts.dirtyMibPerSec} MiB/s`);
  }
  const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000 + opts.mib * 20;
  const started = Date.now();
  const binary = await buildMemtest();
  // Absolute: the task resolves it against its own cwd, possibly after a restore.
  const stateDir = resolve(opts.stateDir);
  await mkdir(stateDir, { recursive: true });
  const file = (kind: string): string => join(stateDir, `${opts.name}.${kind}.json`);
  await Promise.all(['ready', 'verify', 'stats', 'churn'].map((k) => rm(file(k), { force: true })));

  const args = ['--name', opts.name, '--mib', String(opts.mib), '--dirty-mib-per-s', String(opts.dirtyMibPerSec)];
  args.push('--state-dir', stateDir);
  if (opts.seed !== undefined) args.push('--seed', opts.seed.toString());
  if (opts.hotMib !== undefined) args.push('--hot-mib', String(opts.hotMib));
  if (opts.churnMib !== undefined) args.push('--churn-mib', String(opts.churnMib));
  if (opts.coldMib !== undefined) args.push('--cold-mib', String(opts.coldMib));
  if (opts.growMibPerSec !== undefined) args.push('--grow-mib-per-s', String(opts.growMibPerSec));
  if (opts.sealedMib !== undefined) args.push('--sealed-mib', String(opts.sealedMib));
  if (opts.onResume !== undefined) args.push('--on-resume', opts.onResume);
  if (opts.content !== undefined) args.push('--content', opts.content);
  // setsid makes the task its own session and process group, so rollback can SIGCONT the group and CRIU needs
  // no --shell-job. It does not fork here: unshare's child is not a group leader.
  const argv = ['unshare', '--pid', '--fork', 'setsid', binary, ...args];
  if (opts.netns !== undefined) argv.unshift('nsenter', `--net=${opts.netns}`);

  const logFd = opts.logFile !== undefined ? openSync(opts.logFile, 'a') : undefined;
  let child: ChildProcess;
  try {
    // detached: the launcher gets its own session, so the task never shares the test's terminal or group.
    // libuv marks its own fds close-on-exec and memtest closes any fd above 2 that still leaks.
    child = spawn(argv[0] as string, argv.slice(1), {
      detached: true,
      stdio: ['ignore', logFd ?? 'ignore', logFd ?? 'ignore'],
    });
  } finally {
    if (logFd !== undefined) closeSync(logFd);
  }
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, sig) => {
      exited = sig ? `signal ${sig}` : `exit code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      exited ??= `spawn error: ${err.message}`;
      resolve();
    });
  });
  // The task must not keep the test runner's event loop alive; stop() still sees the exit.
  child.unref();
  if (child.pid === undefined) {
    await exit; // spawn failures are reported on the next tick
    throw new Error(`cannot start ${argv.join(' ')}: ${exited}`);
  }
  const upid = child.pid;

  const adopted = new Map<number, string | undefined>();
  let rootPid: number | undefined;
  let rootStart: string | undefined;
  let stopping: Promise<void> | undefined;

  const killAndWait = async (): Promise<void> => {
    if (rootPid === undefined && exited === undefined) {
      // A start that failed early may not know the root yet, and SIGKILL to unshare would orphan it. The spawned
      // process may not even be unshare yet (exec pending), so wait for its fork instead of trying to stop it.
      const child = await waitFor(
        () => (exited !== undefined ? -1 : firstChild(upid)),
        5_000,
        `the root under unshare ${upid}`,
      ).catch(() => undefined);
      if (child !== undefined && child > 0) {
        rootPid = child;
        rootStart = processStartTime(child);
      }
    }
    const victims: [number, string | undefined][] = [...adopted];
    if (rootPid !== undefined) victims.push([rootPid, rootStart]);
    for (const [pid, start] of victims) {
      if (start !== undefined && processStartTime(pid) === start) signalIfAlive(pid, 'SIGKILL');
    }
    // Killing pid 1 of the namespace makes unshare reap it and exit; kill unshare too in case it lingers.
    if (exited === undefined) {
      await Promise.race([exit, new Promise((r) => setTimeout(r, 2_000))]);
      if (exited === undefined) signalIfAlive(upid, 'SIGKILL');
      await waitFor(() => exited !== undefined, 10_000, `unshare (pid ${upid}) to exit`);
    }
    for (const [pid, start] of victims) {
      if (start === undefined) continue;
      await waitFor(() => isGone(pid, start), 15_000, `pid ${pid} (${opts.name}) to be gone`);
    }
  };

  try {
    const remaining = (): number => Math.max(0, readyTimeoutMs - (Date.now() - started));
    rootPid = await waitFor(
      () => {
        if (exited !== undefined) throw new Error(`${argv.join(' ')} ended before its child started (${exited})`);
        return firstChild(upid);
      },
      remaining(),
      `the pid-namespace root under unshare pid ${upid} (start budget ${readyTimeoutMs} ms)`,
    );
    rootStart = processStartTime(rootPid);
    const root = rootPid;
    const ready = await waitFor(
      async () => {
        if (exited !== undefined) {
          const where = opts.logFile ? `; see ${opts.logFile}` : '; pass logFile to see its stderr';
          throw new Error(`memtest ${opts.name} ended before it was ready (${exited})${where}`);
        }
        const r = await readJson<ReadyReport>(file('ready'));
        return r?.host_pid === root ? r : undefined;
      },
      remaining(),
      `${file('ready')} from pid ${root} (${opts.mib} MiB fill; start budget ${readyTimeoutMs} ms)`,
    );

    // One request at a time: every request of this handle (original or restored copy) shares the same files.
    let queue: Promise<unknown> = Promise.resolve();
    const request = <T extends { host_pid: number }>(
      kind: 'verify' | 'stats' | 'churn',
      sig: NodeJS.Signals,
      stampOf: (r: T) => number,
      hostPid: number,
      timeoutMs: number,
    ): Promise<T> => {
      const run = async (): Promise<T> => {
        const path = file(kind);
        const live = (): void => {
          const state = readPidState(hostPid);
          if (state === undefined || state === 'Z') throw new Error(`memtest ${opts.name}: pid ${hostPid} is gone`);
          // A stopped task keeps the signal pending for ever: say so instead of timing out.
          if (state === 'T' || state === 't') {
            throw new Error(`memtest ${opts.name}: pid ${hostPid} is stopped (state ${state}); SIGCONT it first`);
          }
        };
        live();
        await rm(path, { force: true });
        const requestedAt = Date.now();
        try {
          process.kill(hostPid, sig);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
          throw new Error(`memtest ${opts.name}: pid ${hostPid} is gone`, { cause: err });
        }
        return waitFor(
          async () => {
            const r = await readJson<T>(path);
            if (r && r.host_pid === hostPid && stampOf(r) >= requestedAt) return r;
            live();
            return undefined;
          },
          timeoutMs,
          `${path} from pid ${hostPid}`,
        );
      };
      const result = queue.then(run, run);
      queue = result.catch(() => undefined);
      return result;
    };

    const handle: MemtestHandle = {
      name: opts.name,
      stateDir,
      unsharePid: upid,
      rootPid: root,
      ready,
      baseAddress: BigInt(ready.base),
      verify: (hostPid = root, timeoutMs = defaultReportTimeout(opts.mib)) =>
        request<VerifyReport>('verify', 'SIGUSR1', (r) => r.started_at_ms, hostPid, timeoutMs),
      stats: (hostPid = root, timeoutMs = defaultReportTimeout(0)) =>
        request<StatsReport>('stats', 'SIGUSR2', (r) => r.at_ms, hostPid, timeoutMs),
      churn: (hostPid = root, timeoutMs = defaultReportTimeout(opts.mib)) =>
        request<ChurnReport>('churn', 'SIGWINCH', (r) => r.started_at_ms, hostPid, timeoutMs),
      resumeReport: (hostPid, timeoutMs = defaultReportTimeout(opts.mib)) => {
        const path = file(opts.onResume === 'churn' ? 'churn' : 'resume-verify');
        return waitFor(
          async () => {
            const r = await readJson<VerifyReport | ChurnReport>(path);
            return r && r.host_pid === hostPid ? r : undefined;
          },
          timeoutMs,
          `${path} from pid ${hostPid}`,
        );
      },
      adopt: (hostPid) => {
        adopted.set(hostPid, processStartTime(hostPid));
      },
      stop: (stopOpts) => {
        stopping ??= killAndWait();
        return stopping.then(async () => {
          if (stopOpts?.removeStateDir) await rm(stateDir, { recursive: true, force: true });
        });
      },
    };
    return handle;
  } catch (err) {
    // Leave nothing running behind a failed start; the first error is the one to report.
    await killAndWait().catch(() => undefined);
    throw err;
  }
}
