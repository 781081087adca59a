/**
 * Runs `criu dump` and `criu restore` (spawned directly, never through a shell) with an AbortSignal and a
 * timeout. Only criu's exit code decides success: every run here logs a harmless RLIMIT_NOFILE "Error" line.
 * On failure the error quotes the log's Error lines and names the log.
 *
 * Restore runs under a timeout because a short pages image makes CRIU's restorer spin for ever without a log
 * line; on timeout or abort, criu and every process it created are killed before the call returns.
 *
 * A dump is never killed but on its timeout: a SIGKILL while criu injects its parasite (the first few ms of a
 * dump) kills the task (measured with a 64 MiB memtest: 10 of 50 kills 0.3-2.7 ms into the tracing stop; once
 * the parasite runs, 40 of 40 kills left the task running). So an aborted dump runs to its end and is then
 * reported aborted (the caller resumes the tree as after any failed dump); only a dump past its timeout (criu
 * hung) is killed with its descendants, the lesser harm. criu 4.2.1 does not stop a dump on SIGINT either.
 *
 * criu never dies because its agent died. It runs in a process group of its own (a Ctrl-C to the agent's group
 * does not reach it; `signal` is how the agent stops it), and its stdout and stderr go to a file beside its
 * log, `<log>.out`, not to pipes: after a kill -9 of the agent a write to a pipe would kill it with SIGPIPE, in
 * a restore leaving a half-restored tree stopped for ever. A restore runs to its end and the restarted agent
 * learns the outcome from the pid file; a dump runs to its end and the freeze lease's guard, told criu's pid
 * (`onStarted`), thaws the tree once criu is gone (thaw-guard.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, openSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { asFerryError, FerryError, type FerryErrorInit } from '../errors/ferry-error.js';
import type { ErrorKey } from '../errors/codes.js';
import { waitGone, waitTreeStopped } from '../kernel/process-wait.js';
import { killTreeAndWait, signalProcess, treePids } from '../kernel/signal-tree.js';
import { formatQuote, readCriuLogErrors } from './criu-log.js';
import { criuOutputFile, readCriuOutputTail } from './criu-log-files.js';
import { criuFeatureArgs, type NetworkLock } from './criu-features.js';

/** After SIGKILL, how long to wait for the killed processes to disappear. */
const REAP_WAIT_MS = 5000;
/**
 * With --leave-stopped, criu can exit while the tree is still in state R for a moment: the SIGSTOP it left
 * takes effect when each task next runs (after 2 of 30 dumps here, and after restores too; it stopped within
 * a millisecond). The caller is promised a stopped tree, so wait for it.
 */
export const STOP_WAIT_MS = 2000;

export type CriuLogLevel = 0 | 1 | 2 | 3 | 4;

interface CommonOptions {
  /** Path of the criu binary (from `locateCriu()`). */
  criu: string;
  imagesDir: string;
  /** criu's log; made absolute here, since criu reads a relative `-o` path relative to the images dir. */
  logFile: string;
  /** Keep the tree stopped (SIGSTOP) after the run. Default true: Ferry resumes or kills it itself. */
  leaveStopped?: boolean;
  /** `--tcp-established`: carry established TCP connections. */
  tcpEstablished?: boolean;
  /** `--file-locks`: carry file locks (criu refuses a task holding one without it). */
  fileLocks?: boolean;
  /** `--network-lock`: how a dump with `tcpEstablished` blocks the connections (restore reads it from the images). */
  networkLock?: NetworkLock | undefined;
  /** More criu arguments, appended as given. */
  extraArgs?: readonly string[];
  logLevel?: CriuLogLevel;
  signal?: AbortSignal;
}

export interface CriuDumpOptions extends CommonOptions {
  /** Host pid of the tree's root. Ferry's tasks are setsid'd pid-namespace roots, so no --shell-job. */
  pid: number;
  /** No default: the caller's freeze budget normally bounds the dump through `signal`. */
  timeoutMs?: number;
  /** Told criu's pid once it runs (the freeze lease waits for it before it thaws). */
  onStarted?: ((pid: number) => void) | undefined;
}

