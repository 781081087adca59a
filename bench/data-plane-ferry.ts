/**
 * One Ferry migration for the data-plane benchmark: a fresh memtest task (random or heap-like pages) in the src
 * host, `ferry migrate` run in-process there (the CLI is the source agent), the copy's own check of every page,
 * and what the data plane cost: round 0's rate from the summary, the bytes on the wire (the src veth's tx
 * counter), and the CPU of the source, the dest agent and the task (/proc/PID/stat utime + stime) over round 0
 * and over the whole migration. Whatever happens, the task, its copy and the run's dirs are gone on return.
 */
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describeResult, eventually, makeTempDir, pidsWithArgs, startMigrate, type DestAgentHandle, type FerryLine, type TwoHosts } from '../testbed/two-hosts.js';
import { startTrackedTask } from './measure.js';
import { Cleanup, runChecked, trackTask } from './proc.js';

const CLOCK_TICKS = 100;

export interface FerryDataPlaneOptions {
  hosts: TwoHosts;
  dest: DestAgentHandle;
  name: string;
  mib: number;
  content: 'random' | 'heap';
  dirtyMibPerSec: number;
  /** Flags after `ferry migrate PID --to DEST --json`. */
  flags: string[];
  /** More environment for the migrating CLI (a CPU profile's hook). */
  env?: Record<string, string> | undefined;
  signal: AbortSignal;
  timeoutMs: number;
}

/** CPU seconds of each side; undefined when a process was gone at one end of the span. */
export interface CpuSplit {
  source: number | undefined;
  dest: number | undefined;
  task: number | undefined;
}

export interface FerryDataPlaneRun {
  ok: boolean;
  error: string | undefined;
  /** Round 0: page data bytes sent, its wall time, the rate from them (MiB/s) and its transfer-only rate. */
  round0Bytes: number;
  round0Ms: number;
  round0MiBPerSec: number;
  round0TransferMiBPerSec: number;
  /** Pages present at round 0 and the zero pages among them (sent as flags). */
  presentPages: number;
  zeroPages: number;
  totalMs: number;
  downtimeMs: number;
  rounds: number;
  /** Page + image bytes the summary counts (raw, before any compression). */
  bytesSent: number;
  /** Bytes the src veth transmitted during the migration: frames on the wire, whatever the codec. */
  wireBytes: number;
  /** CPU seconds over round 0 and over the whole migration (the task's: to the freeze; the original is killed
   * before the summary). */
  round0Cpu: CpuSplit | undefined;
  totalCpu: CpuSplit | undefined;
  badPages: number | undefined;
  /** Round 0 on CLOCK_MONOTONIC (µs), to cut a CPU profile to it. */
  round0Window: { fromUs: number; toUs: number } | undefined;
  /** The summary as the CLI printed it, for the results file. */
  summary: unknown;
}

/** utime + stime of a process in seconds, or undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** The tx byte counter of the src's end of the veth (`ip -s`: the kernel's own count, frames included). */
async function txBytes(hosts: TwoHosts, signal: AbortSignal): Promise<number> {
  const r = await runChecked(['ip', '-n', hosts.src.name, '-j', '-s', 'link', 'show', 'dev', hosts.src.link], 'ip -s link', { signal, timeoutMs: 10_000 });
  const [link] = JSON.parse(r.stdout) as { stats64?: { tx?: { bytes?: number } } }[];
  const bytes = link?.stats64?.tx?.bytes;
  if (typeof bytes !== 'number') throw new Error(`no tx bytes for ${hosts.src.link}: ${r.stdout.slice(0, 200)}`);
  return bytes;
}

interface CpuPoint {
  /** CLOCK_MONOTONIC µs (what V8's CPU profiles time their samples with). */
  monoUs: number;
  source: number | undefined;
  dest: number | undefined;
  task: number | undefined;
}

const minus = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b !== undefined ? b - a : undefined);
const diff = (a: CpuPoint | undefined, b: CpuPoint | undefined, taskEnd: CpuPoint | undefined = b): CpuSplit | undefined =>
  a && b ? { source: minus(a.source, b.source), dest: minus(a.dest, b.dest), task: minus(a.task, taskEnd?.task) } : undefined;

