/**
 * Starting and finding the pager process (build/Release/ferry_pager). It runs detached: its own session and
 * process group, stdio to a log file, never a pipe to the agent, so a kill -9 of the agent (or a Ctrl-C to its
 * group) leaves it filling; a restarted agent finds it again by pid + start time and its status file, and
 * adopts it over the control socket.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, watch, type FSWatcher } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { parseStat, readProcText } from '../../shared/kernel/proc-status.js';
import { repoRoot } from '../../shared/repo-root.js';
import type { PagerStatus } from './pager-control.js';

export const PAGER_BINARY = 'build/Release/ferry_pager';
const POLL_MS = 10;
const DEFAULT_START_TIMEOUT_MS = 10_000;
/** The status file is small JSON; anything bigger is not the pager's. */
const MAX_STATUS_BYTES = 64 * 1024;

export interface StartPagerOptions {
  binary: string;
  planFile: string;
  /** IMAGES/lazy-pages.socket: where `criu restore --lazy-pages` connects. */
  socketPath: string;
  controlPath: string;
  statusFile: string;
  /** The `--pidfile` of the restore (the guardian kills that tree if the pager dies). */
  pidFile: string;
  logFile: string;
  /** Background fill threads (the pager's default: min(2, cores)). */
  threads?: number;
  /** Bound on the wait for `listening`. Default 10 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface PagerHandle {
  pid: number;
  /** /proc start time (clock ticks since boot): a pid with another start time is not this pager. */
  startTime: number;
}

export interface PagerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A pager this process started: its exit is known (an adopted one is watched by pid and status file). */
export interface StartedPager extends PagerHandle {
  exited: Promise<PagerExit>;
}

/** The pager binary of this checkout; PAGER_UNAVAILABLE when it is not built. */
export function pagerBinary(): string {
  const path = join(repoRoot(), PAGER_BINARY);
  if (!existsSync(path)) {
    throw new FerryError('PAGER_UNAVAILABLE', { side: 'dest', detail: `${path} does not exist (not built)` });
  }
  return path;
}

/** The pager's status file, or undefined when it is missing or not (yet) a whole JSON object. */
export async function readPagerStatus(statusFile: string): Promise<PagerStatus | undefined> {
  let text: string;
  try {
    const buf = await readFile(statusFile);
    if (buf.length > MAX_STATUS_BYTES) return undefined;
    text = buf.toString('utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || typeof (v as { state?: unknown }).state !== 'string') return undefined;
    return v as PagerStatus;
  } catch {
    return undefined; // written tmp + rename, so only a foreign file gets here
  }
}

/** The /proc start time of pid, or undefined when it is gone. */
export function processStartTime(pid: number): number | undefined {
  const text = readProcText(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  try {
    return parseStat(text).startTime;
  } catch {
    return undefined;
  }
}

/** Is this pager still running (same pid, same start time, not a zombie)? */
export function pagerAlive(h: PagerHandle): boolean {
  const text = readProcText(`/proc/${h.pid}/stat`);
  if (text === undefined) return false;
  try {
    const st = parseStat(text);
    return st.startTime === h.startTime && st.state !== 'Z' && st.state !== 'X';
  } catch {
    return false;
  }
}

/** SIGTERM = abort: the pager kills the restored tree, writes `failed`, exits 4. False when it is gone. */
export function abortPager(h: PagerHandle): boolean {
  if (!pagerAlive(h)) return false;
  try {
    process.kill(h.pid, 'SIGTERM');
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

export function pagerArgs(o: StartPagerOptions): string[] {
  const args = ['--plan', o.planFile, '--socket', o.socketPath, '--control', o.controlPath, '--status', o.statusFile, '--pidfile', o.pidFile];
  if (o.threads !== undefined) {
    if (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 64) throw new RangeError(`pager threads ${o.threads} not in 1..64`);
    args.push('--threads', String(o.threads));
  }
  return args;
}

/**
 * Spawns the pager detached and resolves once its status file says `listening` (its sockets exist, the plan
 * and the store checked out). PAGER_UNAVAILABLE when it exits first (the status file's reason in the detail) or
 * does not listen within the bound (then it is killed).
 */
export async function startPager(o: StartPagerOptions): Promise<StartedPager> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const args = pagerArgs(o);
  await rm(o.statusFile, { force: true });
  const fail = (detail: string): FerryError => new FerryError('PAGER_UNAVAILABLE', { phase: 'restore', side: 'dest', message: 'The pager did not start', detail: `${detail}; log: ${o.logFile}` });
  const logFd = openSync(o.logFile, 'a', 0o600);
  let exit: string | undefined;
  let pid: number | undefined;
  let exited!: Promise<PagerExit>;
  try {
    // detached = setsid: no signal to the agent's group reaches it, and it outlives the agent.
    const child = spawn(o.binary, args, { detached: true, stdio: ['ignore', logFd, logFd] });
    exited = new Promise((resolve) => {
      child.once('exit', (code, sig) => {
        exit = sig ? `killed by ${sig}` : `exited with code ${code}`;
        resolve({ code, signal: sig });
      });
      child.once('error', (e) => {
        exit = `cannot run ${o.binary}: ${e.message}`;
        resolve({ code: null, signal: null });
      });
    });
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(logFd);
  }
  if (pid === undefined) {
    await new Promise((r) => setImmediate(r));
    throw fail(exit ?? `cannot run ${o.binary}`);
  }
  const startTime = processStartTime(pid);
  const deadline = Date.now() + timeoutMs;
  // Woken by the status file's rename (inotify), the poll only a fallback: this wait is inside the freeze
  // (polled every 10 ms, the pager's start took a median 26 ms at 256 MiB; woken, 16 ms).
  let poke: (() => void) | undefined;
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(o.statusFile), () => poke?.());
    watcher.on('error', () => undefined);
  } catch {
    /* the poll alone */
  }
  try {
    for (;;) {
      const status = await readPagerStatus(o.statusFile);
      if (status?.pid === pid && status.state === 'listening') break;
      if (status?.pid === pid && status.state === 'failed') throw fail(`the pager failed: ${status.reason}`);
      if (exit !== undefined) throw fail(`the pager ${exit}${status?.reason ? `: ${status.reason}` : ''}`);
      if (o.signal?.aborted || Date.now() >= deadline) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
        throw fail(o.signal?.aborted ? 'aborted while it started' : `no "listening" in ${o.statusFile} within ${timeoutMs} ms`);
      }
      await new Promise<void>((r) => {
        const timer = setTimeout(r, POLL_MS);
        poke = () => {
          clearTimeout(timer);
          r();
        };
      });
    }
  } finally {
    watcher?.close();
  }
  if (startTime === undefined) throw fail(`pid ${pid} vanished`);
  return { pid, startTime, exited };
}
