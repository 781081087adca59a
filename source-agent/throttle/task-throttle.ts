/**
 * The CPU throttle of auto-converge (QEMU's auto-converge, for a process tree): when pre-copy cannot catch up,
 * take a share of the task's CPU away so that it dirties memory more slowly; released before the freeze.
 *
 * Two ways, chosen once when the throttle is created:
 *  - cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us`): only when the tree has a cpu cgroup of its own: every thread
 *    of the tree in it, no other process in it or below it, and not the root cgroup. A lower CFS quota is
 *    precise and invisible to the task; the old value is written back on release.
 *  - duty cycle otherwise: SIGSTOP the tree for `percent` % of every period, then SIGCONT. It needs nothing from
 *    the host but the task can notice (SIGCONT handlers, a parent waiting with WUNTRACED), and the stops are
 *    timed by this process's event loop, so a long stall here stretches a stop. A guard process resumes the
 *    tree if this process dies while the tree is stopped, as the freeze lease does for the freeze.
 *
 * release() must be awaited before `criu dump`: once it resolves the throttle sends no signal and writes no
 * cgroup file any more, so nothing can race CRIU's own ptrace stop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { posix } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { readProcText, readStat, readStatus } from '../../shared/kernel/proc-status.js';
import { readProcessTree, type ProcessTree } from '../../shared/kernel/process-tree.js';
import { signalTree } from '../../shared/kernel/signal-tree.js';
import { silentLogger, type Logger } from '../../shared/logging/logger.js';

export type ThrottleMethod = 'cgroup-v2' | 'cgroup-v1' | 'duty-cycle';

export interface TaskThrottle {
  readonly method: ThrottleMethod;
  /** Share of CPU taken away now, 0 = none. */
  readonly percent: number;
  /** Errors met by release() and by the duty-cycle timer, which never throw them (each is also logged). */
  readonly errors: readonly Error[];
  /** 0..99; idempotent. Rejects once release() was called. */
  set(percent: number): Promise<void>;
  /** Back exactly to how the task was; idempotent, never throws. After it resolves, the task is left alone. */
  release(): Promise<void>;
}

export interface TaskThrottleOptions {
  /** Duty-cycle period (default 100 ms). The cgroup methods keep the cgroup's own CFS period. */
  periodMs?: number;
  log?: Logger;
}

export const DEFAULT_DUTY_PERIOD_MS = 100;
/** The kernel refuses CFS quotas below 1 ms. */
const MIN_QUOTA_US = 1000;
const GUARD_DISARM_TIMEOUT_MS = 2000;

// ---------------------------------------------------------------------------------------------------------
// Finding the task's cpu cgroup

export interface CgroupMount {
  version: 1 | 2;
  /** The cgroup shown at the mount point (not '/' when a sub-tree is mounted, as in some containers). */
  root: string;
  mountPoint: string;
  /** v1: the controllers bound to the hierarchy (from the super options); v2: empty. */
  controllers: string[];
}

export interface CgroupMembership {
  hierarchyId: number;
  /** v1: the hierarchy's controllers (and `name=` entries); v2 (id 0): empty. */
  controllers: string[];
  path: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The cgroup mounts of a /proc/PID/mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    const root = left[3];
    const mountPoint = left[4];
    if (root === undefined || mountPoint === undefined) continue;
    if (fstype === 'cgroup2') {
      mounts.push({ version: 2, root: unescapeMountField(root), mountPoint: unescapeMountField(mountPoint), controllers: [] });
    } else if (fstype === 'cgroup') {
      mounts.push({ version: 1, root: unescapeMountField(root), mountPoint: unescapeMountField(mountPoint), controllers: superOptions.split(',') });
    }
  }
  return mounts;
}

/** The lines of /proc/PID/cgroup: `ID:CONTROLLERS:PATH` (the path may itself contain ':'). */
export function parseProcCgroup(text: string): CgroupMembership[] {
  const out: CgroupMembership[] = [];
  for (const line of text.split('\n')) {
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    out.push({ hierarchyId: Number(line.slice(0, a)), controllers: line.slice(a + 1, b).split(',').filter(Boolean), path: line.slice(b + 1) });
  }
  return out;
}

