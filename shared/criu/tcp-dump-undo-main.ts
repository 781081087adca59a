/**
 * `node tcp-dump-undo-main.js LOCK_JSON PID:STARTTIME...`: the undo of a --tcp-established dump (tcp-dump-undo.ts) as a
 * program of its own, for the freeze guard, which runs it before it thaws a tree whose agent died (a bash
 * guard cannot call setsockopt). Only processes whose start time is still the one given are touched: a pid
 * reused since is another process. Prints its report as one JSON line; exits 1 when a step failed.
 */
import { readStat } from '../kernel/proc-status.js';
import { undoTcpEstablishedDump, type TcpDumpLock } from './tcp-dump-undo.js';

const [lockJson = '', ...pidArgs] = process.argv.slice(2);
const lock = JSON.parse(lockJson) as TcpDumpLock;
const pids = pidArgs.flatMap((a) => {
  const [pid, startTime] = a.split(':').map(Number);
  return pid !== undefined && Number.isSafeInteger(pid) && readStat(pid)?.startTime === startTime ? [pid] : [];
});
const report = undoTcpEstablishedDump(pids, lock);
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exitCode = report.errors.length > 0 ? 1 : 0;
