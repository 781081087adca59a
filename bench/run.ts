/**
 * `npm run bench [-- --quick | --large | ...]`: Ferry's live migration against stop-and-copy (Ferry's own and
 * plain CRIU) between two network-namespace hosts, over links shaped with tc. See bench/README.md.
 *
 * Everything it creates (namespaces and their veth and qdisc, the dest agent, tasks and restored copies,
 * temp dirs, child processes) is removed at the end, on failure and on Ctrl-C (a second Ctrl-C kills at once).
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createTwoHosts, REPO_ROOT, requireBuilt, startDestAgent, type DestAgentHandle, type TwoHosts } from '../testbed/two-hosts.js';
import { hasCommand, isRoot } from '../testbed/requirements.js';
import { buildMemtest } from '../testbed/workloads/memtest.js';
import {
  estimateCaseSeconds,
  estimateRunSeconds,
  fullCases,
  lazyVsEagerCases,
  methodById,
  methodsForCase,
  parseMethodIds,
  planMethods,
  planRepetitions,
  postCopyCases,
  quickCases,
  type BenchCase,
  type BenchPlan,
  type Link,
  type Method,
  type MethodId,
} from './cases.js';
import { checkLink, describeQdisc, shapeLink } from './link.js';
import { keepSections } from './docs-section.js';
import { describeMachine } from './machine.js';
import { measureRun, type RunEnv } from './measure.js';
import { Cleanup, killEverythingStarted, runCommand } from './proc.js';
import { consoleReport, downtimeChart, markdownReport, targetsOf } from './report.js';
import { upgradeBenchFile, type BenchFile, type LinkCheck, type RunRecord } from './results.js';
import { aggregate, lazyVsEager } from './summary.js';

const USAGE = `Usage: npm run bench -- [options]

  --quick            1 Gbit/s, 256 MiB at 8 MiB/s, 1 repetition, all methods (about 1 minute)
  --lazy-vs-eager    issue 11's figures: 1 Gbit/s, 8 MiB/s, 256 MiB and 1 GiB, ferry-live-lazy and
                     ferry-live-eager (and at 1 GiB the two stop-and-copy baselines the ratio target
                     needs), 3 repetitions interleaved (about 6 minutes; budget 12)
  --post-copy        issue 12's figures: 1 Gbit/s, 128 MiB/s dirtying, 256 MiB and 1 GiB, ferry-postcopy
                     (auto), ferry-postcopy-always, ferry-live-lazy (the throttle path) and ferry-stop-copy,
                     2 repetitions interleaved (about 10 minutes; budget 15); writes
                     bench/results/latest-post-copy-summary.json
  --large            add the 4 GiB case (1 Gbit/s, 8 MiB/s); needs ~18 GiB of free memory
  --reps N           repetitions of each case (default 3; 1 with --quick)
  --budget MIN       time budget in minutes (default 29; 3 with --quick): repetitions after the first are
                     left out when they would not fit
  --cases ID,...     only these cases (ids as printed, e.g. 1gbit-256m-d8)
  --methods ID,...   only these methods: ferry-live-lazy, ferry-live-eager, ferry-stop-copy,
                     criu-stop-copy, ferry-postcopy, ferry-postcopy-always (ferry-live = both
                     ferry-live-lazy and ferry-live-eager)
  --docs / --no-docs write docs/benchmarks.md and docs/benchmarks-downtime.svg (default: yes for a full run)
  --report FILE      no migrations: print the report of a results file (and rewrite docs/ unless --no-docs)
  --dry-run          print the plan and the time estimate, then stop
  -h, --help`;

const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results');
const DOCS_MD = join(REPO_ROOT, 'docs', 'benchmarks.md');
const DOCS_SVG = join(REPO_ROOT, 'docs', 'benchmarks-downtime.svg');
const TCP_PIPE = join(REPO_ROOT, 'build', 'bench', 'bench', 'tcp-pipe.js');
/** Hosts, agent, link checks: a rough fixed cost for the estimate. */
const SETUP_SECONDS = 8;
const PLAN_SHARE = 0.92;

