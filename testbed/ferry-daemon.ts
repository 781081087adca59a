/**
 * A ferry daemon (the dest agent, the source agent) run by a test: started inside a host's network namespace,
 * ready once it prints its {"event":"listening",...} line, and killed and restarted as a crash and a restart by
 * systemd would go: the same command again, by a new process. Only stop() is final.
 */
import { startFerry, tail, type FerryLine, type FerryRun } from './ferry-process.js';
import type { Host } from './netns-hosts.js';

const STOP_GRACE_MS = 10_000;

export interface FerryDaemonOptions {
  /** For messages: "the dest agent in ferry-t1-0-dst". */
  what: string;
  host: Host;
  /** The command line of each start (a restart asks again, so it can repeat what the first start learned). */
  args: () => string[];
  env?: Record<string, string> | undefined;
  /** In a mount namespace of its own (FerryRunOptions.privateMounts); a restart makes a fresh one. */
  privateMounts?: boolean | undefined;
  /** Bound on each start, until the listening line. Default 20 s. */
  startTimeoutMs?: number | undefined;
  /** Checks the listening line of each start; a throw ends that process and fails the start. */
  check?: ((listening: Record<string, unknown>) => void) | undefined;
}

export interface FerryDaemon {
  /** Pid of the current process (nsenter execs node: the daemon itself). */
  readonly pid: number;
  /** The listening line of the current process. */
  readonly listening: Record<string, unknown>;
  /** Restarts so far. */
  readonly restarts: number;
  /** stderr (the JSON log) of the current process so far. */
  stderr(): string;
  /** stderr of every process of this daemon, oldest first. */
  stderrAll(): string;
  /** Whether the current process has exited. */
  exited(): boolean;
  /** Sends the signal to the current process (default SIGKILL, a crash) and waits until it is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Kills the current process if it still runs (SIGKILL), then starts the command again; resolves once it listens.
   * `env` replaces the added environment for this start and later ones (e.g. without the FERRY_FAULT that killed it). */
  restart(opts?: RestartOptions): Promise<void>;
  /** SIGTERM and SIGCONT (the daemon winds down what is in flight, even if it was stopped), SIGKILL after 10 s.
   * Final and idempotent. */
  stop(): Promise<void>;
}

export interface RestartOptions {
  env?: Record<string, string> | undefined;
}

interface Incarnation {
  run: FerryRun;
  exited: boolean;
  listening: Record<string, unknown>;
}

async function terminate(inc: Incarnation): Promise<void> {
  if (inc.exited) return;
  inc.run.child.kill('SIGTERM');
  // A stopped daemon (a hung-peer case) must run to act on the SIGTERM.
  inc.run.child.kill('SIGCONT');
  const timer = setTimeout(() => inc.run.child.kill('SIGKILL'), STOP_GRACE_MS);
  await inc.run.done;
  clearTimeout(timer);
}

async function launch(o: FerryDaemonOptions, env: Record<string, string> | undefined): Promise<Incarnation> {
  // A daemon: no time limit; stop() ends it.
  const run = startFerry(o.args(), { host: o.host, env, timeoutMs: 0, privateMounts: o.privateMounts });
  const inc: Incarnation = { run, exited: false, listening: {} };
  void run.done.then(() => (inc.exited = true));
  try {
    const line = await run.waitForLine((l) => l.kind === 'other' && l.value.event === 'listening', o.startTimeoutMs ?? 20_000);
    inc.listening = (line as Extract<FerryLine, { kind: 'other' }>).value;
    o.check?.(inc.listening);
  } catch (err) {
    await terminate(inc);
    const r = await run.done;
    throw new Error(`${o.what} did not start: ${(err as Error).message}\n${tail(r.stderr)}`, { cause: err });
  }
  return inc;
}

export async function startFerryDaemon(o: FerryDaemonOptions): Promise<FerryDaemon> {
  let env = o.env;
  let current = await launch(o, env);
  const earlier: string[] = [];
  let restarts = 0;
  let stopping: Promise<void> | undefined;
  // restart() and stop() one at a time, in call order: a stop during a restart ends the new process too.
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(step: () => Promise<T>): Promise<T> => {
    const next = queue.then(step, step);
    queue = next.catch(() => undefined);
    return next;
  };

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const inc = current;
    if (!inc.exited) inc.run.child.kill(signal);
    await inc.run.done;
  };
  return {
    get pid() {
      return current.run.child.pid!;
    },
    get listening() {
      return current.listening;
    },
    get restarts() {
      return restarts;
    },
    stderr: () => current.run.stderr(),
    stderrAll: () => [...earlier, current.run.stderr()].join(''),
    exited: () => current.exited,
    kill,
    restart: (r) =>
      serially(async () => {
        if (stopping) throw new Error(`${o.what} was stopped: it cannot restart`);
        await kill('SIGKILL');
        if (r?.env !== undefined) env = r.env;
        const old = current;
        // A start that fails throws with its own log; the old process stays current (exited).
        current = await launch(o, env);
        earlier.push(old.run.stderr());
        restarts++;
      }),
    stop: () => {
      stopping ??= serially(() => terminate(current));
      return stopping;
    },
  };
}
