/**
 * `ferry source-agent` in one of the two hosts (the src host unless told): the daemon that `ferry migrate --via`
 * hands migrations to. Its socket, state dir (FERRY_STATE_DIR: what it keeps between migrations and across a
 * restart) and images dir (FERRY_IMAGES_DIR) are temp dirs of the harness unless given; it dials the dests with
 * the host's certificate. Like the dest agent it can be killed and restarted with the same dirs and socket.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { startFerryDaemon, type RestartOptions } from './ferry-daemon.js';
import { leftovers, unresolvedSourceMigrations } from './leftovers.js';
import type { Host, HostPair } from './netns-hosts.js';
import { makeTempDir } from './temp-dirs.js';

export interface SourceAgentDaemonOptions {
  /** The host it runs in; default the src host. */
  host?: Host;
  /** HOST:PORT of every dest it may migrate to (--allow-dest), e.g. a dest agent's address. */
  allowDests: readonly string[];
  /** FERRY_STATE_DIR; pass the same one to a later daemon to keep what it knew. Default: a fresh temp dir, removed by stop(). */
  stateDir?: string;
  /** FERRY_IMAGES_DIR. Default: a fresh temp dir, removed by stop(). */
  imagesDir?: string;
  /** --socket. Default: source.sock in a fresh temp dir (0700: the agent wants a dir only root can write), removed by stop(). */
  socket?: string;
  /** Also serve /metrics on the host's loopback (port picked at the first start, kept across restarts). */
  metrics?: boolean;
  env?: Record<string, string>;
  /** More flags for `ferry source-agent`. */
  args?: string[];
  startTimeoutMs?: number;
}

export interface SourceAgentDaemonHandle {
  /** Pid of the current agent process (a restart makes a new one). */
  readonly pid: number;
  readonly host: Host;
  /** The absolute path of its Unix socket: what --via takes. */
  readonly socket: string;
  readonly stateDir: string;
  readonly imagesDir: string;
  readonly metricsPort: number | undefined;
  /** Restarts so far. */
  readonly restarts: number;
  /** What the current agent process wrote on stderr so far (its JSON log). */
  stderr(): string;
  /** The logs of every agent process of this handle, oldest first. */
  stderrAll(): string;
  /** Whether the current agent process has exited. */
  exited(): boolean;
  /** Images of migrations (anything besides logs/) in the images dir. */
  leftovers(): string[];
  /** Migrations its journal (in the state dir) has not seen to `done`, as `ID: STATE`. */
  unresolved(): Promise<string[]>;
  /** Sends the signal (default SIGKILL) and waits until the agent is gone; restart() may follow. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL if it still runs, then the same agent again (same socket, dirs and dests); resolves once it listens.
   * `opts.env` replaces the added environment (the dirs' variables stay). */
  restart(opts?: RestartOptions): Promise<void>;
  /** SIGTERM (the agent rolls back what is in flight), SIGKILL after 10 s; removes the dirs it made. Final; idempotent. */
  stop(): Promise<void>;
}

/** `ferry source-agent --socket PATH --allow-dest ADDR...` inside a host; resolves once it listens. */
export async function startSourceAgentDaemon(hosts: HostPair, opts: SourceAgentDaemonOptions): Promise<SourceAgentDaemonHandle> {
  const host = opts.host ?? hosts.src;
  const made: string[] = [];
  const dir = (given: string | undefined, prefix: string): string => {
    if (given !== undefined) return given;
    const d = makeTempDir(prefix);
    made.push(d);
    return d;
  };
  const removeMade = (): void => {
    for (const d of made) rmSync(d, { recursive: true, force: true });
  };
  let daemon;
  let socket: string, stateDir: string, imagesDir: string, dirsEnv: Record<string, string>;
  let metricsPort = 0;
  try {
    socket = opts.socket ?? join(dir(undefined, 'ferry-e2e-srcsock-'), 'source.sock');
    stateDir = dir(opts.stateDir, 'ferry-e2e-srcstate-');
    imagesDir = dir(opts.imagesDir, 'ferry-e2e-srcimages-');
    const args = (): string[] => {
      const a = ['source-agent', '--socket', socket];
      for (const d of opts.allowDests) a.push('--allow-dest', d);
      // Loopback only (the agent refuses any other address for its metrics).
      if (opts.metrics) a.push('--metrics', `127.0.0.1:${metricsPort}`);
      return [...a, ...(opts.args ?? [])];
    };
    dirsEnv = { FERRY_STATE_DIR: stateDir, FERRY_IMAGES_DIR: imagesDir };
    daemon = await startFerryDaemon({ what: `the source agent in ${host.name}`, host, args, env: { ...opts.env, ...dirsEnv }, startTimeoutMs: opts.startTimeoutMs });
  } catch (err) {
    removeMade();
    throw err;
  }
  const d = daemon;
  if (opts.metrics && typeof d.listening.metricsPort === 'number') metricsPort = d.listening.metricsPort;
  return {
    get pid() {
      return d.pid;
    },
    host,
    socket: typeof d.listening.socket === 'string' ? d.listening.socket : socket,
    stateDir,
    imagesDir,
    metricsPort: opts.metrics ? metricsPort : undefined,
    get restarts() {
      return d.restarts;
    },
    stderr: () => d.stderr(),
    stderrAll: () => d.stderrAll(),
    exited: () => d.exited(),
    leftovers: () => leftovers(imagesDir),
    unresolved: () => unresolvedSourceMigrations(stateDir),
    kill: (signal) => d.kill(signal),
    // The dirs stay whatever env a restart brings.
    restart: (r) => d.restart(r?.env === undefined ? r : { env: { ...r.env, ...dirsEnv } }),
    stop: async () => {
      await d.stop();
      removeMade();
    },
  };
}