interface Options {
  quick: boolean;
  lazyVsEager: boolean;
  postCopy: boolean;
  large: boolean;
  reps: number;
  budgetMs: number;
  caseIds: string[] | undefined;
  methodIds: MethodId[] | undefined;
  docs: boolean;
  reportOnly: string | undefined;
  dryRun: boolean;
}

class UsageError extends Error {}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      'lazy-vs-eager': { type: 'boolean' },
      'post-copy': { type: 'boolean' },
      large: { type: 'boolean' },
      reps: { type: 'string' },
      budget: { type: 'string' },
      cases: { type: 'string' },
      methods: { type: 'string' },
      docs: { type: 'boolean' },
      'no-docs': { type: 'boolean' },
      report: { type: 'string' },
      'dry-run': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const quick = values.quick ?? false;
  const lazyVsEager = values['lazy-vs-eager'] ?? false;
  const postCopy = values['post-copy'] ?? false;
  if ([quick, lazyVsEager, postCopy].filter(Boolean).length > 1) throw new UsageError('--quick, --lazy-vs-eager and --post-copy are different runs: pick one');
  const num = (name: string, v: string | undefined, dflt: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!(n > 0) || !Number.isFinite(n)) throw new UsageError(`--${name} must be a positive number (got "${v}")`);
    return n;
  };
  const reps = Math.round(num('reps', values.reps, quick ? 1 : postCopy ? 2 : 3));
  let methodIds: MethodId[] | undefined;
  try {
    methodIds = values.methods === undefined ? undefined : parseMethodIds(values.methods);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return {
    quick,
    lazyVsEager,
    postCopy,
    large: values.large ?? false,
    reps,
    budgetMs: num('budget', values.budget, quick ? 3 : lazyVsEager ? 12 : postCopy ? 15 : 29) * 60_000,
    caseIds: values.cases?.split(',').map((c) => c.trim()),
    methodIds,
    // Only a full, unfiltered run replaces docs/ by default.
    docs: values['no-docs'] ? false : (values.docs ?? (!quick && !lazyVsEager && !postCopy && values.cases === undefined && values.methods === undefined)),
    reportOnly: values.report,
    dryRun: values['dry-run'] ?? false,
  };
}

function log(message: string): void {
  const t = new Date().toISOString().slice(11, 19);
  console.log(`[${t}] ${message}`);
}

function minutes(seconds: number): string {
  return `${(seconds / 60).toFixed(1)} min`;
}

async function preflight(): Promise<{ criu: string }> {
  const missing = [isRoot(), ...['ip', 'nsenter', 'tc', 'tar', 'gcc', 'unshare', 'bash'].map(hasCommand)].filter((r) => !r.ok);
  if (missing.length > 0) throw new UsageError(`cannot run here: ${missing.map((r) => r.reason).join('; ')}`);
  requireBuilt();
  if (!existsSync(TCP_PIPE)) throw new UsageError(`${TCP_PIPE} is missing: compile the benchmark first (tsc -p bench/tsconfig.json; npm run bench does it)`);
  const prov = await runCommand(['bash', join(REPO_ROOT, 'scripts', 'provision-criu.sh')], { timeoutMs: 10 * 60_000 });
  const criu = prov.stdout.trim().split('\n').at(-1) ?? '';
  if (prov.code !== 0 || !criu.startsWith('/')) throw new UsageError(`needs CRIU >= 4.2: scripts/provision-criu.sh failed: ${prov.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  await buildMemtest();
  return { criu };
}

/** Methods whose `ferry migrate` flags this build lacks: they cannot run (reported, never worked around). */
async function unavailableMethods(methods: readonly Method[]): Promise<{ method: MethodId; reason: string }[]> {
  const help = await runCommand([process.execPath, join(REPO_ROOT, 'bin', 'ferry.js'), 'migrate', '--help'], { timeoutMs: 30_000 });
  const out: { method: MethodId; reason: string }[] = [];
  for (const m of methods) {
    const lacking = m.ferryFlags.filter((f) => f.startsWith('--') && !help.stdout.includes(f));
    if (lacking.length > 0) out.push({ method: m.id, reason: `\`ferry migrate\` has no ${lacking.join(', ')} (not in \`ferry migrate --help\`)` });
  }
  return out;
}

