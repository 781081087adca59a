/**
 * The compiled `ferry` run by a test (`node bin/ferry.js ARGS`), inside a host's network namespace when given,
 * with its stdout read as JSON lines (events, the summary, the error, a daemon's "listening") and its stderr
 * (the JSON log) kept for failure messages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SerializedFerryError } from '../shared/errors/ferry-error.js';
import type { MigrationEvent, MigrationSummary } from '../source-agent/migration/events.js';
import type { Host } from './netns-hosts.js';
import { testStateDir } from './temp-dirs.js';

export const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const FERRY_BIN = join(REPO_ROOT, 'bin', 'ferry.js');

export interface FerryRunOptions {
  /** Run inside this host's network namespace. */
  host?: Host;
  /**
   * In a mount namespace of its own (private propagation) that exec()s ferry: mounts the host makes later are
   * not seen there (a dest that lacks a path the source has, on one machine).
   */
  privateMounts?: boolean | undefined;
  /** Added to (and overriding) this process's environment. */
  env?: Record<string, string>;
  /** SIGTERM (ferry rolls back) after this long, SIGKILL 10 s later. Default 60 s; 0 = no limit. */
  timeoutMs?: number;
  /** On abort: SIGTERM (ferry rolls back), SIGKILL 10 s later, as on a timeout. */
  signal?: AbortSignal | undefined;
}

/** A line of `ferry ... --json` stdout: an event, the summary, the error, or text that was not JSON. */
export type FerryLine =
  | MigrationEvent
  | { kind: 'summary'; summary: MigrationSummary }
  | { kind: 'error'; error: SerializedFerryError }
  /** JSON without a kind, e.g. the dest agent's {"event":"listening",...}. */
  | { kind: 'other'; value: Record<string, unknown> }
  | { kind: 'text'; text: string };

export interface FerryResult {
  /** The exit code, or null when it ended by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  lines: FerryLine[];
  summary: MigrationSummary | undefined;
  error: SerializedFerryError | undefined;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface FerryRun {
  readonly child: ChildProcess;
  /** Lines seen so far. */
  readonly lines: readonly FerryLine[];
  /** stderr so far (a ferry process logs JSON lines there). */
  stderr(): string;
  /** Resolves with the first line (seen so far or later) that matches; rejects on timeout or if ferry exits first. */
  waitForLine(match: (line: FerryLine) => boolean, timeoutMs: number): Promise<FerryLine>;
  readonly done: Promise<FerryResult>;
}

/** Starts `node bin/ferry.js ARGS` (inside a host's network namespace when given). */
export function startFerry(args: string[], opts: FerryRunOptions = {}): FerryRun {
  const argv = [...(opts.host ? ['nsenter', `--net=${opts.host.netns}`] : []), ...(opts.privateMounts ? ['unshare', '--mount', '--propagation', 'private'] : []), process.execPath, FERRY_BIN, ...args];
  const started = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: REPO_ROOT,
    // The CLI is silent by default; its log (on stderr) is what explains a failed expectation.
    // FERRY_STATE_DIR: the source's learned cost model stays in this test run, not in /var/lib/ferry.
    // FERRY_TLS_DIR: the host's own certificate, as /etc/ferry/tls would hold it.
    env: {
      ...process.env,
      FERRY_LOG_LEVEL: process.env.FERRY_LOG_LEVEL ?? 'info',
      // JSON whatever the shell running the tests asked for: the tests read the agents' logs.
      FERRY_LOG_FORMAT: 'json',
      FERRY_STATE_DIR: testStateDir(),
      ...(opts.host ? { FERRY_TLS_DIR: opts.host.tlsDir } : {}),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: FerryLine[] = [];
  let stdout = '';
  let stderr = '';
  let partial = '';
  let ended = false;
  const waiters = new Set<() => void>();
  const wakeAll = (): void => {
    for (const w of [...waiters]) w();
  };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (text.trim() === '') continue;
      lines.push(parseLine(text));
    }
    wakeAll();
  });
  child.stderr.on('data', (chunk: string) => (stderr += chunk));

  let timedOut = false;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  let killTimer: NodeJS.Timeout | undefined;
  const terminate = (): void => {
    if (killTimer !== undefined) return;
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  };
  const termTimer =
    timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          terminate();
        }, timeoutMs)
      : undefined;
  opts.signal?.addEventListener('abort', terminate, { once: true });
  if (opts.signal?.aborted) terminate();

  const done = new Promise<FerryResult>((resolve) => {
    child.once('error', (err) => {
      stderr += `\nspawn error: ${err.message}`;
    });
    child.once('close', (code, signal) => {
      clearTimeout(termTimer);
      clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', terminate);
      if (partial.trim() !== '') lines.push(parseLine(partial));
      ended = true;
      wakeAll();
      const summary = lines.find((l): l is Extract<FerryLine, { kind: 'summary' }> => l.kind === 'summary')?.summary;
      const error = lines.find((l): l is Extract<FerryLine, { kind: 'error' }> => l.kind === 'error')?.error;
      resolve({ exitCode: code, signal, timedOut, lines, summary, error, stdout, stderr, durationMs: Date.now() - started });
    });
  });

  const waitForLine = (match: (line: FerryLine) => boolean, timeout: number): Promise<FerryLine> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = lines.find(match);
        if (hit) finish(() => resolve(hit));
        else if (ended) finish(() => reject(new Error(`ferry ${args[0]} exited before the awaited line; stdout:\n${stdout}\nstderr tail:\n${tail(stderr)}`)));
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`timed out after ${timeout} ms waiting for a line of ferry ${args[0]}; stdout so far:\n${stdout}`))),
        timeout,
      );
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        settle();
      };
      waiters.add(check);
      check();
    });

  return { child, lines, stderr: () => stderr, waitForLine, done };
}

export function runFerry(args: string[], opts: FerryRunOptions = {}): Promise<FerryResult> {
  return startFerry(args, opts).done;
}

function parseLine(text: string): FerryLine {
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return typeof (v as { kind?: unknown }).kind === 'string' ? (v as FerryLine) : { kind: 'other', value: v as Record<string, unknown> };
    }
  } catch {
    /* not JSON */
  }
  return { kind: 'text', text };
}

/** The last lines of a log, for failure messages. */
export function tail(text: string, n = 25): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/** `FERRY-NNNN` of the first `ferry: FERRY-NNNN: ...` line a command printed on stderr (commands without --json). */
export function errorCodeIn(stderr: string): string | undefined {
  return /^ferry: (FERRY-\d{4}):/m.exec(stderr)?.[1];
}

/** One line for a failed expectation: exit code, error and the tail of the log. */
export function describeResult(r: FerryResult): string {
  return [
    `exit ${r.exitCode}${r.signal ? ` (signal ${r.signal})` : ''}${r.timedOut ? ' TIMED OUT' : ''} after ${r.durationMs} ms`,
    r.error ? `error: ${JSON.stringify(r.error)}` : 'no error line',
    `stderr tail:\n${tail(r.stderr)}`,
  ].join('\n');
}

