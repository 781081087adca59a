/**
 * `npm run soak [-- --count N --mib M]`: one memtest task migrated back and forth between the two hosts N times
 * (src -> dst, dst -> src, ...), each time through the source-agent daemon of the host it runs in to the dest
 * agent of the other, its memory verified after every migration (testbed/verified-migration.ts), and the RSS and
 * open fds of the four agents sampled after every one. At the end: a table and a verdict per agent, flat after
 * the warm-up or not (testbed/resource-trend.ts); exit 1 unless every migration verified and every agent is flat.
 * Writes bench/results/soak-<time>.json and .md. Not part of npm test: 100 migrations take about ten minutes.
 *
 * Everything it creates (namespaces, the four agents and their dirs, the task and its copies) is removed at the
 * end, on failure and on Ctrl-C (a second Ctrl-C kills at once).
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startDestAgent, type DestAgentHandle } from '../testbed/dest-agent.js';
import { REPO_ROOT } from '../testbed/ferry-process.js';
import { createTwoHosts, type Host } from '../testbed/netns-hosts.js';
import { processResources, type ProcessResources } from '../testbed/process-probes.js';
import { canRun, criuPath, hasCommand, hasCriu, isRoot, requireBuilt } from '../testbed/requirements.js';
import { DEFAULT_FLAT_LIMITS, judgeFlat, median, type FlatLimits, type FlatVerdict } from '../testbed/resource-trend.js';
import { startSourceAgentDaemon, type SourceAgentDaemonHandle } from '../testbed/source-agent-daemon.js';
import { makeTempDir } from '../testbed/temp-dirs.js';
import { migrateVerified } from '../testbed/verified-migration.js';
import { buildMemtest, startMemtest } from '../testbed/workloads/memtest.js';
import { describeMachine } from './machine.js';
import { Cleanup, killEverythingStarted, trackTask, untrackTask } from './proc.js';
import type { MachineInfo } from './results.js';

const USAGE = `Usage: npm run soak -- [options]

  --count N          migrations (default 100), alternately src -> dst and dst -> src
  --mib N            the task's memory in MiB (default 64)
  --dirty N          MiB/s the task rewrites (default 4)
  --warmup N         migrations before the resource samples count (default ${DEFAULT_FLAT_LIMITS.warmup})
  --rss-ratio X      flat: last RSS at most X times the post-warm-up median (default ${DEFAULT_FLAT_LIMITS.rssRatio})
  --fd-slack N       flat: last fd count at most N above the post-warm-up median (default ${DEFAULT_FLAT_LIMITS.fdSlack})
  -h, --help`;

const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results');
const AGENTS = ['dest@src', 'dest@dst', 'daemon@src', 'daemon@dst'] as const;
type AgentName = (typeof AGENTS)[number];

interface Options {
  count: number;
  mib: number;
  dirtyMibPerSec: number;
  limits: FlatLimits;
}

interface SoakRow {
  /** 0: before the first migration. */
  n: number;
  from: Host['role'] | undefined;
  downtimeMs: number | undefined;
  totalMs: number | undefined;
  /** `ferry migrate` start to exit. */
  wallMs: number | undefined;
  restoredPid: number | undefined;
  agents: Record<AgentName, ProcessResources>;
  /** Bytes in the logs/ dirs of the four agents (CRIU logs): what nothing rotates yet. */
  logsBytes: number;
}

interface SoakFile {
  version: 1;
  startedAt: string;
  finishedAt: string;
  machine: MachineInfo;
  options: Options;
  rows: SoakRow[];
  /** Why the run stopped early, if it did. */
  failure: string | undefined;
  verdicts: Partial<Record<AgentName, FlatVerdict>>;
  flat: boolean;
}

