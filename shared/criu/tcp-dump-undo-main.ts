/**
 * `node tcp-dump-undo-main.js LOCK_JSON|null PID:STARTTIME... [--hold=HOLD_JSON]`: the undo of a --tcp-established
 * dump (tcp-dump-undo.ts) as a program of its own, for the freeze guard, which runs it before it thaws a tree
 * whose agent died (a bash guard cannot call setsockopt). With --hold (a task in its own network namespace),
 * the network hold is let go first and the addresses announced (task-network-hold.ts), as a rollback does.
 * Only processes whose start time is still the one given are touched: a pid reused since is another process.
 * Prints its report as one JSON line; exits 1 when a step failed.
 */
import { readStat } from '../kernel/proc-status.js';
import { isTaskNetworkHold, releaseTaskNetworkHold, type HoldReleaseReport } from '../kernel/task-network-hold.js';
import { undoTcpEstablishedDump, isTcpDumpLock, type TcpDumpUndoReport } from './tcp-dump-undo.js';

const [lockJson = 'null', ...rest] = process.argv.slice(2);
const lock: unknown = JSON.parse(lockJson);
const holdArg = rest.find((a) => a.startsWith('--hold='));
const hold: unknown = holdArg ? JSON.parse(holdArg.slice('--hold='.length)) : undefined;
const pids = rest.flatMap((a) => {
  if (a.startsWith('--')) return [];
  const [pid, startTime] = a.split(':').map(Number);
  return pid !== undefined && Number.isSafeInteger(pid) && readStat(pid)?.startTime === startTime ? [pid] : [];
});
// Only while the held namespace is still the original's: its root's pid must be one of those checked above.
const holdReport: HoldReleaseReport | undefined = isTaskNetworkHold(hold) && pids.some((p) => hold.netns === `/proc/${p}/ns/net`) ? await releaseTaskNetworkHold(hold) : undefined;
const tcpReport: TcpDumpUndoReport | undefined = isTcpDumpLock(lock) ? undoTcpEstablishedDump(pids, lock) : undefined;
const errors = [...(holdReport?.errors ?? []), ...(tcpReport?.errors ?? [])];
process.stdout.write(`${JSON.stringify({ ...tcpReport, hold: holdReport, errors })}\n`);
process.exitCode = errors.length > 0 ? 1 : 0;
