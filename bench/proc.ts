/**
 * Child processes and cleanup for the benchmark. Every child is started in its own process group (so that a
 * pipeline such as `tar | node` ends as a whole) and remembered until it exits: an abort, a timeout or the
 * benchmark's own exit kills the groups it started, by their ids, and nothing else.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const live = new Set<number>();
/** Tasks (not our children: memtest.ts starts them) to SIGKILL on a forced exit: pid -> start time. */
const tasks = new Map<number, string | undefined>();

/** Field 22 of /proc/PID/stat, so that a forced exit never kills a recycled pid. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function trackTask(pid: number): void {
  if (pid > 1) tasks.set(pid, startTime(pid));
}

export function untrackTask(pid: number): void {
  tasks.delete(pid);
}

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Last resort (the exit hook, a second Ctrl-C): SIGKILL every group and tracked task still running. Synchronous. */
export function killEverythingStarted(): void {
  for (const pgid of live) killGroup(pgid, 'SIGKILL');
  live.clear();
  for (const [pid, start] of tasks) {
    if (start !== undefined && startTime(pid) === start) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  tasks.clear();
}

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface CommandOptions {
  signal?: AbortSignal | undefined;
  /** SIGKILL to the group after this long (the result then has signal SIGKILL). */
  timeoutMs?: number | undefined;
  env?: Record<string, string> | undefined;
  /** Called with each chunk of stderr as it arrives (e.g. to read a port a receiver prints). */
  onStderr?: ((chunk: string) => void) | undefined;
}

export interface Command {
  readonly pid: number;
  readonly done: Promise<CommandResult>;
  kill(sig?: NodeJS.Signals): void;
}

/** Starts argv (no shell) in a new process group. `done` never rejects: a spawn error shows as code null. */
export function startCommand(argv: readonly string[], opts: CommandOptions = {}): Command {
  const started = performance.now();
  const child = spawn(argv[0]!, argv.slice(1), {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
  });
  const pid = child.pid ?? -1;
  if (pid > 0) live.add(pid);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (c: string) => (stdout += c));
  child.stderr.on('data', (c: string) => {
    stderr += c;
    opts.onStderr?.(c);
  });
  let exited = false;
  const kill = (sig: NodeJS.Signals = 'SIGKILL'): void => {
    if (!exited && pid > 0) killGroup(pid, sig);
  };
  const onAbort = (): void => kill();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const timer = opts.timeoutMs !== undefined ? setTimeout(() => kill(), opts.timeoutMs) : undefined;
  const done = new Promise<CommandResult>((resolve) => {
    child.once('error', (err) => {
      stderr += `\nspawn error: ${err.message}`;
    });
    child.once('close', (code, signal) => {
      exited = true;
      live.delete(pid);
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ code, signal, stdout, stderr, durationMs: performance.now() - started });
    });
  });
  if (opts.signal?.aborted) kill();
  return { pid, done, kill };
}

export function runCommand(argv: readonly string[], opts: CommandOptions = {}): Promise<CommandResult> {
  return startCommand(argv, opts).done;
}

/** Runs argv and throws (quoting the tail of its output) unless it exits 0. */
export async function runChecked(argv: readonly string[], what: string, opts: CommandOptions = {}): Promise<CommandResult> {
  const r = await runCommand(argv, opts);
  opts.signal?.throwIfAborted();
  if (r.code !== 0) {
    const how = r.signal ? `was killed by ${r.signal}${opts.timeoutMs !== undefined ? ` (timeout ${opts.timeoutMs} ms?)` : ''}` : `exited ${r.code}`;
    throw new Error(`${what} ${how}: ${tailLines(r.stderr || r.stdout, 8)}`);
  }
  return r;
}

export function tailLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/**
 * A stack of undo steps, run in reverse by `close()`, which runs every step and throws the first error after.
 * Steps are registered right after the thing they undo exists.
 */
export class Cleanup {
  private readonly steps: { name: string; fn: () => Promise<void> | void }[] = [];

  defer(name: string, fn: () => Promise<void> | void): void {
    this.steps.push({ name, fn });
  }

  async close(): Promise<void> {
    let first: Error | undefined;
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        first ??= new Error(`cleanup "${step.name}" failed: ${(err as Error).message}`, { cause: err });
      }
    }
    if (first !== undefined) throw first;
  }
}
