/**
 * MigrateOptions <-> the ferry.v1 MigrateRequest: `ferry migrate --via` sends the operator's options as they
 * were given, and the source agent compiles them once, with its own environment, where the migration runs.
 * Every option is a proto3 `optional`: one not given stays absent (the agent's default applies), and a given
 * value, even 0, reaches the compile, which refuses it like the flag.
 */
import type { NoConvergeAction } from '../../shared/policy/convergence.js';
import type { MigrateRequest } from '../../shared/transport/messages.js';
import type { MigrateOptions } from './migrate-options.js';

/** An undefined option is left out of the encoded message (protobufjs skips it). */
export function toMigrateRequest(o: MigrateOptions): MigrateRequest {
  return {
    pid: o.pid,
    dest: o.to,
    maxRounds: o.maxRounds,
    maxDowntimeMs: o.maxDowntimeMs,
    freezeTimeoutMs: o.freezeTimeoutMs,
    restoreTimeoutMs: o.restoreTimeoutMs,
    bandwidthBytesPerSecond: o.bandwidthBytesPerSecond,
    onNoConverge: o.onNoConverge,
    noPrecopy: o.noPrecopy,
    tracker: o.tracker,
    commitPatienceMs: o.commitPatienceMs,
    restore: o.restore,
    postCopy: o.postCopy,
    fileLocks: o.fileLocks,
    tcpEstablished: o.tcpEstablished,
    compress: o.compress,
    allow: o.allow ?? [],
    pageChannels: o.pageChannels,
  };
}

/** What the request asks for; compileMigrateOptions validates it like flags typed on this host. */
export function fromMigrateRequest(r: MigrateRequest): MigrateOptions {
  return {
    pid: r.pid,
    to: r.dest,
    maxRounds: r.maxRounds,
    maxDowntimeMs: r.maxDowntimeMs,
    freezeTimeoutMs: r.freezeTimeoutMs,
    restoreTimeoutMs: r.restoreTimeoutMs,
    bandwidthBytesPerSecond: r.bandwidthBytesPerSecond,
    // Any other string is refused by the compile, with the flag's own message.
    onNoConverge: r.onNoConverge as NoConvergeAction | undefined,
    noPrecopy: r.noPrecopy,
    tracker: r.tracker,
    commitPatienceMs: r.commitPatienceMs,
    restore: r.restore,
    postCopy: r.postCopy,
    fileLocks: r.fileLocks,
    tcpEstablished: r.tcpEstablished,
    compress: r.compress,
    allow: r.allow && r.allow.length > 0 ? r.allow : undefined,
    pageChannels: r.pageChannels,
  };
}
