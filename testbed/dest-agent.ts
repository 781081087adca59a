/**
 * `ferry dest-agent` in one of the two hosts (the dst host unless told), with mutual TLS, accepting only the
 * other host. It can be killed and restarted at the same address with the same work dir, as a crashed agent
 * is restarted; only the final stop() removes a work dir the harness made for it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { readPidState } from './process-probes.js';
import { startFerryDaemon, type RestartOptions } from './ferry-daemon.js';
import { leftovers } from './leftovers.js';
import type { Host, HostPair } from './netns-hosts.js';
import { makeTempDir } from './temp-dirs.js';

export interface DestAgentOptions {
  /** The host it runs in; default the dst host. */
  host?: Host;
  /** The port of --listen; default 0 (the agent picks one). Restarts listen on the port of the first start. */
  port?: number;
  /** Default: a fresh temp dir, removed by stop(). A given one is kept. */
  workDir?: string;
  env?: Record<string, string>;
  /** Also serve /metrics on the host's address (port picked at the first start, kept across restarts). */
  metrics?: boolean;
  /** The sources it accepts (--allow-peer); default the other host's identity. */
  allowPeers?: string[];
  startTimeoutMs?: number;
  /** More flags for `ferry dest-agent` (e.g. --insecure --insecure-any-address). */
  args?: string[];
  /** In a mount namespace of its own, made at its start: the host's later mounts are not there. */
  privateMounts?: boolean;
}

export interface DestAgentHandle {
  /** Pid of the current agent process (a restart makes a new one). */
  readonly pid: number;
  readonly host: Host;
  readonly port: number;
  /** HOST:PORT for --to. */
  readonly address: string;
  readonly metricsPort: number | undefined;
  readonly workDir: string;
  /** Restarts so far. */
  readonly restarts: number;
  /** What the current agent process wrote on stderr so far (its JSON log). */
  stderr(): string;
  /** The logs of every agent process of this handle, oldest first. */
  stderrAll(): string;
  /** Whether the current agent process has exited. */
  exited(): boolean;
  /** Session dirs (and anything else besides logs/) in the work dir. */
  leftovers(): string[];
  /** Sends the signal (default SIGKILL) and waits until the agent is gone; restart() may follow. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL if it still runs, then the same agent again: same address, work dir and peers; resolves once it listens.
   * `opts.env` replaces the added environment, e.g. to come back without the FERRY_FAULT that killed it. */
  restart(opts?: RestartOptions): Promise<void>;
  /** SIGTERM (the agent aborts open sessions), SIGKILL after 10 s; removes a work dir it created. Final; idempotent. */
  stop(): Promise<void>;
}

/**
 * Every ferry_pager (and its guardian) serving a session under `workDir`, with the copy each serves (its
 * restored.pid, if the pager's start time precedes the copy's): SIGKILL, then a bounded wait until they are gone.
 */
export async function killPagersOf(workDir: string): Promise<void> {
  const victims: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    const args = cmd.split('\0');
    if (!args[0]?.endsWith('ferry_pager')) continue;
    const plan = args[args.indexOf('--plan') + 1] ?? '';
    if (!plan.startsWith(`${workDir}/`)) continue;
    victims.push(Number(name));
    const pidFile = args[args.indexOf('--pidfile') + 1];
    let copy = NaN;
    try {
      copy = pidFile ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
    } catch {
      /* no copy restored yet, or its session removed already */
    }
    if (Number.isSafeInteger(copy) && copy > 1) victims.push(copy);
  }
  for (const pid of victims) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (let i = 0; i < 100 && victims.some((pid) => existsSync(`/proc/${pid}`) && readPidState(pid) !== 'Z'); i++) await sleep(20);
}

/**
 * The pagers running for sessions under `workDir` (not their guardians: forks with the same command line). It
 * reads every process's command line (pgrep -f): not while a lazily restored copy's stack page may be missing.
 */
export function pagersOf(workDir: string): number[] {
  let pids: number[];
  try {
    pids = execFileSync('pgrep', ['-f', `ferry_pager --plan ${workDir}`], { encoding: 'utf8', timeout: 10_000 }).trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
  const ppid = (pid: number): number => Number(/\) \S (\d+)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? 0);
  return pids.filter((pid) => {
    try {
      return !pids.includes(ppid(pid));
    } catch {
      return false; // gone meanwhile
    }
  });
}

/** `ferry dest-agent --listen ADDR:PORT --allow-peer OTHER-ID` inside a host (mutual TLS); resolves once it listens. */
export async function startDestAgent(hosts: HostPair, opts: DestAgentOptions = {}): Promise<DestAgentHandle> {
  const host = opts.host ?? hosts.dst;
  const ownWorkDir = opts.workDir === undefined;
  const workDir = opts.workDir ?? makeTempDir('ferry-e2e-dest-');
  let port = opts.port ?? 0;
  let metricsPort = 0;
  const args = (): string[] => {
    const a = ['dest-agent', '--listen', `${host.address}:${port}`, '--work-dir', workDir];
    for (const peer of opts.allowPeers ?? [hosts.peerOf(host).identity]) a.push('--allow-peer', peer);
    if (opts.metrics) a.push('--metrics', `${host.address}:${metricsPort}`);
    a.push(...(opts.args ?? []));
    return a;
  };
  const check = (listening: Record<string, unknown>): void => {
    if (typeof listening.port !== 'number') throw new Error(`the dest agent printed no port: ${JSON.stringify(listening)}`);
    // A restart must come back where the sources look for it.
    if (port !== 0 && listening.port !== port) throw new Error(`the dest agent listens on ${listening.port}, not on ${port}`);
  };
  let daemon;
  try {
    daemon = await startFerryDaemon({ what: `the dest agent in ${host.name}`, host, args, env: opts.env, privateMounts: opts.privateMounts, startTimeoutMs: opts.startTimeoutMs, check });
  } catch (err) {
    if (ownWorkDir) rmSync(workDir, { recursive: true, force: true });
    throw err;
  }
  const d = daemon;
  port = d.listening.port as number;
  if (opts.metrics && typeof d.listening.metricsPort === 'number') metricsPort = d.listening.metricsPort;
  return {
    get pid() {
      return d.pid;
    },
    host,
    port,
    address: `${host.address}:${port}`,
    metricsPort: opts.metrics ? metricsPort : undefined,
    workDir,
    get restarts() {
      return d.restarts;
    },
    stderr: () => d.stderr(),
    stderrAll: () => d.stderrAll(),
    exited: () => d.exited(),
    leftovers: () => leftovers(workDir),
    kill: (signal) => d.kill(signal),
    restart: (r) => d.restart(r),
    stop: async () => {
      await d.stop();
      // A pager outlives its agent by design (a restart adopts it); a test's must not outlive the test.
      await killPagersOf(workDir);
      if (ownWorkDir) rmSync(workDir, { recursive: true, force: true });
    },
  };
}