function memAvailableBytes(): number {
  const kb = /^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  return Number(kb ?? 0) * 1024;
}

const SUMMARY_FILES: Partial<Record<BenchFile['mode'], string>> = {
  full: 'latest-summary.json',
  'lazy-vs-eager': 'latest-lazy-vs-eager-summary.json',
  'post-copy': 'latest-post-copy-summary.json',
};

async function writeOutputs(file: BenchFile, opts: Options, resultsPath: string): Promise<string[]> {
  const written = [resultsPath];
  await writeFile(resultsPath, `${JSON.stringify(file, null, 1)}\n`);
  const summaryName = SUMMARY_FILES[file.mode];
  if (summaryName) {
    // A full run's summary is committed; the lazy-vs-eager and post-copy ones sit beside it, so they never hide the full matrix.
    const summaryPath = join(RESULTS_DIR, summaryName);
    const stats = aggregate(file.runs);
    const summary = {
      ...file,
      runs: undefined,
      results: resultsPath.slice(REPO_ROOT.length),
      stats,
      ...(file.mode === 'post-copy' ? {} : { lazyVsEager: lazyVsEager(stats).map((r) => ({ caseId: r.caseId, mib: r.mib, lazy: r.lazy?.method, eager: r.eager?.method })) }),
      targets: targetsOf(file, stats),
    };
    await writeFile(summaryPath, `${JSON.stringify(summary, null, 1)}\n`);
    written.push(summaryPath);
  }
  if (opts.docs) written.push(...(await writeDocs(file)));
  return written;
}

async function writeDocs(file: BenchFile): Promise<string[]> {
  // The data-plane benchmark's section (docs-section.ts) is its own: carried over, not regenerated here.
  const old = existsSync(DOCS_MD) ? readFileSync(DOCS_MD, 'utf8') : '';
  await writeFile(DOCS_MD, keepSections(old, markdownReport(file, 'benchmarks-downtime.svg')));
  await writeFile(DOCS_SVG, downtimeChart(file));
  return [DOCS_MD, DOCS_SVG];
}

