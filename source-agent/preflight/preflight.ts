/**
 * The migratability preflight: every check of this directory, run on facts read once from /proc, before
 * anything is touched. `ferry check PID` prints all findings; negotiate refuses with the first refusal's
 * FerryError and lists the others in its detail. `--allow CHECK` turns an overridable check's refusal into
 * a note; naming any other check is a usage error.
 */
import { ERRORS, type ErrorKey } from '../../shared/errors/codes.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { capabilitiesCheck } from './capabilities.js';
import { cpuFeaturesCheck } from './cpu-features.js';
import { deviceMappingsCheck } from './device-mappings.js';
import { fileLocksCheck } from './file-locks.js';
import { hugePagesCheck } from './huge-pages.js';
import { ioUringCheck } from './io-uring.js';
import { localAddressesCheck } from './local-addresses.js';
import { mountPathsCheck } from './mount-paths.js';
import { nsfsHandlesCheck } from './nsfs-handles.js';
import type { PreflightCheck, PreflightInput, Verdict } from './preflight-check.js';
import { sysvIpcCheck } from './sysv-ipc.js';
import { taskNetworkCheck } from './task-network.js';
import { tcpConnectionsCheck } from './tcp-connections.js';
import { uprobesCheck } from './uprobes.js';
import { vforkCheck } from './vfork.js';
import { zombieThreadsCheck } from './zombie-threads.js';

/** In the order an operator fixes things: this host, then the task, then the dest. */
export const PREFLIGHT_CHECKS: readonly PreflightCheck[] = [
  capabilitiesCheck,
  fileLocksCheck,
  tcpConnectionsCheck,
  sysvIpcCheck,
  hugePagesCheck,
  ioUringCheck,
  uprobesCheck,
  deviceMappingsCheck,
  nsfsHandlesCheck,
  vforkCheck,
  zombieThreadsCheck,
  localAddressesCheck,
  taskNetworkCheck,
  mountPathsCheck,
  cpuFeaturesCheck,
];

export interface Finding {
  check: string;
  verdict: Verdict;
  code: string;
  message: string;
  /** What to do: the code's hint for a refusal or a note, '' when ok. */
  hint: string;
  /** Where the refusal comes from (for the FerryError). */
  side: 'source' | 'dest';
  key: ErrorKey;
}

/**
 * The checks `--allow` names, validated: each must exist and be overridable (BAD_ARGUMENT otherwise). Given
 * as one or more comma-separated lists.
 */
export function compileAllow(values: readonly string[] | undefined): string[] {
  const names = (values ?? []).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  const overridable = PREFLIGHT_CHECKS.filter((c) => c.overridable).map((c) => c.name);
  for (const name of names) {
    const check = PREFLIGHT_CHECKS.find((c) => c.name === name);
    if (!check || !check.overridable) {
      throw new FerryError('BAD_ARGUMENT', {
        message: check ? `--allow ${name}: that check cannot be overridden` : `--allow ${name}: no such check`,
        hint: `--allow takes ${overridable.join(', ')}; a refusal of any other check names what to change on the task or the hosts.`,
      });
    }
  }
  return [...new Set(names)];
}

/** Runs every check, in order; `allow` is compileAllow's. */
export function runPreflight(input: PreflightInput, allow: readonly string[] = []): Finding[] {
  return PREFLIGHT_CHECKS.map((check) => {
    const o = check.run(input);
    const key = o.key ?? check.key;
    const allowed = o.verdict === 'refuse' && check.overridable && allow.includes(check.name);
    const verdict: Verdict = allowed ? 'note' : o.verdict;
    return {
      check: check.name,
      verdict,
      code: ERRORS[key].code,
      message: allowed ? `${o.message} (allowed by --allow ${check.name})` : o.message,
      hint: verdict === 'ok' ? '' : ERRORS[key].hint,
      side: o.side ?? 'source',
      key,
    };
  });
}

/** The first refusal as the FerryError migrate throws (the others in its detail), or undefined. */
export function preflightRefusal(findings: readonly Finding[]): FerryError | undefined {
  const refusals = findings.filter((f) => f.verdict === 'refuse');
  const first = refusals[0];
  if (!first) return undefined;
  const others = refusals.slice(1).map((f) => `${f.code} ${f.check}: ${f.message}`);
  return new FerryError(first.key, {
    phase: 'negotiate',
    side: first.side,
    sourceState: 'running',
    detail: [`${first.check}: ${first.message}`, ...(others.length > 0 ? [`also refused: ${others.join(' | ')}`] : [])].join('; '),
  });
}