class UsageError extends Error {}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      count: { type: 'string' },
      mib: { type: 'string' },
      dirty: { type: 'string' },
      warmup: { type: 'string' },
      'rss-ratio': { type: 'string' },
      'fd-slack': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const num = (name: string, v: string | undefined, dflt: number, min: number, integer = true): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} >= ${min} (got "${v}")`);
    return n;
  };
  const o: Options = {
    count: num('count', values.count, 100, 1),
    mib: num('mib', values.mib, 64, 1),
    dirtyMibPerSec: num('dirty', values.dirty, 4, 0, false),
    limits: {
      warmup: num('warmup', values.warmup, DEFAULT_FLAT_LIMITS.warmup, 0),
      rssRatio: num('rss-ratio', values['rss-ratio'], DEFAULT_FLAT_LIMITS.rssRatio, 1, false),
      fdSlack: num('fd-slack', values['fd-slack'], DEFAULT_FLAT_LIMITS.fdSlack, 0),
    },
  };
  if (o.count < o.limits.warmup + 2) throw new UsageError(`--count ${o.count} leaves fewer than 2 samples after a warm-up of ${o.limits.warmup}: no verdict possible`);
  return o;
}

function log(line: string): void {
  console.error(`soak: ${line}`);
}

/** Bytes of the files directly in dir (0 when it does not exist). */
function filesBytes(dir: string): number {
  let total = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    try {
      const st = statSync(join(dir, name));
      if (st.isFile()) total += st.size;
    } catch {
      /* rotated away meanwhile */
    }
  }
  return total;
}

const mb = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
const ms = (v: number | undefined): string => (v === undefined ? '-' : String(Math.round(v)));

function table(rows: readonly SoakRow[]): string {
  const head = ['#', 'way', 'downtime ms', 'total ms', ...AGENTS.map((a) => `${a} MB/fds`), 'logs KiB'];
  const body = rows.map((r) => [
    r.n === 0 ? '0 (start)' : String(r.n),
    r.from === undefined ? '-' : `${r.from}->${r.from === 'src' ? 'dst' : 'src'}`,
    ms(r.downtimeMs),
    ms(r.totalMs),
    ...AGENTS.map((a) => `${mb(r.agents[a].rssBytes)}/${r.agents[a].fds}`),
    (r.logsBytes / 1024).toFixed(0),
  ]);
  return [head, head.map(() => '---'), ...body].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

function verdictLines(file: SoakFile): string[] {
  const l = file.options.limits;
  const lines = [`Flat after ${l.warmup} migrations: last RSS <= ${l.rssRatio}x the post-warm-up median, last fds <= median + ${l.fdSlack}.`, ''];
  for (const a of AGENTS) {
    const v = file.verdicts[a];
    if (!v) continue;
    lines.push(
      `- ${a}: ${v.flat ? 'FLAT' : 'NOT FLAT'}: RSS last ${mb(v.rssLastBytes)} MB, median ${mb(v.rssMedianBytes)} MB (${v.rssRatio.toFixed(2)}x); ` +
        `fds last ${v.fdLast}, median ${v.fdMedian} (${v.fdGrowth >= 0 ? '+' : ''}${v.fdGrowth})${v.reasons.length ? `: ${v.reasons.join('; ')}` : ''}`,
    );
  }
  const migrated = file.rows.filter((r) => r.n > 0);
  const downtimes = migrated.flatMap((r) => (r.downtimeMs === undefined ? [] : [r.downtimeMs]));
  if (downtimes.length > 0) lines.push('', `Downtime: median ${ms(median(downtimes))} ms, max ${ms(Math.max(...downtimes))} ms over ${downtimes.length} migrations.`);
  const first = file.rows[0];
  const last = file.rows.at(-1);
  if (first && last && last.n > 0) {
    lines.push(`Agents' logs/ dirs: ${(first.logsBytes / 1024).toFixed(0)} KiB at the start, ${(last.logsBytes / 1024).toFixed(0)} KiB after ${last.n} (${((last.logsBytes - first.logsBytes) / 1024 / last.n).toFixed(0)} KiB per migration).`);
  }
  if (file.failure) lines.push('', `STOPPED EARLY: ${file.failure}`);
  lines.push('', `Verdict: ${file.flat ? 'PASS (every migration verified, every agent flat)' : 'FAIL'}`);
  return lines;
}