/** The directory of cgroup `path` under a mount of its hierarchy; undefined when no mount shows it. */
function cgroupDir(mounts: readonly CgroupMount[], path: string): { dir: string; mountDir: string } | undefined {
  for (const m of mounts) {
    const root = m.root === '/' ? '' : m.root;
    if (root !== '' && path !== root && !path.startsWith(`${root}/`)) continue;
    return { dir: posix.join(m.mountPoint, path.slice(root.length)), mountDir: m.mountPoint };
  }
  return undefined;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The cpu cgroup of one task under `version`'s hierarchy; undefined when the task is gone or has none. */
function cpuCgroupPath(pid: number, tid: number | undefined, version: 1 | 2): string | undefined {
  const text = readProcText(tid === undefined ? `/proc/${pid}/cgroup` : `/proc/${pid}/task/${tid}/cgroup`);
  if (text === undefined) return undefined;
  const lines = parseProcCgroup(text);
  const line = version === 2 ? lines.find((l) => l.hierarchyId === 0) : lines.find((l) => l.hierarchyId !== 0 && l.controllers.includes('cpu'));
  return line?.path;
}

interface CpuCgroup {
  version: 1 | 2;
  path: string;
  dir: string;
  /** Where the hierarchy is mounted: the limits of `dir`'s ancestors up to here also apply. */
  mountDir: string;
}

/** The cpu cgroup of the root task: v2 when the cpu controller is enabled there, else the v1 cpu hierarchy. */
function rootCpuCgroup(rootPid: number, mounts: readonly CgroupMount[]): CpuCgroup | string {
  const v2Path = cpuCgroupPath(rootPid, undefined, 2);
  const v2 = v2Path === undefined ? undefined : cgroupDir(mounts.filter((m) => m.version === 2), v2Path);
  if (v2Path !== undefined && v2) {
    const controllers = readText(posix.join(v2.dir, 'cgroup.controllers'))?.trim().split(/\s+/) ?? [];
    if (controllers.includes('cpu')) return { version: 2, path: v2Path, ...v2 };
  }
  const v1Path = cpuCgroupPath(rootPid, undefined, 1);
  const v1 = v1Path === undefined ? undefined : cgroupDir(mounts.filter((m) => m.version === 1 && m.controllers.includes('cpu')), v1Path);
  if (v1Path !== undefined && v1) return { version: 1, path: v1Path, ...v1 };
  return 'no cpu controller: neither cgroup v2 with cpu enabled nor a mounted v1 cpu hierarchy';
}

function numericLines(text: string | undefined): number[] {
  return (text ?? '').split('\n').filter((l) => /^\d+$/.test(l.trim())).map(Number);
}

/** Whether `pid` descends from `rootPid` (a task forked after the tree was read). */
function descendsFrom(pid: number, rootPid: number): boolean {
  let p = pid;
  for (let depth = 0; depth < 256 && p > 1; depth++) {
    if (p === rootPid) return true;
    const status = readStatus(p);
    if (!status) return false;
    p = status.ppid;
  }
  return false;
}

/** A cgroup below `dir` that holds processes (the quota of `dir` would throttle them too). */
function populatedDescendant(dir: string): string | undefined {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const sub = posix.join(dir, e.name);
    if (numericLines(readText(posix.join(sub, 'cgroup.procs'))).length > 0) return sub;
    const deeper = populatedDescendant(sub);
    if (deeper !== undefined) return deeper;
  }
  return undefined;
}