async function main(): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (!opts) {
    console.log(USAGE);
    return 0;
  }
  if (opts.reportOnly !== undefined) {
    const file = upgradeBenchFile(JSON.parse(readFileSync(opts.reportOnly, 'utf8')) as BenchFile);
    console.log(consoleReport(file));
    if (opts.docs) console.log(`wrote ${(await writeDocs(file)).join(' and ')}`);
    return 0;
  }

  const kind: BenchPlan = opts.lazyVsEager ? 'lazy-vs-eager' : opts.postCopy ? 'post-copy' : 'matrix';
  let cases: BenchCase[] = opts.quick ? quickCases() : opts.lazyVsEager ? lazyVsEagerCases() : opts.postCopy ? postCopyCases() : fullCases(opts.large);
  if (opts.caseIds) {
    const unknown = opts.caseIds.filter((id) => !cases.some((c) => c.id === id));
    if (unknown.length > 0) {
      console.error(`bench: unknown case ${unknown.join(', ')}; cases: ${cases.map((c) => c.id).join(', ')}`);
      return 2;
    }
    cases = cases.filter((c) => opts.caseIds!.includes(c.id));
  }
  const wanted = planMethods(kind)
    .filter((id) => !opts.methodIds || opts.methodIds.includes(id))
    .map(methodById);

  const controller = new AbortController();
  const signal = controller.signal;
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupts++;
    if (interrupts === 1) {
      console.error(`\nbench: ${sig}: stopping and cleaning up (again to kill at once)`);
      controller.abort(new Error(`interrupted by ${sig}`));
    } else {
      killEverythingStarted();
      process.exit(130); // two-hosts' exit hook deletes the namespaces
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killEverythingStarted);

  let pre: { criu: string };
  let unavailable: { method: MethodId; reason: string }[];
  try {
    pre = await preflight();
    unavailable = await unavailableMethods(wanted);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 2;
  }
  for (const u of unavailable) console.error(`bench: WARNING: ${u.method} cannot run: ${u.reason}`);
  const methods = wanted.filter((m) => !unavailable.some((u) => u.method === m.id));
  if (methods.length === 0) {
    console.error('bench: no method can run');
    return 2;
  }
  const methodIds = methods.map((m) => m.id);
  // The methods of each case (cases.ts methodsForCase says which a case leaves out, and why).
  const methodsOf = (c: BenchCase): Method[] => methodsForCase(c, methodIds, kind).map(methodById);
  const large = cases.find((c) => c.large);
  if (large && memAvailableBytes() < 4.5 * large.mib * 2 ** 20) {
    console.error(`bench: the ${large.id} case needs ~${(4.5 * large.mib) / 1024} GiB of free memory (plain CRIU: tmpfs images on both sides and two copies of the task); skipping it`);
    cases = cases.filter((c) => c !== large);
  }

  // The plan: repetitions per case within the budget; run repetition-major (every planned case once, then
  // again...), so that a slow machine loses repetitions, not cases.
  const perCase = cases.map((c) => estimateCaseSeconds(c, methodsOf(c).map((m) => m.id)));
  const oneRep = perCase.reduce((a, b) => a + b, 0);
  const budgetS = opts.budgetMs / 1000;
  // Plan with a margin for a slow spell of the VM; the check before each repetition uses the whole budget.
  let plan = planRepetitions(cases, perCase, opts.reps, budgetS * PLAN_SHARE - SETUP_SECONDS);
  const plannedS = SETUP_SECONDS + cases.reduce((s, c, i) => s + perCase[i]! * plan.get(c.id)!, 0);
  const planned = [...plan.values()];
  const mode: BenchFile['mode'] = opts.quick ? 'quick' : opts.lazyVsEager ? 'lazy-vs-eager' : opts.postCopy ? 'post-copy' : opts.caseIds || opts.methodIds ? 'partial' : 'full';
  log(`${mode} benchmark: ${cases.length} case(s) x ${methodIds.length} method(s) (${methodIds.join(', ')}), up to ${opts.reps} repetition(s)`);
  log(
    `estimate: ${minutes(plannedS)} (budget ${minutes(budgetS)}; ${minutes(SETUP_SECONDS + oneRep * opts.reps)} for ${opts.reps} repetition(s) of everything); ` +
      `repetitions per case: ${Math.min(...planned)} to ${Math.max(...planned)}`,
  );
  if (opts.dryRun) {
    for (const [i, c] of cases.entries()) {
      log(`  ${c.id}: ${methodsOf(c).map((m) => m.id).join(', ')}: ~${Math.round(perCase[i]!)} s per repetition, ${plan.get(c.id)} repetition(s)`);
    }
    return 0;
  }

  const started = Date.now();
  const stamp = new Date(started).toISOString().replace(/[:.]/g, '-').slice(0, 19);
  await mkdir(RESULTS_DIR, { recursive: true });
  const resultsPath = join(RESULTS_DIR, `${stamp}-${mode}.json`);
  const file: BenchFile = {
    version: 1,
    mode,
    startedAt: new Date(started).toISOString(),
    finishedAt: '',
    durationMs: 0,
    machine: await describeMachine(pre.criu),
    cases: cases.map((c) => ({ id: c.id, link: c.link.id, mib: c.mib, dirtyMibPerSec: c.dirtyMibPerSec })),
    methods: methodIds,
    repetitions: opts.reps,
    unavailable,
    skipped: [],
    linkChecks: [],
    runs: [],
  };
  const save = async (): Promise<void> => {
    file.finishedAt = new Date().toISOString();
    file.durationMs = Date.now() - started;
    await writeFile(resultsPath, `${JSON.stringify(file, null, 1)}\n`);
  };

  const cleanup = new Cleanup();
  let exitCode = 0;
  try {
    const hosts: TwoHosts = await createTwoHosts();
    cleanup.defer('delete the two hosts', () => hosts.destroy());
    log(`hosts ${hosts.src.name} (${hosts.src.address}) and ${hosts.dst.name} (${hosts.dst.address})`);

    let dest: DestAgentHandle | undefined;
    const getDest = async (): Promise<DestAgentHandle> => {
      if (dest && !dest.exited()) return dest;
      if (dest) log('WARNING: the dest agent exited; starting another');
      const d = await startDestAgent(hosts);
      cleanup.defer('stop the dest agent', () => d.stop());
      dest = d;
      return d;
    };
    await getDest();

    let shaped: Link | undefined;
    const shape = async (link: Link): Promise<void> => {
      if (shaped === link) return;
      await shapeLink(hosts, link, signal);
      shaped = link;
    };
    for (const link of [...new Set(cases.map((c) => c.link))]) {
      await shape(link);
      const check: LinkCheck = await checkLink(hosts, link, TCP_PIPE, signal);
      file.linkChecks.push(check);
      log(`link ${link.label}: ${await describeQdisc(hosts, signal)}; one TCP stream: ${check.mbitPerSec.toFixed(0)} Mbit/s`);
    }

    const env: RunEnv = { hosts, dest: getDest, destLog: () => dest?.stderr() ?? '', criu: pre.criu, tcpPipe: TCP_PIPE, failedLogsDir: resultsPath.replace(/\.json$/, '-logs'), signal };
    // Measured / modelled time so far, to project what is left.
    let modelled = 0;
    let measured = 0;
    const done = new Map(cases.map((c) => [c.id, 0]));
    // Passes over the cases: pass p runs the p-th repetition of each case the plan still has runs for. From
    // the second pass on, the plan is redone with the time left and the model rescaled by what was measured.
    for (let pass = 1; pass <= opts.reps; pass++) {
      const scale = modelled > 0 ? measured / modelled : 1;
      if (pass > 1) {
        const leftS = budgetS * PLAN_SHARE - (Date.now() - started) / 1000;
        plan = planRepetitions(cases, perCase.map((s) => s * scale), opts.reps, leftS, done);
        const runs = cases.filter((c) => plan.get(c.id)! > done.get(c.id)!).length;
        if (runs === 0) break;
        log(`pass ${pass}: ${runs} case(s) get another repetition (time model x${scale.toFixed(2)}, ${minutes(leftS)} left to plan)`);
      }
      for (const [ci, c] of cases.entries()) {
        const rep = done.get(c.id)! + 1;
        if (rep > plan.get(c.id)!) continue;
        const projectedS = perCase[ci]! * (modelled > 0 ? measured / modelled : 1);
        const elapsedS = (Date.now() - started) / 1000;
        if (rep > 1 && elapsedS + projectedS > budgetS) {
          log(`skip ${c.id} rep ${rep}: ~${Math.round(projectedS)} s more would pass the budget (${minutes(elapsedS)} elapsed)`);
          continue;
        }
        await shape(c.link);
        // Rotate the method order with the repetition and the case, so no method always goes first.
        const ms = methodsOf(c);
        const order = ms.map((_, i) => ms[(i + rep - 1 + ci) % ms.length]!);
        for (const method of order) {
          signal.throwIfAborted();
          const estimate = estimateRunSeconds(c, method.id);
          const record: RunRecord = await measureRun(env, c, method, rep, estimate);
          file.runs.push(record);
          modelled += estimate;
          measured += record.wallMs / 1000;
          log(describeRun(record, opts.reps));
          if (!record.ok) exitCode = 1;
          await save();
        }
        done.set(c.id, rep);
      }
    }
    for (const c of cases) {
      for (let rep = done.get(c.id)! + 1; rep <= opts.reps; rep++) {
        for (const m of methodsOf(c).map((x) => x.id)) file.skipped.push({ caseId: c.id, method: m, rep, reason: 'left out to stay within the time budget' });
      }
    }
  } catch (err) {
    if (signal.aborted) {
      log('interrupted');
      exitCode = 130;
    } else {
      console.error(`bench: ${(err as Error).stack ?? String(err)}`);
      exitCode = 1;
    }
  } finally {
    await cleanup.close().catch((e: unknown) => {
      console.error(`bench: cleanup: ${(e as Error).message}`);
      exitCode ||= 1;
    });
  }
  await save();
  if (file.runs.length > 0) {
    console.log('');
    console.log(consoleReport(file));
    console.log('');
    const written = exitCode === 130 ? [resultsPath] : await writeOutputs(file, opts, resultsPath);
    log(`finished in ${minutes((Date.now() - started) / 1000)} (estimate was ${minutes(plannedS)}); wrote ${written.map((p) => p.slice(REPO_ROOT.length)).join(', ')}`);
  }
  return exitCode;
}