export interface CriuRestoreOptions extends CommonOptions {
  /** Where criu writes the restored root's host pid; deleted first (criu fails late if it exists). */
  pidFile: string;
  timeoutMs: number;
  /** Restore is always detached (-d): criu exits once the tree is restored; the pid file names the tree. */
  detach?: true;
}

export interface CriuDumpResult {
  durationMs: number;
  logFile: string;
}

function commonArgs(o: CommonOptions, defaultLevel: CriuLogLevel): string[] {
  const args = ['-D', resolve(o.imagesDir), '-o', resolve(o.logFile), `-v${o.logLevel ?? defaultLevel}`];
  if (o.leaveStopped ?? true) args.push('--leave-stopped');
  return [...args, ...criuFeatureArgs({ fileLocks: o.fileLocks ?? false, tcpEstablished: o.tcpEstablished ?? false })];
}

/** The argument list of `criu dump` for these options. */
export function criuDumpArgs(o: CriuDumpOptions): string[] {
  if (!Number.isSafeInteger(o.pid) || o.pid <= 1) throw new RangeError(`invalid pid ${o.pid}`);
  const lock = o.tcpEstablished && o.networkLock ? ['--network-lock', o.networkLock] : [];
  return ['dump', '-t', String(o.pid), ...commonArgs(o, 4), ...lock, ...(o.extraArgs ?? [])];
}

/**
 * The argument list of `criu restore` for these options. The default log level is 3, not 4: at -v4 a
 * restorer spinning on a short pages image logs about 28 MB per second.
 */
export function criuRestoreArgs(o: CriuRestoreOptions): string[] {
  return ['restore', ...commonArgs(o, 3), '-d', '--pidfile', resolve(o.pidFile), ...(o.extraArgs ?? [])];
}

/** Dumps the tree rooted at `pid`. Throws CRIU_DUMP_FAILED (phase freeze, side source) on failure. */
export async function criuDump(o: CriuDumpOptions): Promise<CriuDumpResult> {
  const args = criuDumpArgs(o);
  const logFile = resolve(o.logFile);
  const init: FerryErrorInit = { phase: 'freeze', side: 'source' };
  const run = await runCriu(o.criu, args, { timeoutMs: o.timeoutMs, signal: o.signal, outputFile: criuOutputFile(logFile), finishOnAbort: true, onStarted: o.onStarted }).catch((e: unknown) => {
    throw asFerryError(e, 'CRIU_DUMP_FAILED', init);
  });
  if (run.outcome === 'aborted') throw abortError(o.signal, init, 'criu dump');
  if (run.outcome === 'timeout' || run.code !== 0) {
    throw await criuFailure('CRIU_DUMP_FAILED', 'criu dump', run, logFile, init);
  }
  if (o.leaveStopped ?? true) {
    const running = await waitTreeStopped(o.pid, STOP_WAIT_MS);
    if (running.length > 0) {
      throw new FerryError('CRIU_DUMP_FAILED', { ...init, detail: `criu dump exited 0 but tasks ${running.join(', ')} did not stop within ${STOP_WAIT_MS} ms; log: ${logFile}` });
    }
  }
  return { durationMs: run.durationMs, logFile };
}

/**
 * Restores the images in `imagesDir`, detached, and returns the restored root's host pid (from the pid file);
 * with `leaveStopped` (the default) the whole tree is stopped when this returns. Throws CRIU_RESTORE_FAILED on
 * failure and CRIU_RESTORE_TIMEOUT after `timeoutMs` (phase restore, side dest); after a timeout or an abort
 * every process criu created has been killed.
 */