/** The tree's own cpu cgroup, or the reason why it has none (the throttle then duty-cycles). */
function ownCpuCgroup(tree: ProcessTree, rootPid: number): CpuCgroup | string {
  const mountinfo = readText('/proc/self/mountinfo');
  if (mountinfo === undefined) return 'cannot read /proc/self/mountinfo';
  const cg = rootCpuCgroup(rootPid, parseCgroupMounts(mountinfo));
  if (typeof cg === 'string') return cg;
  const where = `cpu cgroup ${cg.path} (v${cg.version})`;
  if (cg.path === '/') return `the task is in the root cpu cgroup (v${cg.version})`;
  for (const proc of tree.processes) {
    for (const t of proc.threads) {
      const path = cpuCgroupPath(proc.hostPid, t.hostTid, cg.version);
      // A thread that exited meanwhile has no cgroup any more; every other one must share the root's.
      if (path !== undefined && path !== cg.path) return `thread ${t.hostTid} of the tree is in ${path}, not in ${where}`;
    }
  }
  if (cg.version === 2) {
    const type = readText(posix.join(cg.dir, 'cgroup.type'))?.trim();
    if (type !== undefined && type !== 'domain') return `${where} is of type ${type}`;
  }
  const inTree = new Set(tree.processes.map((p) => p.hostPid));
  const procsText = readText(posix.join(cg.dir, 'cgroup.procs'));
  if (procsText === undefined) return `cannot read ${cg.dir}/cgroup.procs`;
  const foreign = numericLines(procsText).filter((pid) => !inTree.has(pid) && !descendsFrom(pid, rootPid));
  if (foreign.length > 0) return `${where} also holds ${foreign.length} process(es) outside the task tree (e.g. ${foreign[0]})`;
  const below = populatedDescendant(cg.dir);
  if (below !== undefined) return `${where} has a populated child cgroup ${below}`;
  return cg;
}

// ---------------------------------------------------------------------------------------------------------
// CFS quota arithmetic

interface CfsLimit {
  /** Microseconds per period, or undefined for no limit. */
  quotaUs: number | undefined;
  periodUs: number;
}

/** v2 `cpu.max`: "max 100000" or "50000 100000". */
export function parseCpuMax(text: string): CfsLimit {
  const [quota, period] = text.trim().split(/\s+/);
  const periodUs = Number(period);
  if (!Number.isInteger(periodUs) || periodUs <= 0 || quota === undefined || (quota !== 'max' && !/^\d+$/.test(quota))) {
    throw new Error(`malformed cpu.max: '${text.trim()}'`);
  }
  return { quotaUs: quota === 'max' ? undefined : Number(quota), periodUs };
}

/** v1 `cpu.cfs_quota_us` (-1 = no limit) and `cpu.cfs_period_us`. */
export function parseCfsV1(quotaText: string, periodText: string): CfsLimit {
  const quota = Number(quotaText.trim());
  const periodUs = Number(periodText.trim());
  if (!Number.isInteger(quota) || !Number.isInteger(periodUs) || periodUs <= 0) {
    throw new Error(`malformed cfs quota/period: '${quotaText.trim()}' '${periodText.trim()}'`);
  }
  return { quotaUs: quota < 0 ? undefined : quota, periodUs };
}

/**
 * The quota that takes `percent` of the task's CPU away: the most CPU the task can use (its thread count, at
 * most the CPUs it may run on, at most what the cgroup and its ancestors already allow) times (1 - percent).
 * One thread on an unlimited cgroup gives `period * (1 - percent/100)`; never more than the quota in force,
 * so a throttle can only take away, and v1 (which refuses a child quota above its parent's) accepts it.
 * Idle threads count as busy ones: a task that keeps fewer CPUs busy than it has threads loses less than
 * `percent` (measuring its usage first would fix that at the cost of a sampling window before each set).
 */
export function throttledQuotaUs(percent: number, periodUs: number, taskCpus: number, limitCpus: number): number {
  const cpus = Math.min(taskCpus, limitCpus);
  return Math.max(MIN_QUOTA_US, Math.floor(cpus * periodUs * (1 - percent / 100)));
}

function readLimit(dir: string, version: 1 | 2): CfsLimit | undefined {
  if (version === 2) {
    const text = readText(posix.join(dir, 'cpu.max'));
    return text === undefined ? undefined : parseCpuMax(text);
  }
  const quota = readText(posix.join(dir, 'cpu.cfs_quota_us'));
  const period = readText(posix.join(dir, 'cpu.cfs_period_us'));
  return quota === undefined || period === undefined ? undefined : parseCfsV1(quota, period);
}

