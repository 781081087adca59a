/**
 * One CRIU ZDTM static test carried by `ferry migrate` between the two netns hosts, judged by the test's own
 * protocol (test/zdtm.py of CRIU): started by make's %.pid rule (--pidfile, --outfile and its --filename or
 * --dirname), under `ferry run` as pid 1 of its own pid namespace behind a tiny init (zdtm-init.c), migrated,
 * then SIGTERM on the dest; the test writes PASS or FAIL into its .out file as it exits.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { DestAgentHandle } from '../dest-agent.js';
import { runMigrate } from '../ferry-migrate.js';
import { describeResult, runFerry, REPO_ROOT } from '../ferry-process.js';
import type { TwoHosts } from '../netns-hosts.js';
import { processStartTime, readPidState } from '../process-probes.js';
import { waitFor } from '../wait-for.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { stillExiting } from '../../shared/kernel/process-wait.js';

const execFileAsync = promisify(execFile);
const INIT_SOURCE = fileURLToPath(new URL('./zdtm-init.c', import.meta.url));
const BUILD_DIR = join(REPO_ROOT, 'build', 'workloads');

/** pass: the test printed PASS after the move; fail: anything else, with the stage that failed. */
export interface ZdtmOutcome {
  test: string;
  verdict: 'pass' | 'fail';
  stage: 'start' | 'migrate' | 'verdict' | 'passed';
  /** The FERRY code of a failed migration, if any. */
  code?: string;
  detail: string;
  downtimeMs?: number;
  /**
   * After a failed migration: was the original resumed whole? Every process it had is alive (the same process,
   * not stopped), and the test, sent SIGTERM on the source, judges itself PASS.
   */
  rollback?: { clean: boolean; detail: string };
  /** The policy's expected downtime at its freeze decision (its fixed cost plus the last dirty set's transfer). */
  expectedDowntimeMs?: number;
}

/** The path of test/zdtm/static (scripts/provision-zdtm.sh: fetched from Debian and built once), or a reason. */
export function provisionZdtm(): { dir?: string; reason: string } {
  try {
    const out = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'provision-zdtm.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10 * 60_000 });
    const dir = out.trim().split('\n').at(-1) ?? '';
    return dir.startsWith('/') ? { dir, reason: '' } : { reason: `scripts/provision-zdtm.sh printed "${dir}"` };
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim().split('\n').slice(-2).join(' | ') ?? String(err);
    return { reason: `scripts/provision-zdtm.sh failed: ${stderr}` };
  }
}

let initBuilt: Promise<string> | undefined;
export function buildZdtmInit(): Promise<string> {
  initBuilt ??= (async () => {
    const out = join(BUILD_DIR, 'zdtm-init');
    if (existsSync(out) && statSync(out).mtimeMs >= statSync(INIT_SOURCE).mtimeMs) return out;
    mkdirSync(BUILD_DIR, { recursive: true });
    await execFileAsync('gcc', ['-O2', '-Wall', '-Wextra', '-static', '-o', out, INIT_SOURCE]);
    return out;
  })();
  return initBuilt;
}

/** make's %.pid rule for the test, as argv (./NAME --pidfile=NAME.pid --outfile=NAME.out [--filename|--dirname]). */
function startCommand(staticDir: string, test: string): string[] {
  const out = execFileSync('make', ['-s', '-n', '-C', staticDir, `${test}.pid`], { encoding: 'utf8', timeout: 30_000 });
  const line = out.split('\n').find((l) => l.startsWith(`./${test} `));
  if (!line) throw new Error(`make -n ${test}.pid names no ./${test} command: ${out.trim()}`);
  return line.trim().split(/\s+/);
}

function childrenOf(hostPid: number): number[] {
  try {
    const text = readFileSync(`/proc/${hostPid}/task/${hostPid}/children`, 'utf8').trim();
    return text ? text.split(' ').map(Number) : [];
  } catch {
    return [];
  }
}

/** Every process below hostPid, depth first. */
function descendants(hostPid: number): number[] {
  return childrenOf(hostPid).flatMap((c) => [c, ...descendants(c)]);
}

/** The pid a process has in its own (innermost) pid namespace: the last NSpid field. */
function innermostPid(hostPid: number): number | undefined {
  try {
    const line = readFileSync(`/proc/${hostPid}/status`, 'utf8').split('\n').find((l) => l.startsWith('NSpid:'));
    return line ? Number(line.split(/\s+/).at(-1)) : undefined;
  } catch {
    return undefined;
  }
}

