/**
 * One run: a fresh memtest task on the src host, an idle window for its work rate, the migration by one
 * method, then the restored copy's own check of every page and its counters. Whatever happens, the task, its
 * copy and the run's temp dirs are gone when this returns; a failed run keeps its logs under the results.
 */
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually, makeTempDir, pidsWithArgs, tail, type DestAgentHandle, type TwoHosts } from '../testbed/two-hosts.js';
import { startMemtest, type MemtestHandle, type MemtestOptions } from '../testbed/workloads/memtest.js';
import type { BenchCase, Method } from './cases.js';
import { ferryMigrate, FerryRunError } from './ferry-runs.js';
import { plainCriuStopAndCopy } from './plain-criu.js';
import { Cleanup, trackTask, untrackTask } from './proc.js';
import type { MethodOutcome, RunRecord } from './results.js';
import { fillWork, sample, writesPerSec, writesPerSecAcross, type Sample } from './work-rate.js';

const IDLE_WINDOW_MS = 2_000;

export interface RunEnv {
  hosts: TwoHosts;
  /** The dest agent, restarted by the caller if it died. */
  dest: () => Promise<DestAgentHandle>;
  /** The current dest agent's log so far (JSON lines). */
  destLog: () => string;
  criu: string;
  tcpPipe: string;
  /** Failed runs copy their logs into a subdirectory of this. */
  failedLogsDir: string;
  signal: AbortSignal;
}

async function vmRssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) * 1024;
}

/**
 * A fresh memtest task whose processes a forced exit kills too, stopped with every copy by `cleanup`; a restored
 * copy's pid goes into `pids` (and trackTask) by the caller.
 */
export async function startTrackedTask(cleanup: Cleanup, opts: MemtestOptions): Promise<{ task: MemtestHandle; pids: number[] }> {
  const task = await startMemtest(opts);
  const pids = [task.rootPid, task.unsharePid];
  pids.forEach(trackTask);
  cleanup.defer('stop the task and its copy', async () => {
    await task.stop();
    pids.forEach(untrackTask);
  });
  return { task, pids };
}

/** Generous: a run that takes 4x the model plus a minute is stuck. */
export function runTimeoutMs(estimateSeconds: number): number {
  return Math.round(estimateSeconds * 4_000 + 60_000);
}