/** CPUs allowed by the quotas of `dir` and of every ancestor up to the mount (Infinity when none limits). */
function limitCpus(cg: CpuCgroup): number {
  let min = Infinity;
  for (let dir = cg.dir; ; dir = posix.dirname(dir)) {
    const limit = readLimit(dir, cg.version);
    if (limit?.quotaUs !== undefined) min = Math.min(min, limit.quotaUs / limit.periodUs);
    if (dir === cg.mountDir || dir === '/' || !dir.startsWith(cg.mountDir)) return min;
  }
}

/** "0-3,8,10-11" -> 7. */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    if (a === undefined || Number.isNaN(a)) continue;
    n += b === undefined || Number.isNaN(b) ? 1 : b - a + 1;
  }
  return n;
}

/** The most CPUs the tree can keep busy: its threads, at most the CPUs the root may run on. */
function taskCpus(rootPid: number): number {
  const tree = readProcessTree(rootPid);
  const threads = tree?.processes.reduce((n, p) => n + p.threads.length, 0) ?? 1;
  const allowed = /^Cpus_allowed_list:\s*(\S+)/m.exec(readProcText(`/proc/${rootPid}/status`) ?? '')?.[1];
  const cpus = allowed === undefined ? availableParallelism() : countCpuList(allowed) || availableParallelism();
  return Math.max(1, Math.min(threads, cpus));
}

// ---------------------------------------------------------------------------------------------------------
// The throttles

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** What both methods share: validation, one operation at a time, release once, errors collected. */
abstract class ThrottleBase implements TaskThrottle {
  abstract readonly method: ThrottleMethod;
  private current = 0;
  private readonly collected: Error[] = [];
  private tail: Promise<void> = Promise.resolve();
  private releasing: Promise<void> | undefined;

  constructor(
    protected readonly rootPid: number,
    protected readonly log: Logger,
  ) {}

  get percent(): number {
    return this.current;
  }

  get errors(): readonly Error[] {
    return this.collected;
  }

  set(percent: number): Promise<void> {
    if (!Number.isFinite(percent) || percent < 0 || percent > 99) {
      return Promise.reject(new RangeError(`throttle percent must be within 0..99, not ${percent}`));
    }
    return this.serial(async () => {
      if (this.releasing) throw new Error('the task throttle was released');
      if (percent === this.current) return;
      await this.apply(percent);
      this.log.debug('task throttle set', { method: this.method, rootPid: this.rootPid, percent });
      this.current = percent;
    });
  }

  release(): Promise<void> {
    // Queued behind a set() in flight, so that set() cannot undo the release.
    this.releasing ??= this.serial(async () => {
      try {
        await this.restore();
      } catch (e) {
        this.collect('release', e);
      }
      this.current = 0;
      this.log.debug('task throttle released', { method: this.method, rootPid: this.rootPid, errors: this.collected.length });
    });
    return this.releasing;
  }

  /** Takes `percent` (0 = none) of the CPU away. */
  protected abstract apply(percent: number): Promise<void>;
  /** Undoes every change; may throw (collected). */
  protected abstract restore(): Promise<void>;