function kill(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

export interface ZdtmRunOptions {
  hosts: TwoHosts;
  dest: DestAgentHandle;
  staticDir: string;
  logDir: string;
  imagesDir: string;
  /** More flags for `ferry migrate`. */
  migrateArgs?: string[];
  /** More flags for `ferry run` (the test's run flavor, e.g. --ipc private for what zdtm runs in its ns flavor). */
  runArgs?: string[];
}

export async function runZdtmTest(test: string, o: ZdtmRunOptions): Promise<ZdtmOutcome> {
  const bin = join(o.staticDir, test);
  if (!existsSync(bin)) return { test, verdict: 'fail', stage: 'start', detail: 'not built (a header or library missing on this host)' };
  const init = await buildZdtmInit();
  cleanout(o.staticDir, test);
  const sysvBefore = sysvObjects();
  // zdtm.py drops non-suid tests to ZDTM_UID; here every test keeps root (as a `ferry run` task of root does):
  // root of this host lacks CAP_SYS_RESOURCE, so CRIU cannot read the rlimits of a task of another uid and
  // every dropped test would fail on that one cause ("Can't get rlimit 0"). Tests that setuid themselves
  // (mlock_setuid, pid00) still meet it; expected-results.json lists them.
  const env: Record<string, string> = { TMPDIR: '/tmp', ZDTM_THREAD_BOMB: '5' };

  const run = await runFerry(['run', '--json', '--name', `zdtm-${test}`, '--log-dir', o.logDir, ...(o.runArgs ?? []), '--', init, o.staticDir, ...startCommand(o.staticDir, test)], {
    host: o.hosts.src,
    env,
    timeoutMs: 20_000,
  });
  if (run.exitCode !== 0) return { test, verdict: 'fail', stage: 'start', detail: `ferry run: ${describeResult(run)}` };
  const task = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { pid: number; launcherPid: number };
  // By pid and start time: a pid that is gone may be reused by the time the finally block kills.
  const victims = new Map<number, string | undefined>();
  const watch = (pid: number): void => void victims.set(pid, processStartTime(pid));
  watch(task.pid);
  watch(task.launcherPid);
  try {
    // make's %.pid rule returns when the test's first process (pid 2: init's first fork) has written the
    // pidfile and exited; the test proper (the pidfile's pid) runs on, and so may orphans reparented to init.
    const pidFile = join(o.staticDir, `${test}.pid`);
    let nsPid: number;
    try {
      nsPid = await waitFor(
        () => {
          const text = existsSync(pidFile) ? readFileSync(pidFile, 'utf8').trim() : '';
          const firstRuns = descendants(task.pid).some((p) => innermostPid(p) === 2 && readPidState(p) !== 'Z');
          return text !== '' && !firstRuns ? Number(text) : undefined;
        },
        30_000,
        `${test} to write its pidfile`,
      );
    } catch (err) {
      return { test, verdict: 'fail', stage: 'start', detail: `${String(err)}; ${outText(o.staticDir, test)}` };
    }
    const original = new Map<number, OriginalProcess>([task.pid, ...descendants(task.pid)].map((p) => [p, { started: processStartTime(p), state: readPidState(p) }]));
    for (const p of original.keys()) watch(p);
    const originalIds = [...original.keys()].map((pid) => ({ pid, startTime: readStat(pid)?.startTime }));

    const result = await runMigrate(o.hosts, task.pid, o.dest, { env: { FERRY_IMAGES_DIR: o.imagesDir }, args: o.migrateArgs ?? [], timeoutMs: 90_000 });
    if (result.exitCode !== 0 || !result.summary) {
      const code = result.error?.code;
      const rollback = await rolledBack(test, o.staticDir, original, task.pid, nsPid);
      return { test, verdict: 'fail', stage: 'migrate', ...(code ? { code } : {}), detail: result.error ? `${result.error.message}: ${result.error.detail ?? ''}` : describeResult(result), rollback };
    }
    // migrate returns only once the original is gone (kill-original.ts): not one of its processes may be alive.
    const alive = originalIds.filter(stillExiting).map((p) => p.pid);
    if (alive.length > 0) {
      return { test, verdict: 'fail', stage: 'migrate', detail: `migrate returned 0 with the original's pids ${alive.join(', ')} still alive (summary: originalLeft ${JSON.stringify(result.summary.originalLeft)}, ${Math.round(result.summary.originalExitMs)} ms)`, downtimeMs: result.summary.downtimeMs };
    }
    const restored = result.summary.restoredPid;
    const freezeDecision = result.lines.filter((l) => l.kind === 'decision').at(-1);
    const expectedDowntimeMs = freezeDecision?.kind === 'decision' ? freezeDecision.expectedDowntimeMs : undefined;
    watch(restored);
    const tree = descendants(restored);
    for (const p of tree) watch(p);
    const judged = await ownVerdict(test, o.staticDir, tree, nsPid, `the restored tree of ${restored}`);
    return { test, verdict: judged.passed ? 'pass' : 'fail', stage: judged.passed ? 'passed' : 'verdict', detail: judged.detail, downtimeMs: result.summary.downtimeMs, ...(expectedDowntimeMs !== undefined && { expectedDowntimeMs }) };
  } finally {
    const alive = [...victims].filter(([pid, started]) => started !== undefined && processStartTime(pid) === started).map(([pid]) => pid);
    for (const pid of alive) kill(pid, 'SIGKILL');
    await waitFor(() => alive.every((p) => readPidState(p) === undefined || readPidState(p) === 'Z'), 10_000, `${test}'s processes to be gone`).catch(() => undefined);
    cleanout(o.staticDir, test); // the verdict's last lines are in the outcome's detail
    removeSysvSince(sysvBefore);
  }
}

/** The test's own verdict: SIGTERM to its process (nsPid in its pid namespace) in `tree`, then PASS in its .out file. */
async function ownVerdict(test: string, staticDir: string, tree: readonly number[], nsPid: number, where: string): Promise<{ passed: boolean; detail: string }> {
  const testPid = tree.find((p) => innermostPid(p) === nsPid);
  if (testPid === undefined) return { passed: false, detail: `no pid ${nsPid} in ${where}` };
  kill(testPid, 'SIGTERM');
  try {
    await waitFor(() => readPidState(testPid) === undefined, 30_000, `${test} (pid ${testPid}) to exit on SIGTERM`);
  } catch (err) {
    return { passed: false, detail: String(err) };
  }
  const out = outText(staticDir, test);
  return { passed: out.split(/\s+/).includes('PASS'), detail: out };
}

/** A process of the original tree before the migration: its start time and its state (a test may stop itself). */
interface OriginalProcess {
  started: string | undefined;
  state: string | undefined;
}

const isStopped = (state: string | undefined): boolean => state === 'T' || state === 't';

/**
 * A failed migration must leave the original as it was: each of its processes alive as the same process (a
 * zombie stays a zombie), none left in the freeze's stop that was running before (bounded: the rollback's
 * SIGCONT may land a moment after migrate exits), and the test itself, judged on the source, passes.
 */
async function rolledBack(test: string, staticDir: string, original: ReadonlyMap<number, OriginalProcess>, rootPid: number, nsPid: number): Promise<{ clean: boolean; detail: string }> {
  const problems = (): string[] =>
    [...original].flatMap(([pid, before]) => {
      if (before.started === undefined) return [];
      if (processStartTime(pid) !== before.started) return [`pid ${pid} is gone`];
      const state = readPidState(pid);
      return isStopped(state) && !isStopped(before.state) ? [`pid ${pid} is still stopped (${state})`] : [];
    });
  try {
    await waitFor(() => problems().length === 0, 10_000, () => `the original to run again: ${problems().join(', ')}`);
  } catch (err) {
    return { clean: false, detail: String(err) };
  }
  const judged = await ownVerdict(test, staticDir, descendants(rootPid), nsPid, `the original tree of ${rootPid}`);
  return { clean: judged.passed, detail: judged.passed ? 'the original runs on and passes its own check' : `the original's own check: ${judged.detail}` };
}

/** What make's %.cleanout rule removes: the pidfile, the out files and the files the test made. */
function cleanout(staticDir: string, test: string): void {
  for (const f of readdirSync(staticDir)) {
    // make's rule: $<.pid* $<.out* *$<.test* $<.*.test $<.*.state $<.state chew_$<.test*
    const rest = f.startsWith(`${test}.`) ? f.slice(test.length + 1) : undefined;
    const made = (rest !== undefined && /^(pid|out|state)|\.(test|state)$/.test(rest)) || f.includes(`${test}.test`);
    if (made) rmSync(join(staticDir, f), { recursive: true, force: true });
  }
}

const SYSV = { shm: '-m', msg: '-q', sem: '-s' } as const;

/** The SysV IPC objects of the host IPC namespace, as "kind id" (the test runs in it, as `ferry run` starts it). */
function sysvObjects(): Set<string> {
  const ids = new Set<string>();
  for (const kind of Object.keys(SYSV) as (keyof typeof SYSV)[]) {
    for (const line of readFileSync(`/proc/sysvipc/${kind}`, 'utf8').trim().split('\n').slice(1)) ids.add(`${kind} ${line.trim().split(/\s+/)[1]}`);
  }
  return ids;
}

/** Removes the SysV objects made since `before` (a SIGKILLed shm or msgque test leaves its objects behind, and
 * the next run of it fails with EEXIST). */
function removeSysvSince(before: Set<string>): void {
  for (const obj of sysvObjects()) {
    if (before.has(obj)) continue;
    const [kind, id] = obj.split(' ') as [keyof typeof SYSV, string];
    try {
      execFileSync('ipcrm', [SYSV[kind], id], { stdio: 'ignore', timeout: 5_000 });
    } catch {
      // removed meanwhile
    }
  }
}

function outText(staticDir: string, test: string): string {
  for (const f of [`${test}.out`, `${test}.out.inprogress`]) {
    const p = join(staticDir, f);
    if (existsSync(p)) return readFileSync(p, 'utf8').trim().split('\n').slice(-3).join(' | ');
  }
  return 'no .out file';
}