export async function measureRun(env: RunEnv, c: BenchCase, method: Method, rep: number, estimateSeconds: number): Promise<RunRecord> {
  const started = performance.now();
  const record: RunRecord = {
    caseId: c.id,
    link: c.link.id,
    mib: c.mib,
    dirtyMibPerSec: c.dirtyMibPerSec,
    method: method.id,
    rep,
    startedAt: new Date().toISOString(),
    wallMs: 0,
    ok: false,
    error: undefined,
    rssBytes: 0,
    idleWritesPerSec: undefined,
    precopyWritesPerSec: undefined,
    windowWritesPerSec: undefined,
    fillWork: undefined,
    badPages: undefined,
    outcome: undefined,
    logsDir: undefined,
  };
  const cleanup = new Cleanup();
  // Tmpfs, like Ferry's defaults: images and state at RAM speed for every method alike.
  const runDir = makeTempDir(`ferry-bench-${process.pid}-`);
  cleanup.defer('remove the run dir', () => rm(runDir, { recursive: true, force: true }));
  let task: MemtestHandle | undefined;
  let ferryLog = '';
  const name = `b${process.pid}-${c.id}-${method.id}-${rep}`;
  // A restore cut short (Ctrl-C, a timeout) can leave a copy that no pid file names yet: find it by its name,
  // which only this run uses.
  cleanup.defer('kill copies left by an interrupted restore', async () => {
    // Twice: a copy still inside criu's restorer does not show memtest's argv yet.
    for (const pause of [0, 500]) {
      await sleep(pause);
      const strays = pidsWithArgs('memtest', '--name', name);
      for (const pid of strays) process.kill(pid, 'SIGKILL');
      if (strays.length > 0) await eventually(() => pidsWithArgs('memtest', '--name', name).length === 0, 15_000, `stray copies of ${name} to exit`);
    }
  });
  try {
    const started = await startTrackedTask(cleanup, {
      name,
      mib: c.mib,
      dirtyMibPerSec: c.dirtyMibPerSec,
      stateDir: join(runDir, 'state'),
      netns: env.hosts.src.netns,
    });
    task = started.task;
    const t = task;
    const pids = started.pids;
    record.rssBytes = await vmRssBytes(t.rootPid);

    const idle0 = await sample(t);
    await sleep(IDLE_WINDOW_MS, undefined, { signal: env.signal });
    const idle1 = await sample(t);
    record.idleWritesPerSec = writesPerSec(idle0.report, idle1.report);

    const timeoutMs = runTimeoutMs(estimateSeconds);
    let outcome: MethodOutcome;
    // Ferry: where the fill's work count starts (the last sample before the freeze) and the two instants.
    let fillFrom: { sample: Sample; rate: number | undefined; freezeMonoMs: number; resumeMonoMs: number; resumeFrom: 'fill-line' | 'freeze+downtime' } | undefined;
    if (method.id === 'criu-stop-copy') {
      outcome = await plainCriuStopAndCopy({ hosts: env.hosts, criu: env.criu, tcpPipe: env.tcpPipe, task: t, workDir: join(runDir, 'criu'), signal: env.signal, timeoutMs });
    } else {
      const imagesDir = join(runDir, 'images');
      await mkdir(imagesDir);
      try {
        const f = await ferryMigrate({ hosts: env.hosts, dest: await env.dest(), task: t, method, imagesDir, signal: env.signal, timeoutMs });
        record.precopyWritesPerSec = f.precopyWritesPerSec;
        ferryLog = f.stderr;
        const { precopyWritesPerSec: _p, stderr: _s, lastPrecopySample, freezeSeenMonoMs, fillSeenMonoMs, ...rest } = f;
        outcome = rest;
        if (freezeSeenMonoMs !== undefined) {
          const from = lastPrecopySample ?? idle1;
          fillFrom = {
            sample: from,
            rate: lastPrecopySample ? (f.precopyWritesPerSec ?? record.idleWritesPerSec) : record.idleWritesPerSec,
            freezeMonoMs: freezeSeenMonoMs,
            resumeMonoMs: fillSeenMonoMs ?? freezeSeenMonoMs + f.downtimeMs,
            resumeFrom: fillSeenMonoMs !== undefined ? 'fill-line' : 'freeze+downtime',
          };
        }
      } catch (err) {
        if (err instanceof FerryRunError) ferryLog = err.stderr;
        throw err;
      }
      t.adopt(outcome.restoredPid);
    }
    record.outcome = outcome;
    trackTask(outcome.restoredPid);
    pids.push(outcome.restoredPid);

    // First thing after migrate's return: the copy's counter, for the work rate during the fill.
    const after = await sample(t, outcome.restoredPid);
    record.windowWritesPerSec = writesPerSecAcross(idle1, after);
    if (fillFrom) {
      record.fillWork = fillWork({
        from: fillFrom.sample,
        freezeMonoMs: fillFrom.freezeMonoMs,
        rateBefore: fillFrom.rate,
        resumeMonoMs: fillFrom.resumeMonoMs,
        resumeFrom: fillFrom.resumeFrom,
        to: after,
      });
    }
    const verify = await t.verify(outcome.restoredPid);
    record.badPages = verify.bad_pages;
    record.ok = verify.bad_pages === 0 && verify.pages > 0;
    if (!record.ok) record.error = `the restored copy found ${verify.bad_pages} bad pages of ${verify.pages} (first ${verify.first_bad_page})`;
  } catch (err) {
    env.signal.throwIfAborted();
    record.error = (err as Error).message;
  } finally {
    if (!record.ok && !env.signal.aborted) record.logsDir = await keepLogs(env, record, runDir, ferryLog).catch(() => undefined);
    await cleanup.close().catch((e: unknown) => {
      record.ok = false;
      record.error ??= (e as Error).message;
    });
    record.wallMs = performance.now() - started;
  }
  return record;
}

/** CRIU logs of the run, ferry's stderr and the dest agent's log tail, for a run that failed. */
async function keepLogs(env: RunEnv, r: RunRecord, runDir: string, ferryLog: string): Promise<string> {
  const dir = join(env.failedLogsDir, `${r.caseId}-${r.method}-${r.rep}`);
  await mkdir(dir, { recursive: true });
  await cp(join(runDir, 'criu', 'logs'), dir, { recursive: true }).catch(() => undefined);
  await cp(join(runDir, 'images', 'logs'), join(dir, 'source-criu'), { recursive: true }).catch(() => undefined);
  if (ferryLog) await writeFile(join(dir, 'ferry-migrate.stderr.log'), ferryLog);
  await writeFile(join(dir, 'dest-agent.tail.log'), tail(env.destLog(), 200));
  await writeFile(join(dir, 'error.txt'), `${r.error ?? ''}\n`);
  return dir;
}
