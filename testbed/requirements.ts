/**
 * Host requirements of integration and end-to-end tests. A test that cannot run here skips and prints why;
 * it never passes silently.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './ferry-process.js';

const DIST_MAIN = join(REPO_ROOT, 'dist', 'cli', 'main.js');

export interface Requirement {
  ok: boolean;
  reason: string;
}

export function isRoot(): Requirement {
  const ok = process.getuid?.() === 0;
  return { ok, reason: 'needs root (CRIU, ptrace and network namespaces)' };
}

export function hasCommand(cmd: string): Requirement {
  let ok = true;
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  } catch {
    ok = false;
  }
  return { ok, reason: `needs the command ${cmd}` };
}

/** Returns true when every requirement holds; otherwise prints the reasons for `what` and returns false. */
export function canRun(what: string, ...reqs: Requirement[]): boolean {
  const missing = reqs.filter((r) => !r.ok).map((r) => r.reason);
  if (missing.length === 0) return true;
  console.warn(`SKIP ${what}: ${missing.join('; ')}`);
  return false;
}

let criuProbe: (Requirement & { path: string | undefined }) | undefined;

/** A usable CRIU, found the way Ferry finds it (scripts/provision-criu.sh, which honours FERRY_CRIU). The
 * first run on a fresh host provisions it (a download of ~8 MB); later runs only re-check. */
export function hasCriu(): Requirement {
  criuProbe ??= (() => {
    try {
      const out = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'provision-criu.sh')], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 10 * 60_000,
      });
      const path = out.trim().split('\n').at(-1) ?? '';
      const ok = path.startsWith('/');
      return { ok, path: ok ? path : undefined, reason: `needs CRIU >= 4.2 (scripts/provision-criu.sh printed "${path}")` };
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr?.trim().split('\n').slice(-2).join(' | ') ?? String(err);
      return { ok: false, path: undefined, reason: `needs CRIU >= 4.2 (scripts/provision-criu.sh failed: ${stderr})` };
    }
  })();
  return { ok: criuProbe.ok, reason: criuProbe.reason };
}

/** The CRIU binary hasCriu() found, or undefined when there is none. */
export function criuPath(): string | undefined {
  hasCriu();
  return criuProbe?.path;
}

/** Throws a clear error when the CLI is not compiled (the e2e tests run bin/ferry.js, which runs dist/). */
export function requireBuilt(): void {
  if (!existsSync(DIST_MAIN)) {
    throw new Error(`${DIST_MAIN} is missing: run \`npm run build\` first (npm test does it) — the e2e tests run the compiled CLI`);
  }
}

/**
 * Whether the compiled `ferry migrate` has a flag (its --help names it): a feature this build predates skips with
 * the reason. Without a build this holds, so that requireBuilt() reports the missing build instead of a skip.
 */
export function hasMigrateFlag(flag: string): Requirement {
  const reason = `\`ferry migrate\` of this build has no ${flag} (not in \`ferry migrate --help\`)`;
  if (!existsSync(DIST_MAIN)) return { ok: true, reason };
  try {
    const help = execFileSync(process.execPath, [join(REPO_ROOT, 'bin', 'ferry.js'), 'migrate', '--help'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return { ok: new RegExp(`(^|\\s)${flag}(\\s|=|$)`, 'm').test(help), reason };
  } catch (err) {
    return { ok: false, reason: `\`ferry migrate --help\` failed: ${String(err)}` };
  }
}
