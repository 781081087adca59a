/**
 * `node tcp-dump-undo-main.js LOCK_JSON PID...`: the undo of a --tcp-established dump (tcp-dump-undo.ts) as a
 * program of its own, for the freeze guard, which runs it before it thaws a tree whose agent died (a bash
 * guard cannot call setsockopt). Prints its report as one JSON line; exits 1 when a step failed.
 */
import { undoTcpEstablishedDump, type TcpDumpLock } from './tcp-dump-undo.js';

const [lockJson = '', ...pidArgs] = process.argv.slice(2);
const lock = JSON.parse(lockJson) as TcpDumpLock;
const report = undoTcpEstablishedDump(pidArgs.map(Number).filter(Number.isSafeInteger), lock);
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exitCode = report.errors.length > 0 ? 1 : 0;
