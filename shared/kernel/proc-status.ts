/**
 * /proc/PID/status and /proc/PID/stat of one task: identity, state, parentage and pid-namespace view.
 * Pure parsers for fixtures, thin readers that return undefined once the task is gone.
 */
import { readFileSync } from 'node:fs';

/** The kernel's PF_KTHREAD flag in /proc/PID/stat's flags field. */
export const PF_KTHREAD = 0x00200000;

export interface ProcStatus {
  /** The task's comm (at most 15 bytes), unescaped. */
  name: string;
  /** One letter: R, S, D, T, t, Z, X, I, ... */
  state: string;
  tgid: number;
  pid: number;
  ppid: number;
  /** The task's ids as seen from each pid namespace, outermost (this /proc's) first, innermost last. */
  nsTgids: number[];
  nsPids: number[];
  /** 0 at a level where the process group or session leader is not visible. */
  nsPgids: number[];
  nsSids: number[];
  threads: number;
  /** The Kthread field (Linux >= 6.7); undefined when the kernel does not print it. */
  kthread: boolean | undefined;
}

export interface ProcStat {
  pid: number;
  /** May contain spaces and parentheses. */
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  ttyNr: number;
  tpgid: number;
  /** PF_* flags (an unsigned 32-bit value). */
  flags: number;
  /** Start time in clock ticks after boot: with the pid it names a task across pid reuse. */
  startTime: number;
}

/**
 * Reads a /proc file; undefined when the task is gone (ENOENT, or ESRCH for a task exiting under the read).
 * Every kernel reader goes through this so that "gone" means the same everywhere.
 */
export function readProcText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw e;
  }
}

function taskPath(pid: number, tid: number | undefined, file: string): string {
  return tid === undefined ? `/proc/${pid}/${file}` : `/proc/${pid}/task/${tid}/${file}`;
}

function ids(value: string | undefined): number[] {
  if (value === undefined || value.trim() === '') return [];
  return value.trim().split(/\s+/).map(Number);
}

/** The kernel escapes '\n' and '\\' in Name (proc_task_name with escaping). */
function unescapeName(raw: string): string {
  return raw.replace(/\\(n|\\)/g, (_m, c: string) => (c === 'n' ? '\n' : '\\'));
}

function int(fields: Map<string, string>, key: string, file: string): number {
  const v = fields.get(key);
  if (v === undefined || !/^-?\d+$/.test(v.trim())) throw new Error(`malformed ${file}: no integer ${key}`);
  return Number(v.trim());
}

/** Parses the text of /proc/PID/status. Throws on text that lacks the fields every kernel prints. */
export function parseStatus(text: string): ProcStatus {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).replace(/^\t/, ''));
  }
  const state = fields.get('State')?.trim()[0];
  if (state === undefined) throw new Error('malformed status: no State');
  const pid = int(fields, 'Pid', 'status');
  const tgid = int(fields, 'Tgid', 'status');
  const kthread = fields.get('Kthread')?.trim();
  // Kernels before 4.1 print no NS* lines: the task then lives in this /proc's namespace only.
  const nsPids = ids(fields.get('NSpid'));
  const nsTgids = ids(fields.get('NStgid'));
  return {
    name: unescapeName(fields.get('Name') ?? ''),
    state,
    tgid,
    pid,
    ppid: int(fields, 'PPid', 'status'),
    nsTgids: nsTgids.length > 0 ? nsTgids : [tgid],
    nsPids: nsPids.length > 0 ? nsPids : [pid],
    nsPgids: ids(fields.get('NSpgid')),
    nsSids: ids(fields.get('NSsid')),
    threads: int(fields, 'Threads', 'status'),
    kthread: kthread === undefined ? undefined : kthread === '1',
  };
}

/** Parses the text of /proc/PID/stat. The comm may hold anything, so fields are split after its last ')'. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error('malformed stat: no (comm)');
  // rest[k] is field k + 3 of proc(5): state is field 3, flags 9, starttime 22.
  const rest = text.slice(close + 2).trim().split(' ');
  if (rest.length < 20) throw new Error(`malformed stat: ${rest.length + 2} fields`);
  const field = (k: number): number => {
    const v = rest[k - 3] ?? '';
    if (!/^-?\d+$/.test(v)) throw new Error(`malformed stat: field ${k} is '${v}'`);
    return Number(v);
  };
  return {
    pid: Number(text.slice(0, open)),
    comm: text.slice(open + 2, close),
    state: rest[0] ?? '',
    ppid: field(4),
    pgrp: field(5),
    session: field(6),
    ttyNr: field(7),
    tpgid: field(8),
    flags: field(9),
    startTime: field(22),
  };
}

/** /proc/PID/status, or /proc/PID/task/TID/status; undefined when the task is gone. */
export function readStatus(pid: number, tid?: number): ProcStatus | undefined {
  const text = readProcText(taskPath(pid, tid, 'status'));
  return text === undefined ? undefined : parseStatus(text);
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux ABI Ferry runs on
let bootMs: number | undefined;

/** Wall-clock ms at which a task started (its stat's start time is in clock ticks after boot). */
export function startedAtMs(stat: Pick<ProcStat, 'startTime'>): number {
  // /proc/stat's btime, read once: it does not change while the host runs.
  bootMs ??= Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? 0) * 1000;
  return bootMs + (stat.startTime * 1000) / CLOCK_TICKS_PER_SECOND;
}

/** /proc/PID/stat, or /proc/PID/task/TID/stat; undefined when the task is gone. */
export function readStat(pid: number, tid?: number): ProcStat | undefined {
  const text = readProcText(taskPath(pid, tid, 'stat'));
  return text === undefined ? undefined : parseStat(text);
}

export function statIsKernelThread(stat: ProcStat): boolean {
  return (stat.flags & PF_KTHREAD) !== 0;
}

/** True for a kernel thread (PF_KTHREAD, which every kernel reports); undefined when the task is gone. */
export function isKernelThread(pid: number): boolean | undefined {
  const stat = readStat(pid);
  return stat === undefined ? undefined : statIsKernelThread(stat);
}

/** The task is the init (pid 1) of a pid namespace nested below this /proc's. */
export function statusIsPidNamespaceRoot(status: ProcStatus): boolean {
  return status.nsPids.length > 1 && status.nsPids[status.nsPids.length - 1] === 1;
}

/** Whether `pid` is the init of its own pid namespace; undefined when the task is gone. */
export function isPidNamespaceRoot(pid: number): boolean | undefined {
  const status = readStatus(pid);
  return status === undefined ? undefined : statusIsPidNamespaceRoot(status);
}
