/**
 * Host requirements of integration and end-to-end tests. A test that cannot run here skips and prints why;
 * it never passes silently.
 */
import { execFileSync } from 'node:child_process';

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