export async function criuRestore(o: CriuRestoreOptions): Promise<number> {
  const args = criuRestoreArgs(o);
  const logFile = resolve(o.logFile);
  const pidFile = resolve(o.pidFile);
  const init: FerryErrorInit = { phase: 'restore', side: 'dest' };
  await rm(pidFile, { force: true });
  const run = await runCriu(o.criu, args, { timeoutMs: o.timeoutMs, signal: o.signal, outputFile: criuOutputFile(logFile), alsoKill: () => readPidFile(pidFile) }).catch((e: unknown) => {
    throw asFerryError(e, 'CRIU_RESTORE_FAILED', init);
  });
  if (run.outcome === 'aborted') throw abortError(o.signal, init, 'criu restore');
  if (run.outcome === 'timeout') {
    const lines = await readCriuLogErrors(logFile).catch(() => []);
    throw new FerryError('CRIU_RESTORE_TIMEOUT', {
      ...init,
      detail: [`criu restore did not finish in ${o.timeoutMs} ms; criu and the ${run.killed.length} processes it created were killed`, ...formatQuote(lines, logFile)].join('\n'),
    });
  }
  if (run.code !== 0) throw await criuFailure('CRIU_RESTORE_FAILED', 'criu restore', run, logFile, init);
  const pid = await readPidFile(pidFile);
  if (pid === undefined) {
    throw new FerryError('CRIU_RESTORE_FAILED', { ...init, detail: `criu restore exited 0 but wrote no pid to ${pidFile}; log: ${logFile}` });
  }
  if (o.leaveStopped ?? true) {
    const running = await waitTreeStopped(pid, STOP_WAIT_MS);
    if (running.length > 0) {
      const killed = await killTreeAndWait(pid, REAP_WAIT_MS);
      throw new FerryError('CRIU_RESTORE_FAILED', {
        ...init,
        detail: `criu restore exited 0 but tasks ${running.join(', ')} did not stop within ${STOP_WAIT_MS} ms; the ${killed.length} restored processes were killed; log: ${logFile}`,
      });
    }
  }
  return pid;
}

async function readPidFile(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 1 ? pid : undefined;
}

async function criuFailure(key: ErrorKey, what: string, run: CriuRun, logFile: string, init: FerryErrorInit): Promise<FerryError> {
  let lines: string[];
  try {
    lines = await readCriuLogErrors(logFile);
  } catch (e) {
    lines = [`(log unreadable: ${e instanceof Error ? e.message : String(e)})`];
  }
  const how =
    run.outcome === 'timeout'
      ? `did not finish in ${run.timeoutMs} ms and was killed`
      : run.exitSignal
        ? `was killed by ${run.exitSignal}`
        : `exited with code ${run.code}`;
  const head = `${what} ${how}${lines.length === 0 ? '; its log has no Error lines' : ':'}`;
  const stderr = lines.length === 0 && run.stderr.trim() ? [`criu output: ${run.stderr.trim()}`] : [];
  return new FerryError(key, { ...init, detail: [head, ...formatQuote(lines, logFile), ...stderr].join('\n') });
}

function abortError(signal: AbortSignal | undefined, init: FerryErrorInit, what: string): FerryError {
  const reason: unknown = signal?.reason;
  // The first cause wins: a FerryError that aborted the phase (a lease, a peer failure) is what the caller gets.
  if (reason instanceof FerryError) return reason;
  return new FerryError('CANCELLED', { ...init, detail: `${what} was interrupted; criu was killed`, cause: reason });
}

// ---- process handling ---------------------------------------------------------------------------------

export interface SpawnCriuOptions {
  /** Gets criu's stdout and stderr (truncated first). */
  outputFile: string;
  /** This many more stdio pipes, as fds 3, 4, ... */
  pipes?: number;
}