export async function ferryDataPlaneRun(o: FerryDataPlaneOptions): Promise<FerryDataPlaneRun> {
  const out: FerryDataPlaneRun = {
    ok: false,
    error: undefined,
    round0Bytes: 0,
    round0Ms: 0,
    round0MiBPerSec: 0,
    round0TransferMiBPerSec: 0,
    presentPages: 0,
    zeroPages: 0,
    totalMs: 0,
    downtimeMs: 0,
    rounds: 0,
    bytesSent: 0,
    wireBytes: 0,
    round0Cpu: undefined,
    totalCpu: undefined,
    badPages: undefined,
    round0Window: undefined,
    summary: undefined,
  };
  const cleanup = new Cleanup();
  const runDir = makeTempDir(`ferry-bench-dp-${process.pid}-`);
  cleanup.defer('remove the run dir', () => rm(runDir, { recursive: true, force: true }));
  cleanup.defer('kill copies left by an interrupted restore', async () => {
    const strays = pidsWithArgs('memtest', '--name', o.name);
    for (const pid of strays) process.kill(pid, 'SIGKILL');
    if (strays.length > 0) await eventually(() => pidsWithArgs('memtest', '--name', o.name).length === 0, 15_000, `stray copies of ${o.name} to exit`);
  });
  try {
    const { task: t, pids } = await startTrackedTask(cleanup, { name: o.name, mib: o.mib, dirtyMibPerSec: o.dirtyMibPerSec, content: o.content, stateDir: join(runDir, 'state'), netns: o.hosts.src.netns });
    const imagesDir = join(runDir, 'images');
    await mkdir(imagesDir);

    const tx0 = await txBytes(o.hosts, o.signal);
    const run = startMigrate(o.hosts, t.rootPid, o.dest, {
      args: o.flags,
      env: { FERRY_IMAGES_DIR: imagesDir, ...o.env },
      timeoutMs: o.timeoutMs,
      signal: o.signal,
    });
    const sourcePid = run.child.pid ?? -1;
    const point = (): CpuPoint => ({ monoUs: Number(process.hrtime.bigint() / 1000n), source: cpuSeconds(sourcePid), dest: cpuSeconds(o.dest.pid), task: cpuSeconds(t.rootPid) });
    const start = point();
    // Round 0 starts at the precopy phase line and ends at its round line; the summary line is the CLI's last.
    const at = (match: (l: FerryLine) => boolean): Promise<CpuPoint | undefined> =>
      run.waitForLine(match, o.timeoutMs + 10_000).then(
        () => point(),
        () => undefined,
      );
    const precopy = at((l) => l.kind === 'phase' && l.phase === 'precopy');
    const round0 = at((l) => l.kind === 'round' && l.round.round === 0);
    const freeze = at((l) => (l.kind === 'decision' && l.action === 'freeze') || (l.kind === 'phase' && l.phase !== 'prepare' && l.phase !== 'precopy'));
    const end = at((l) => l.kind === 'summary');
    const result = await run.done;
    const [p0, p1, pf, p2] = [await precopy, await round0, await freeze, await end];
    out.wireBytes = (await txBytes(o.hosts, o.signal)) - tx0;
    o.signal.throwIfAborted();
    const s = result.summary;
    if (result.exitCode !== 0 || !s) throw new Error(`ferry migrate failed: ${describeResult(result)}`);
    out.summary = s;
    out.round0Cpu = diff(p0, p1);
    if (p0 && p1) out.round0Window = { fromUs: p0.monoUs, toUs: p1.monoUs };
    // The dest and the task at the summary; the source (the CLI) then too, before it exits.
    out.totalCpu = diff(start, p2, pf);
    const r0 = s.rounds[0];
    if (r0) {
      out.round0Bytes = r0.bytesSent;
      out.round0Ms = r0.durationMs;
      out.round0MiBPerSec = r0.bytesSent / 2 ** 20 / (r0.durationMs / 1000);
      out.round0TransferMiBPerSec = r0.bytesSent / 2 ** 20 / (r0.transferMs / 1000);
      out.presentPages = r0.presentPages;
      out.zeroPages = r0.zeroPages;
    }
    out.totalMs = s.totalMs;
    out.downtimeMs = s.downtimeMs;
    out.rounds = s.rounds.length;
    out.bytesSent = s.pageBytesSent + s.imageBytesSent + (s.postcopyBytes ?? 0);
    t.adopt(s.restoredPid);
    trackTask(s.restoredPid);
    pids.push(s.restoredPid);
    const verify = await t.verify(s.restoredPid);
    out.badPages = verify.bad_pages;
    out.ok = verify.bad_pages === 0 && verify.pages > 0;
    if (!out.ok) out.error = `the restored copy found ${verify.bad_pages} bad pages of ${verify.pages}`;
  } catch (err) {
    o.signal.throwIfAborted();
    out.error = (err as Error).message;
  } finally {
    await cleanup.close().catch((e: unknown) => {
      out.ok = false;
      out.error ??= (e as Error).message;
    });
  }
  return out;
}
