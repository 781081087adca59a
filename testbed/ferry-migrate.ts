/**
 * `ferry migrate PID --to DEST --json` as a test runs it: in-process in the src host (startMigrate), or handed to
 * a source-agent daemon over its socket (startMigrateVia), run in the daemon's host.
 */
import type { DestAgentHandle } from './dest-agent.js';
import { startFerry, type FerryResult, type FerryRun, type FerryRunOptions } from './ferry-process.js';
import type { Host, HostPair } from './netns-hosts.js';
import type { SourceAgentDaemonHandle } from './source-agent-daemon.js';

export interface MigrateOptions extends Omit<FerryRunOptions, 'host'> {
  /** HOST:PORT; default the dest agent's address. */
  to?: string;
  /** More flags for `ferry migrate`. */
  args?: string[];
}

export interface MigrateViaOptions extends MigrateOptions {
  /** The host the CLI runs in; default the daemon's (the src host when `via` is a path). */
  host?: Host;
}

/**
 * FERRY_TEST_COMPRESS=zstd|off|auto runs every migration of the e2e suite with that --compress (unless the test
 * gives its own): the suite must pass with compression forced on and forced off (issue 15).
 */
function suiteCompress(args: readonly string[]): string[] {
  const c = process.env.FERRY_TEST_COMPRESS;
  return c && !args.includes('--compress') ? ['--compress', c] : [];
}

function migrateArgs(pid: number | string, dest: DestAgentHandle | undefined, opts: MigrateOptions, via: string[]): string[] {
  const to = opts.to ?? dest?.address;
  if (to === undefined) throw new Error('ferry migrate needs a dest agent or opts.to');
  const args = opts.args ?? [];
  return ['migrate', String(pid), '--to', to, ...via, '--json', ...args, ...suiteCompress(args)];
}

/** `ferry migrate PID --to ... --json` inside the src host: the migration runs in the CLI's process. */
export function startMigrate(hosts: HostPair, pid: number | string, dest: DestAgentHandle | undefined, opts: MigrateOptions = {}): FerryRun {
  return startFerry(migrateArgs(pid, dest, opts, []), { ...opts, host: hosts.src });
}

export function runMigrate(hosts: HostPair, pid: number | string, dest: DestAgentHandle | undefined, opts: MigrateOptions = {}): Promise<FerryResult> {
  return startMigrate(hosts, pid, dest, opts).done;
}

/** `ferry migrate PID --to ... --via SOCKET --json`: the migration runs in the source agent on that socket. */
export function startMigrateVia(
  hosts: HostPair,
  via: SourceAgentDaemonHandle | string,
  pid: number | string,
  dest: DestAgentHandle | undefined,
  opts: MigrateViaOptions = {},
): FerryRun {
  const socket = typeof via === 'string' ? via : via.socket;
  const host = opts.host ?? (typeof via === 'string' ? hosts.src : via.host);
  return startFerry(migrateArgs(pid, dest, opts, ['--via', socket]), { ...opts, host });
}

export function runMigrateVia(
  hosts: HostPair,
  via: SourceAgentDaemonHandle | string,
  pid: number | string,
  dest: DestAgentHandle | undefined,
  opts: MigrateViaOptions = {},
): Promise<FerryResult> {
  return startMigrateVia(hosts, via, pid, dest, opts).done;
}