  protected collect(what: string, e: unknown): void {
    const err = asError(e);
    this.collected.push(err);
    this.log.warn(`task throttle: ${what} failed`, { method: this.method, rootPid: this.rootPid, err });
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

class CgroupThrottle extends ThrottleBase {
  readonly method: ThrottleMethod;
  private readonly file: string;
  /** The file's content before the throttle, written back on release. */
  private readonly original: string;
  private readonly limit: CfsLimit;
  private written: string;

  constructor(rootPid: number, log: Logger, private readonly cg: CpuCgroup, original: string, limit: CfsLimit) {
    super(rootPid, log);
    this.method = cg.version === 2 ? 'cgroup-v2' : 'cgroup-v1';
    this.file = posix.join(cg.dir, cg.version === 2 ? 'cpu.max' : 'cpu.cfs_quota_us');
    this.original = original;
    this.written = original;
    this.limit = limit;
  }

  protected async apply(percent: number): Promise<void> {
    let value = this.original;
    if (percent > 0) {
      // Re-read each time: threads come and go, and an ancestor's limit may have changed.
      const quota = throttledQuotaUs(percent, this.limit.periodUs, taskCpus(this.rootPid), limitCpus(this.cg));
      value = this.cg.version === 2 ? `${quota} ${this.limit.periodUs}` : String(quota);
    }
    if (value === this.written) return;
    await writeFile(this.file, value);
    this.written = value;
  }

  protected async restore(): Promise<void> {
    if (this.written === this.original) return;
    try {
      await writeFile(this.file, this.original);
      this.written = this.original;
    } catch (e) {
      // The cgroup was removed (its task gone): nothing is left to restore.
      const code = (e as { code?: unknown }).code;
      if (code !== 'ENOENT' && code !== 'ENODEV') throw e;
    }
  }
}

/** Probes the cgroup (reads the quota, writes it back unchanged); the reason when it cannot be used. */
async function openCgroupThrottle(rootPid: number, log: Logger, cg: CpuCgroup): Promise<CgroupThrottle | string> {
  const file = posix.join(cg.dir, cg.version === 2 ? 'cpu.max' : 'cpu.cfs_quota_us');
  try {
    const original = readFileSync(file, 'utf8').trim();
    const limit = readLimit(cg.dir, cg.version);
    if (!limit) return `cannot read the CFS period of ${cg.dir}`;
    // Read-only cgroupfs (many containers) or a delegated tree we may not write: find out now, not mid-round.
    await writeFile(file, original);
    return new CgroupThrottle(rootPid, log, cg, original, limit);
  } catch (e) {
    return `cannot use ${file}: ${asError(e).message}`;
  }
}

// Resumes the tree if the agent dies (its end of stdin closes) while the tree may be stopped. `pids LIST`
// replaces the pids to resume besides the process group; `disarm` ends it without touching the task.
const GUARD = `
group=$1; shift
while IFS= read -r line; do
  case $line in
    disarm) echo disarmed; exit 0 ;;
    pids*) set -- \${line#pids} ;;
  esac
done
kill -CONT -- "-$group" 2>/dev/null
for pid in "$@"; do kill -CONT "$pid" 2>/dev/null; done
echo fired
`;

/** The guard process of a duty cycle. Unref'd: it never keeps this process alive on its own. */
class StopGuard {
  private answer = '';
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    child.stdout?.on('data', (d: Buffer) => (this.answer += d.toString()));
    // A guard that died makes writes fail with EPIPE, and a failed kill emits 'error': disarm() reports the
    // outcome, no stream or child event may throw.
    child.stdin?.on('error', () => undefined);
    child.on('error', () => undefined);
  }

  static async arm(group: number, pids: readonly number[]): Promise<StopGuard> {
    const child = spawn('bash', ['-c', GUARD, 'ferry-throttle-guard', String(group), ...pids.map(String)], {
      detached: true, // its own group: a Ctrl-C to the agent's group must not take the guard with it
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    const guard = new StopGuard(child);
    guard.setRef(false);
    return guard;
  }

  update(pids: readonly number[]): void {
    this.child.stdin?.write(`pids ${pids.join(' ')}\n`);
  }

  /** Ends the guard without a signal to the task; resolves once it has exited. Throws if it had fired. */
  async disarm(): Promise<void> {
    // Referenced while we wait: the caller awaits this, so the process must stay alive to see the answer.
    this.setRef(true);
    this.child.stdin?.end('disarm\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), GUARD_DISARM_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
    if (this.answer.trim() !== 'disarmed') {
      throw new Error(`throttle guard answered '${this.answer.trim()}' (exit ${this.child.exitCode ?? this.child.signalCode})`);
    }
  }

  private setRef(ref: boolean): void {
    const handles = [this.child, this.child.stdin, this.child.stdout] as ({ ref(): void; unref(): void } | null)[];
    for (const h of handles) {
      if (ref) h?.ref();
      else h?.unref();
    }
  }
}

class DutyCycleThrottle extends ThrottleBase {
  readonly method: ThrottleMethod = 'duty-cycle';
  private timer: NodeJS.Timeout | undefined;
  /** The tree is stopped by us right now. */
  private stopped = false;
  private everStopped = false;
  /** The percent the running cycle uses (set() changes it from the next phase on). */
  private target = 0;
  private guard: StopGuard | undefined;

  constructor(
    rootPid: number,
    log: Logger,
    private readonly rootStartTime: number,
    private readonly periodMs: number,
  ) {
    super(rootPid, log);
  }

  protected async apply(percent: number): Promise<void> {
    if (percent === 0) {
      this.halt();
      return;
    }
    const pids = readProcessTree(this.rootPid)?.processes.map((p) => p.hostPid) ?? [this.rootPid];
    if (this.guard) this.guard.update(pids);
    else this.guard = await StopGuard.arm(this.rootPid, pids);
    this.target = percent;
    if (this.timer === undefined) this.step();
  }

  protected async restore(): Promise<void> {
    // Every step runs synchronously on this thread (signalTree is synchronous), so with the timer cleared
    // no step is half done and none can follow.
    this.halt();
    if (this.everStopped && this.sameTask()) signalTree(this.rootPid, 'SIGCONT');
    const guard = this.guard;
    this.guard = undefined;
    await guard?.disarm();
  }

  /** Stops the cycle and leaves the tree running. */
  private halt(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped) {
      this.stopped = false;
      signalTree(this.rootPid, 'SIGCONT');
    }
  }

  /** One phase of the cycle: resume and run (1 - p) of the period, or stop for p of it. */
  private step(): void {
    this.timer = undefined;
    try {
      if (this.stopped) {
        this.stopped = false;
        signalTree(this.rootPid, 'SIGCONT');
        this.schedule((this.periodMs * (100 - this.target)) / 100);
        return;
      }
      // A pid reused by another task must never be stopped: the root is named by pid and start time.
      if (!this.sameTask()) {
        this.log.info('task throttle: the task is gone, duty cycle stops', { rootPid: this.rootPid });
        return;
      }
      this.stopped = true; // before the signal: a throw part-way still resumes in halt()
      this.everStopped = true;
      signalTree(this.rootPid, 'SIGSTOP');
      this.schedule((this.periodMs * this.target) / 100);
    } catch (e) {
      this.collect('duty-cycle step', e);
      this.halt();
    }
  }

  /** The root pid still names the task (not a task that reused the pid). */
  private sameTask(): boolean {
    return readStat(this.rootPid)?.startTime === this.rootStartTime;
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => this.step(), ms);
    this.timer.unref();
  }
}

/**
 * Creates the throttle for the tree below `rootPid`, taking nothing away yet (percent 0). Throws TASK_EXITED
 * when the task is gone.
 */
export async function createTaskThrottle(rootPid: number, opts: TaskThrottleOptions = {}): Promise<TaskThrottle> {
  const log = opts.log ?? silentLogger;
  const periodMs = opts.periodMs ?? DEFAULT_DUTY_PERIOD_MS;
  if (!Number.isFinite(periodMs) || periodMs < 10) throw new RangeError(`throttle period must be >= 10 ms, not ${periodMs}`);
  const tree = readProcessTree(rootPid);
  const startTime = readStat(rootPid)?.startTime;
  if (!tree || startTime === undefined) {
    throw new FerryError('TASK_EXITED', { phase: 'precopy', side: 'source', sourceState: 'gone', detail: `no process ${rootPid}` });
  }
  let reason: string;
  const cg = ownCpuCgroup(tree, rootPid);
  if (typeof cg === 'string') {
    reason = cg;
  } else {
    const throttle = await openCgroupThrottle(rootPid, log, cg);
    if (typeof throttle !== 'string') {
      log.info('task throttle: cgroup quota', { rootPid, method: throttle.method, cgroup: cg.dir });
      return throttle;
    }
    reason = throttle;
  }
  log.info('task throttle: duty cycle', { rootPid, periodMs, reason });
  return new DutyCycleThrottle(rootPid, log, startTime, periodMs);
}