/** Starts criu in a process group of its own, its stdout and stderr in a file (see the top of this file). */
export function spawnCriu(criu: string, args: readonly string[], o: SpawnCriuOptions): ChildProcess {
  // Checked first: a missing criu would otherwise leave an empty output file behind.
  try {
    accessSync(criu, constants.X_OK);
  } catch (e) {
    throw new Error(`cannot run ${criu}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  const out = openSync(o.outputFile, 'w', 0o600);
  try {
    return spawn(criu, [...args], { detached: true, stdio: ['ignore', out, out, ...Array<'pipe'>(o.pipes ?? 0).fill('pipe')] });
  } finally {
    closeSync(out); // the child has its own copy
  }
}

interface RunOptions {
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  /** More pids to kill on timeout or abort, e.g. the restored root from the pid file. */
  alsoKill?: () => Promise<number | undefined>;
  /** Gets criu's stdout and stderr; removed once criu exited 0, kept for diagnosis otherwise. */
  outputFile: string;
  /** On abort, let criu run to its end and report "aborted" then (a dump: see the top of this file). */
  finishOnAbort?: boolean;
  /** Told criu's pid once it runs. */
  onStarted?: ((pid: number) => void) | undefined;
}

interface CriuRun {
  outcome: 'exited' | 'timeout' | 'aborted';
  code: number | null;
  exitSignal: NodeJS.Signals | null;
  durationMs: number;
  timeoutMs: number | undefined;
  /** The tail of criu's stdout and stderr. */
  stderr: string;
  /** Pids killed on timeout or abort (criu itself not counted). */
  killed: number[];
}

function runCriu(criu: string, args: readonly string[], opts: RunOptions): Promise<CriuRun> {
  const { signal, timeoutMs } = opts;
  if (signal?.aborted) {
    return Promise.resolve({ outcome: 'aborted', code: null, exitSignal: null, durationMs: 0, timeoutMs, stderr: '', killed: [] });
  }
  return new Promise<CriuRun>((resolveRun, rejectRun) => {
    const started = performance.now();
    const child = spawnCriu(criu, args, opts);
    if (child.pid !== undefined) opts.onStarted?.(child.pid);

    let stopping: 'timeout' | 'aborted' | undefined;
    let killing: Promise<number[]> = Promise.resolve([]);
    const stop = (why: 'timeout' | 'aborted'): void => {
      if (stopping || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      stopping = why;
      killing = killCriuAndDescendants(child.pid, opts.alsoKill);
    };
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => stop('timeout'), timeoutMs);
    let abortedWhileRunning = false; // finishOnAbort: reported once criu is done on its own
    const onAbort = (): void => {
      if (opts.finishOnAbort) abortedWhileRunning = true;
      else stop('aborted');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };

    child.once('error', (e) => {
      done();
      rejectRun(new Error(`cannot run ${criu}: ${e.message}`, { cause: e }));
    });
    child.once('exit', (code, exitSignal) => {
      done();
      const durationMs = performance.now() - started;
      void (async () => {
        const killed = await killing;
        const stderr = await readCriuOutputTail(opts.outputFile);
        if (!stopping && code === 0) await rm(opts.outputFile, { force: true });
        return { outcome: stopping ?? (abortedWhileRunning ? 'aborted' : 'exited'), code, exitSignal, durationMs, timeoutMs, stderr, killed } satisfies CriuRun;
      })().then(resolveRun, rejectRun);
    });
  });
}

/**
 * Kills criu and everything it started. criu is stopped first so it cannot fork more; then its descendants
 * (and `alsoKill`'s pid with its descendants) are killed until none is left, then criu itself. Waits until the
 * killed processes are gone (or zombies waiting for their new parent to reap them). Never criu alone: the tree
 * of a restore whose criu is killed late runs on its own (measured: a 256 MiB memtest kept running).
 */
export async function killCriuAndDescendants(criuPid: number, alsoKill?: () => Promise<number | undefined>): Promise<number[]> {
  signalProcess(criuPid, 'SIGSTOP');
  const killed = new Set<number>();
  for (let pass = 0; pass < 10; pass++) {
    const roots = [criuPid];
    const extra = await alsoKill?.().catch(() => undefined);
    if (extra !== undefined) roots.push(extra);
    const found = new Set<number>();
    // The extra root is killed with its tree even when it cannot be walked (treePids gives it first).
    for (const r of roots) for (const p of treePids(r)) if (p !== criuPid) found.add(p);
    const fresh = [...found].filter((p) => !killed.has(p));
    if (fresh.length === 0) break;
    for (const p of fresh) {
      signalProcess(p, 'SIGKILL');
      killed.add(p);
    }
  }
  signalProcess(criuPid, 'SIGKILL');
  await waitGone([...killed], REAP_WAIT_MS);
  return [...killed];
}
