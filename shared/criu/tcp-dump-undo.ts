/**
 * The undo of `criu dump --tcp-established --network-lock nftables --leave-stopped`, for a stopped original that
 * is to run on (rollback). Such a dump leaves two things behind (docs: netns-tcp-lab, points 2 and 4):
 *   - every established socket of the tree in TCP_REPAIR mode (recv() then fails with EPERM: peers get reset);
 *   - CRIU's lock, `table inet CRIU-<run id, cut to 21 characters>`, in the root task's network namespace
 *     (criu's own when the task shares it, as Ferry's tasks do today), dropping the connections' packets.
 * The undo takes the sockets out of repair first (their window probe is still dropped by the lock, the peer's
 * next retransmission gets through), then deletes that one table: found by the run id of this dump's log,
 * never by a pattern that could match another criu's lock. Each step runs whatever the other did; what failed
 * is reported, never thrown. The thaw (SIGCONT) is the caller's, after this.
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { leaveTcpRepair } from '../kernel/tcp-repair.js';
import { readStat } from '../kernel/proc-status.js';
import { waitGone } from '../kernel/process-wait.js';
import { deleteNftTable, type NftTable } from '../kernel/nft-tables.js';
import type { TaskNetworkHold } from '../kernel/task-network-hold.js';

/** What the undo needs besides the tree's pids; journaled with the freeze, so that a resolver can undo too. */
export interface TcpDumpLock {
  /** The dump's criu log: its first line names the run id, and so the lock table. */
  dumpLog: string;
  /**
   * The network namespace the lock is in, as an nsfs path: `/proc/thread-self/ns/net` when the task shares
   * this process's (and a resolver's: the agent's), else `/proc/<root pid>/ns/net`.
   */
  netns: string;
}

export function isTcpDumpLock(v: unknown): v is TcpDumpLock {
  return typeof v === 'object' && v !== null && typeof (v as TcpDumpLock).dumpLog === 'string' && typeof (v as TcpDumpLock).netns === 'string';
}

export interface TcpDumpUndoReport {
  /** Sockets taken out of repair mode (`pid N fd M`). */
  released: string[];
  /** The lock table deleted, if it was there. */
  tableDeleted?: string | undefined;
  /** Each step's failure, in words; empty when the undo is complete. */
  errors: string[];
  /** Why there was no lock to delete, when there was none. */
  note?: string | undefined;
}

export const SELF_NETNS = '/proc/thread-self/ns/net';

/** The nsfs path of the network namespace `rootPid` is in, as TcpDumpLock.netns wants it. */
export function lockNetns(rootPid: number): string {
  const theirs = `/proc/${rootPid}/ns/net`;
  try {
    return statSync(theirs).ino === statSync(SELF_NETNS).ino ? SELF_NETNS : theirs;
  } catch {
    return theirs;
  }
}

/** CRIU logs `CRIU run id = <uuid>` first (criu/util.c) and names its table `inet CRIU-<id>` in a char[32]. */
export function lockTableFromLog(head: string): NftTable | undefined {
  const m = /CRIU run id = ([0-9a-f-]{8,})/.exec(head);
  return m ? { family: 'inet', name: `CRIU-${m[1]!}`.slice(0, 'CRIU-'.length + 21) } : undefined;
}

/** The first 4 KiB of the log: the run id is on its first line. */
function readHead(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(4096);
    return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Deletes this dump's lock table; the report's errors say why not. */
export function dropCriuLock(lock: TcpDumpLock, report: TcpDumpUndoReport): void {
  let table: NftTable | undefined;
  try {
    table = lockTableFromLog(readHead(lock.dumpLog));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      report.errors.push(`CRIU's lock table unknown (log ${lock.dumpLog}): ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
  }
  // criu writes its run id before anything else: without it, it never got to lock anything.
  if (!table) {
    report.note = `no lock: ${lock.dumpLog} is missing or names no run id (criu did not start)`;
    return;
  }
  try {
    if (deleteNftTable(lock.netns, table)) report.tableDeleted = `${table.family} ${table.name}`;
  } catch (e) {
    report.errors.push(`table ${table.family} ${table.name} not deleted in ${lock.netns}: ${String(e)}`);
  }
}

/**
 * After a commit killed the original: once `pids` are gone (within `budgetMs`), the lock deleted. Deleted while a
 * socket of the original still lives, the lock would let that socket's reset out; kept then, and said so.
 */
export async function dropCriuLockOnceGone(pids: readonly number[], lock: TcpDumpLock, budgetMs: number): Promise<TcpDumpUndoReport> {
  const report: TcpDumpUndoReport = { released: [], errors: [] };
  await waitGone(pids, budgetMs);
  const left = pids.filter((pid) => !['Z', 'X', undefined].includes(readStat(pid)?.state));
  if (left.length > 0) report.errors.push(`the original's processes ${left.join(', ')} are not gone after ${budgetMs} ms: CRIU's lock is kept`);
  else dropCriuLock(lock, report);
  return report;
}

/** Repair mode off on every socket of `pids` (the stopped original's), then the lock table deleted. */
export function undoTcpEstablishedDump(pids: readonly number[], lock: TcpDumpLock): TcpDumpUndoReport {
  const report: TcpDumpUndoReport = { released: [], errors: [] };
  try {
    const r = leaveTcpRepair(pids);
    report.released = r.released;
    report.errors.push(...r.failures.map((f) => `TCP repair not left: ${f}`));
  } catch (e) {
    report.errors.push(`TCP repair not left: ${String(e)}`);
  }
  dropCriuLock(lock, report);
  return report;
}

/**
 * The undo as a command line (tcp-dump-undo-main.ts), for a freeze guard to run if this process dies; undefined
 * where that program is not built (sources run by a test runner: only the built dist/ has it). With `hold` (a
 * task in its own network namespace) the program lets go of the hold first; `lock` absent: no tcp undo.
 */
export function tcpDumpUndoCommand(pids: readonly number[], lock: TcpDumpLock | undefined, hold?: TaskNetworkHold): string[] | undefined {
  const main = fileURLToPath(new URL('./tcp-dump-undo-main.js', import.meta.url));
  if (!existsSync(main)) return undefined;
  // Each pid with its start time: the program leaves alone a pid reused by then.
  const procs = pids.flatMap((pid) => {
    const st = readStat(pid);
    return st ? [`${pid}:${st.startTime}`] : [];
  });
  return [process.execPath, main, JSON.stringify(lock ?? null), ...procs, ...(hold ? [`--hold=${JSON.stringify(hold)}`] : [])];
}