function describeRun(r: RunRecord, reps: number): string {
  const head = `rep ${r.rep}/${reps} ${r.caseId} ${r.method}`;
  if (!r.ok || !r.outcome) return `${head}: FAILED (${(r.error ?? '').split('\n')[0]}) after ${(r.wallMs / 1000).toFixed(1)} s${r.logsDir ? `; logs in ${r.logsDir}` : ''}`;
  const o = r.outcome;
  const work = r.precopyWritesPerSec !== undefined && r.idleWritesPerSec ? `, work in pre-copy ${(r.precopyWritesPerSec / r.idleWritesPerSec).toFixed(2)} of idle` : '';
  const fillWork = r.fillWork?.writesPerSec !== undefined && r.idleWritesPerSec ? `, work resume->return ${(r.fillWork.writesPerSec / r.idleWritesPerSec).toFixed(2)} of idle` : '';
  const fill = o.fill ? `, fill ${Math.round(o.fill.fillMs)} ms (${o.fill.faults} faults, ${o.fill.faultsWaited} waited, ${o.fill.replacedPages} replaced)` : '';
  const p = o.phases;
  const split = `dump ${Math.round(p.dump)}, delta ${Math.round(p.transfer)}, rebuild ${Math.round(p.rebuild)}, restore ${Math.round(p.restore)}, commit ${Math.round(p.commit)}`;
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const b = o.phaseBytes;
  const byPhase = b ? ` (pre-copy ${mib(b.precopy)}, downtime ${mib(b.downtime)}, post-copy ${mib(b.postcopy)})` : '';
  const post = o.postCopied && o.fill ? `, post-copied: ${o.fill.remotePages ?? 0} remote pages, waits p50 ${o.fill.faultWaitP50Us ?? 0} µs p99 ${o.fill.faultWaitP99Us ?? 0} µs` : '';
  return (
    `${head}: downtime ${Math.round(o.downtimeMs)} ms (${o.restoreMode ?? 'eager'}: ${split})${fill}${post}, total ${(o.totalMs / 1000).toFixed(1)} s, ` +
    `${(o.bytesSent / 2 ** 20).toFixed(0)} MiB sent${byPhase}, ${o.rounds} rounds${work}${fillWork}, verify ok (run ${(r.wallMs / 1000).toFixed(1)} s)`
  );
}

process.exitCode = await main();
