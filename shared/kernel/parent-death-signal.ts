/**
 * Children that die with this process (PR_SET_PDEATHSIG = SIGKILL). Node runs none of our code between fork and
 * exec, so util-linux `setpriv --pdeathsig KILL` sets it in the child and then execs the command; the setting
 * survives execve, except into a set-user-ID binary or one with file capabilities (the kernel clears it then).
 * The kernel sends the signal when the thread that forked the child exits: Node spawns from its main thread,
 * so that is this process's death.
 *
 * A parent that died before setpriv's prctl() would go unnoticed and the child would run on unwatched; so a
 * shell, once the setting holds, checks that its parent is still this process and only then execs the command.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { FerryError, type FerryErrorInit } from '../errors/ferry-error.js';

/** Where util-linux installs it, looked at before PATH (an agent's PATH under systemd is short). */
const USUAL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];
const PROBE_TIMEOUT_MS = 10_000;
/** The guard's exit code when the spawner was already gone: the command never ran. */
export const PARENT_GONE_EXIT = 125;
const GUARD = `test "$PPID" = "$1" || exit ${PARENT_GONE_EXIT}; shift; exec "$@"`;

export interface WrappedCommand {
  command: string;
  args: string[];
}

/** `command args` run so that it gets SIGKILL when this process dies; `name` is the guard shell's ps name. */
export function diesWithParent(setpriv: string, name: string, command: string, args: readonly string[]): WrappedCommand {
  return { command: setpriv, args: ['--pdeathsig', 'KILL', '--', '/bin/sh', '-c', GUARD, name, String(process.pid), command, ...args] };
}

const found = new Map<string, Promise<string>>();

/**
 * The path of a setpriv that can set the parent-death signal, in `dirs` (default: the usual ones, then PATH),
 * probed once per process by running the whole chain; a failure is not cached, so a later call looks again.
 * Throws SETPRIV_MISSING.
 */
export function requireSetpriv(init: FerryErrorInit = { phase: 'negotiate', side: 'source' }, dirs: readonly string[] = searchDirs()): Promise<string> {
  const key = dirs.join(delimiter);
  let p = found.get(key);
  if (!p) {
    p = locateSetpriv(dirs);
    found.set(key, p);
    p.catch(() => found.delete(key));
  }
  return p.catch((e: unknown) => {
    throw new FerryError('SETPRIV_MISSING', { ...init, detail: e instanceof Error ? e.message : String(e), cause: e });
  });
}

function searchDirs(): string[] {
  return [...new Set([...USUAL_DIRS, ...(process.env.PATH ?? '').split(delimiter).filter((d) => d.startsWith('/'))])];
}

async function locateSetpriv(dirs: readonly string[]): Promise<string> {
  const path = dirs.map((d) => join(d, 'setpriv')).find(isExecutable);
  if (!path) throw new Error(`no executable setpriv in ${dirs.join(', ')}`);
  // busybox has a setpriv without --pdeathsig: only running it tells.
  const probe = diesWithParent(path, 'ferry-setpriv-probe', '/bin/sh', ['-c', 'exit 0']);
  await new Promise<void>((ok, fail) =>
    execFile(probe.command, probe.args, { timeout: PROBE_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (err) fail(new Error(`${path} --pdeathsig KILL does not work: ${stderr.trim().slice(0, 300) || err.message}`));
      else ok();
    }),
  );
  return path;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
