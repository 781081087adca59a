/**
 * MigrateOptions <-> the ferry.v1 MigrateRequest: `ferry migrate --via` sends the operator's options as they
 * were given, and the source agent compiles them once, with its own environment, where the migration runs.
 * Zero on the wire means "not given" (proto3 scalars), so the defaults are the agent's.
 */
import type { NoConvergeAction } from '../../shared/policy/convergence.js';
import type { MigrateRequest } from '../../shared/transport/messages.js';
import type { MigrateOptions } from './migrate-options.js';

export function toMigrateRequest(o: MigrateOptions): MigrateRequest {
  return {
    pid: o.pid,
    dest: o.to,
    maxRounds: o.maxRounds ?? 0,
    maxDowntimeMs: o.maxDowntimeMs ?? 0,
    freezeTimeoutMs: o.freezeTimeoutMs ?? 0,
    restoreTimeoutMs: o.restoreTimeoutMs ?? 0,
    bandwidthBytesPerSecond: o.bandwidthBytesPerSecond ?? 0,
    onNoConverge: o.onNoConverge ?? '',
    noPrecopy: o.noPrecopy ?? false,
    tracker: o.tracker ?? '',
  };
}

/** What the request asks for; compileMigrateOptions validates it like flags typed on this host. */
export function fromMigrateRequest(r: MigrateRequest): MigrateOptions {
  return {
    pid: r.pid,
    to: r.dest,
    maxRounds: r.maxRounds || undefined,
    maxDowntimeMs: r.maxDowntimeMs || undefined,
    freezeTimeoutMs: r.freezeTimeoutMs || undefined,
    restoreTimeoutMs: r.restoreTimeoutMs || undefined,
    bandwidthBytesPerSecond: r.bandwidthBytesPerSecond || undefined,
    // Any other string is refused by the compile, with the flag's own message.
    onNoConverge: (r.onNoConverge || undefined) as NoConvergeAction | undefined,
    noPrecopy: r.noPrecopy,
    tracker: r.tracker || undefined,
  };
}