function markdown(file: SoakFile): string {
  const o = file.options;
  const m = file.machine;
  return [
    `# Soak ${file.startedAt}`,
    '',
    `${o.count} migrations planned of one ${o.mib} MiB memtest task rewriting ${o.dirtyMibPerSec} MiB/s, alternately src -> dst and dst -> src, each through the`,
    `source-agent daemon of the host it runs in to the dest agent of the other; memory verified after each. Machine: ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB,`,
    `kernel ${m.kernel}, CRIU ${m.criuVersion}, Node ${m.nodeVersion}, ferry ${m.ferryCommit}.`,
    '',
    table(file.rows),
    '',
    ...verdictLines(file),
    '',
  ].join('\n');
}

async function main(): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`soak: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (!opts) {
    console.log(USAGE);
    return 0;
  }
  if (!canRun('soak', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare'), hasCriu())) return 2;
  try {
    requireBuilt();
    await buildMemtest();
  } catch (err) {
    console.error(`soak: ${(err as Error).message}`);
    return 2;
  }

  const controller = new AbortController();
  const signal = controller.signal;
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (++interrupts === 1) {
      log(`${sig}: stopping and cleaning up (again to kill at once)`);
      controller.abort(new Error(`interrupted by ${sig}`));
    } else {
      killEverythingStarted();
      process.exit(130); // the harness's exit hooks delete the namespaces
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killEverythingStarted);

  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-').slice(0, 19);
  await mkdir(RESULTS_DIR, { recursive: true });
  const jsonPath = join(RESULTS_DIR, `soak-${stamp}.json`);
  const mdPath = join(RESULTS_DIR, `soak-${stamp}.md`);
  const file: SoakFile = {
    version: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: '',
    machine: await describeMachine(criuPath() ?? 'criu'),
    options: opts,
    rows: [],
    failure: undefined,
    verdicts: {},
    flat: false,
  };
  const save = (): Promise<void> => writeFile(jsonPath, `${JSON.stringify({ ...file, finishedAt: new Date().toISOString() }, null, 1)}\n`);

  const cleanup = new Cleanup();
  let exitCode = 0;
  try {
    const hosts = await createTwoHosts();
    cleanup.defer('delete the two hosts', () => hosts.destroy());
    log(`hosts ${hosts.src.name} (${hosts.src.address}) and ${hosts.dst.name} (${hosts.dst.address})`);
    const keep = <T extends { pid: number; stop(): Promise<void> }>(what: string, agent: T): T => {
      const pid = agent.pid;
      trackTask(pid);
      cleanup.defer(`stop ${what}`, async () => {
        await agent.stop();
        untrackTask(pid);
      });
      return agent;
    };
    const dests: Record<Host['role'], DestAgentHandle> = {
      src: keep('dest@src', await startDestAgent(hosts, { host: hosts.src })),
      dst: keep('dest@dst', await startDestAgent(hosts, { host: hosts.dst })),
    };
    const daemons: Record<Host['role'], SourceAgentDaemonHandle> = {
      src: keep('daemon@src', await startSourceAgentDaemon(hosts, { host: hosts.src, allowDests: [dests.dst.address] })),
      dst: keep('daemon@dst', await startSourceAgentDaemon(hosts, { host: hosts.dst, allowDests: [dests.src.address] })),
    };
    const byName: Record<AgentName, { pid: number }> = { 'dest@src': dests.src, 'dest@dst': dests.dst, 'daemon@src': daemons.src, 'daemon@dst': daemons.dst };
    const sample = (): Pick<SoakRow, 'agents' | 'logsBytes'> => ({
      agents: Object.fromEntries(AGENTS.map((a) => [a, processResources(byName[a].pid)])) as Record<AgentName, ProcessResources>,
      logsBytes: [dests.src.workDir, dests.dst.workDir, daemons.src.imagesDir, daemons.dst.imagesDir].reduce((s, d) => s + filesBytes(join(d, 'logs')), 0),
    });

    const runDir = makeTempDir(`ferry-soak-${process.pid}-`);
    cleanup.defer('remove the task state dir', () => rm(runDir, { recursive: true, force: true }));
    const task = await startMemtest({ name: `soak-${process.pid}`, mib: opts.mib, dirtyMibPerSec: opts.dirtyMibPerSec, stateDir: runDir, netns: hosts.src.netns });
    // The copies a forced exit must kill: the task's launcher and whichever copy runs now.
    let pid = task.rootPid;
    [pid, task.unsharePid].forEach(trackTask);
    cleanup.defer('stop the task and its copy', async () => {
      await task.stop();
      [pid, task.unsharePid].forEach(untrackTask);
    });
    log(`task ${task.name}: ${opts.mib} MiB rewriting ${opts.dirtyMibPerSec} MiB/s, pid ${task.rootPid} in ${hosts.src.name}`);
    file.rows.push({ n: 0, from: undefined, downtimeMs: undefined, totalMs: undefined, wallMs: undefined, restoredPid: undefined, ...sample() });

    let at: Host['role'] = 'src';
    for (let n = 1; n <= opts.count; n++) {
      signal.throwIfAborted();
      const to: Host['role'] = at === 'src' ? 'dst' : 'src';
      let hop;
      try {
        hop = await migrateVerified({ hosts, task, pid, via: daemons[at], dest: dests[to], signal });
      } catch (err) {
        if (signal.aborted) throw err;
        file.failure = `migration ${n} (${at} -> ${to}): ${(err as Error).message}`;
        log(`FAILED ${file.failure}`);
        exitCode = 1;
        break;
      }
      trackTask(hop.restoredPid);
      untrackTask(pid);
      pid = hop.restoredPid;
      at = to;
      const row: SoakRow = { n, from: to === 'dst' ? 'src' : 'dst', downtimeMs: hop.summary.downtimeMs, totalMs: hop.summary.totalMs, wallMs: hop.result.durationMs, restoredPid: pid, ...sample() };
      file.rows.push(row);
      await save();
      log(
        `${n}/${opts.count} ${row.from}->${to}: downtime ${ms(row.downtimeMs)} ms, total ${ms(row.totalMs)} ms, verified ${hop.verify.pages} pages; ` +
          AGENTS.map((a) => `${a} ${mb(row.agents[a].rssBytes)} MB/${row.agents[a].fds} fds`).join(', '),
      );
    }
  } catch (err) {
    if (signal.aborted) {
      log('interrupted');
      exitCode = 130;
    } else {
      file.failure ??= (err as Error).stack ?? String(err);
      console.error(`soak: ${file.failure}`);
      exitCode = 1;
    }
  } finally {
    await cleanup.close().catch((e: unknown) => {
      console.error(`soak: cleanup: ${(e as Error).message}`);
      exitCode ||= 1;
    });
  }

  const migrated = file.rows.filter((r) => r.n > 0);
  for (const a of AGENTS) if (migrated.length > 0) file.verdicts[a] = judgeFlat(migrated.map((r) => r.agents[a]), opts.limits);
  file.flat = exitCode === 0 && migrated.length === opts.count && AGENTS.every((a) => file.verdicts[a]?.flat);
  if (exitCode === 0 && !file.flat) exitCode = 1;
  file.finishedAt = new Date().toISOString();
  await save();
  await writeFile(mdPath, markdown(file));
  console.log(`\n${table(file.rows)}\n\n${verdictLines(file).join('\n')}\n`);
  log(`wrote ${jsonPath.slice(REPO_ROOT.length)} and ${mdPath.slice(REPO_ROOT.length)}`);
  return exitCode;
}

process.exitCode = await main();
