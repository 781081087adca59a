/**
 * Temp dirs of the harness: on tmpfs when there is one (images and page stores at RAM speed, like the
 * product's defaults), and one state dir per test process for what the agents keep between migrations.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const STATE_DIR_PREFIX = 'ferry-e2e-statedir-';

let stateDir: string | undefined;

/** Where temp dirs go: tmpfs when there is one. */
export function tempBase(): string {
  return existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
}

/** A fresh temp dir (mode 0700) on tmpfs when there is one. */
export function makeTempDir(prefix: string): string {
  return mkdtempSync(join(tempBase(), prefix));
}

/**
 * One state dir per test process for the agents' own files (FERRY_STATE_DIR of every ferry the harness starts
 * unless told otherwise). vitest's workers do not always run exit hooks, so the dir carries the pid and every
 * new one removes those of processes that are gone.
 */
export function testStateDir(): string {
  if (stateDir) return stateDir;
  const base = tempBase();
  for (const name of readdirSync(base)) {
    const pid = Number(new RegExp(`^${STATE_DIR_PREFIX}(\\d+)-`).exec(name)?.[1]);
    if (pid && !existsSync(`/proc/${pid}`)) rmSync(join(base, name), { recursive: true, force: true });
  }
  stateDir = makeTempDir(`${STATE_DIR_PREFIX}${process.pid}-`);
  return stateDir;
}

// Last resort for a run that ends without its afterAll (an exception in a hook, a worker shut down early).
process.once('exit', () => {
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});
