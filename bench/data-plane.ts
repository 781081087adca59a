/**
 * `npm run bench:data-plane [-- --quick]`: issue 15's measurement of the page data plane, side by side in one
 * run over one veth pair: the references (iperf3, a bare Node TLS stream and the same without TLS), Ferry's
 * round 0 throughput (TLS, and --insecure for reference) with CPU per GiB of each side, on a tbf 1 Gbit/s link,
 * compression off vs auto on 100 Mbit/s for a heap-like and an incompressible task, the dest's store rate and
 * a CPU profile of both agents during round 0. Cells that need a flag this build lacks (--compress,
 * --page-channels) are skipped with the reason. See bench/README.md.
 *
 * Everything it creates (namespaces and their qdisc, the dest agents, tasks and copies, temp dirs, child
 * processes) is removed at the end, on failure and on Ctrl-C (a second Ctrl-C kills at once).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { tempBase } from '../testbed/temp-dirs.js';
import { createTwoHosts, makeTempDir, REPO_ROOT, requireBuilt, startDestAgent, type DestAgentHandle, type TwoHosts } from '../testbed/two-hosts.js';
import { canRun, criuPath, hasCriu, hasMigrateFlag, isRoot } from '../testbed/requirements.js';
import { buildMemtest } from '../testbed/workloads/memtest.js';
import { summariseCpuProfile } from './cpu-profile-summary.js';
import { ferryDataPlaneRun } from './data-plane-ferry.js';
import { iperf3, nodeStream } from './data-plane-references.js';
import { dataPlaneConsole, dataPlaneMarkdown, dataPlaneTargets, type CellPlan, type CellResult, type DataPlaneFile, type LinkId, type ProfileResult } from './data-plane-report.js';
import { replaceSection } from './docs-section.js';
import { shapeLink } from './link.js';
import { LINKS, type Link } from './cases.js';
import { describeMachine } from './machine.js';
import { Cleanup, killEverythingStarted } from './proc.js';
import { measureStoreRate } from './store-rate.js';

const USAGE = `Usage: npm run bench:data-plane -- [options]

  --quick        256 MiB tasks (64 MiB on 100 Mbit/s), shorter references, no profile (about 2 minutes)
  --no-profile   leave out the CPU-profiled run (node --cpu-prof on both agents during a migration)
  --no-docs      do not rewrite the data-plane section of docs/benchmarks.md
  --cells ID,... only these cells (ids as in the results file, e.g. tls-unshaped,tls-unshaped-ch2), each with
                 its link's references; no docs and no latest summary are written
  --mib N        the unshaped cells' task size in MiB (default 1024, 256 with --quick)
  --profile      the CPU-profiled run even with --quick (it follows the tls-unshaped cell)
  -h, --help`;

const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results');
const DOCS_MD = join(REPO_ROOT, 'docs', 'benchmarks.md');
const STREAM_PROBE = join(REPO_ROOT, 'build', 'bench', 'bench', 'stream-probe.js');
const CPU_PROFILE_HOOK = join(REPO_ROOT, 'build', 'bench', 'bench', 'cpu-profile-hook.js');
const DOCS_SECTION = 'data-plane';

interface Options {
  quick: boolean;
  profile: boolean;
  docs: boolean;
  /** Only these cells (a narrower run while working on one part); undefined: all. */
  cells: string[] | undefined;
  mib: number | undefined;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      'no-profile': { type: 'boolean' },
      'no-docs': { type: 'boolean' },
      cells: { type: 'string' },
      mib: { type: 'string' },
      profile: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const quick = values.quick ?? false;
  const cells = values.cells?.split(',').filter((c) => c !== '');
  const mib = values.mib === undefined ? undefined : Number(values.mib);
  if (mib !== undefined && !(Number.isInteger(mib) && mib >= 16 && mib <= 8192)) throw new Error(`--mib must be an integer from 16 to 8192 (got "${values.mib}")`);
  const profile = values.profile === true || (!quick && !values['no-profile']);
  return { quick, profile, docs: !values['no-docs'] && cells === undefined, cells, mib };
}

const sec = (v: number | undefined): string => (v === undefined ? 'n/a' : v.toFixed(2));
const log = (msg: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** The cells of a run, in the order they run (grouped by link, so each shaping is set once). */
function planCells(quick: boolean, flags: DataPlaneFile['flags'], mib?: number): CellPlan[] {
  const big = mib ?? (quick ? 256 : 1024);
  const small = quick ? 64 : 256;
  const noCompress = 'this build has no --compress (`ferry migrate --help`)';
  const noChannels = 'this build has no --page-channels (`ferry migrate --help`)';
  const cells: CellPlan[] = [
    { id: 'tls-unshaped', label: 'Ferry, mutual TLS', link: 'unshaped', mib: big, content: 'random', dirtyMibPerSec: 8, flags: [], insecure: false },
    { id: 'insecure-unshaped', label: 'Ferry, --insecure', link: 'unshaped', mib: big, content: 'random', dirtyMibPerSec: 8, flags: ['--insecure'], insecure: true },
  ];
  for (const n of [1, 2, 4]) {
    cells.push({
      id: `tls-unshaped-ch${n}`,
      label: `Ferry, TLS, --page-channels ${n}`,
      link: 'unshaped',
      mib: big,
      content: 'random',
      dirtyMibPerSec: 8,
      flags: ['--page-channels', String(n)],
      insecure: false,
      skipped: flags.pageChannels ? undefined : noChannels,
    });
  }
  // Compression must never slow a fast link: auto on the raw veth, against the TLS cell (no flag: the default).
  cells.push({
    id: 'tls-unshaped-compress-auto',
    label: 'Ferry, TLS, --compress auto',
    link: 'unshaped',
    mib: big,
    content: 'random',
    dirtyMibPerSec: 8,
    flags: ['--compress', 'auto'],
    insecure: false,
    skipped: flags.compress ? undefined : noCompress,
  });
  cells.push({ id: 'tls-1gbit', label: 'Ferry, mutual TLS', link: '1gbit', mib: big, content: 'random', dirtyMibPerSec: 8, flags: [], insecure: false });
  for (const content of ['heap', 'random'] as const) {
    for (const codec of ['off', 'auto'] as const) {
      cells.push({
        id: `${content}-100mbit-${codec}`,
        label: `Ferry, TLS, --compress ${codec}`,
        link: '100mbit',
        mib: small,
        content,
        dirtyMibPerSec: 1,
        // Without the flag there is no compression at all: "off" is the build's only behaviour.
        flags: flags.compress ? ['--compress', codec] : [],
        insecure: false,
        skipped: codec === 'auto' && !flags.compress ? noCompress : undefined,
      });
    }
  }
  return cells;
}

const linkOf = (id: LinkId): Link => LINKS[id];

async function main(): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`bench:data-plane: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!opts) {
    console.log(USAGE);
    return 0;
  }
  if (!canRun('the data-plane benchmark', isRoot(), hasCriu())) return 2;
  requireBuilt();
  if (!existsSync(STREAM_PROBE)) {
    console.error(`bench:data-plane: ${STREAM_PROBE} is missing: run it through npm run bench:data-plane (it compiles bench/)`);
    return 2;
  }
  await buildMemtest();
  const flags = { compress: hasMigrateFlag('--compress').ok, pageChannels: hasMigrateFlag('--page-channels').ok };
  const planned = planCells(opts.quick, flags, opts.mib);
  const unknown = opts.cells?.filter((id) => !planned.some((c) => c.id === id)) ?? [];
  if (unknown.length > 0) {
    console.error(`bench:data-plane: no cell ${unknown.join(', ')}; the cells: ${planned.map((c) => c.id).join(', ')}`);
    return 2;
  }
  const cells = opts.cells ? planned.filter((c) => opts.cells!.includes(c.id)) : planned;

  const controller = new AbortController();
  const signal = controller.signal;
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (++interrupts === 1) {
      console.error(`\nbench:data-plane: ${sig}: stopping and cleaning up (again to kill at once)`);
      controller.abort(new Error(`interrupted by ${sig}`));
    } else {
      killEverythingStarted();
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killEverythingStarted);

  const started = Date.now();
  const stamp = new Date(started).toISOString().replace(/[:.]/g, '-').slice(0, 19);
  await mkdir(RESULTS_DIR, { recursive: true });
  const resultsPath = join(RESULTS_DIR, `${stamp}-data-plane-${opts.quick ? 'quick' : 'full'}.json`);
  const file: DataPlaneFile = {
    kind: 'data-plane',
    mode: opts.quick ? 'quick' : 'full',
    startedAt: new Date(started).toISOString(),
    finishedAt: '',
    durationMs: 0,
    machine: await describeMachine(criuPath() ?? 'criu'),
    flags,
    references: { unshaped: [], '1gbit': [], '100mbit': [] },
    cells: [],
    storeRates: [],
    profile: undefined,
  };
  const save = async (): Promise<void> => {
    file.finishedAt = new Date().toISOString();
    file.durationMs = Date.now() - started;
    await writeFile(resultsPath, `${JSON.stringify(file, null, 1)}\n`);
  };
  log(`flags: --compress ${flags.compress ? 'present' : 'absent'}, --page-channels ${flags.pageChannels ? 'present' : 'absent'}; results in ${resultsPath.slice(REPO_ROOT.length)}`);

  const cleanup = new Cleanup();
  let exitCode = 0;
  try {
    const storeMib = opts.quick ? 256 : 1024;
    // Where the benchmark's dest agents keep their sessions (tmpfs), and a disk, as /var/lib/ferry would be.
    for (const parent of [tempBase(), '/var/tmp']) {
      const rate = await measureStoreRate(storeMib, parent, signal);
      file.storeRates.push(rate);
      log(`dest store rate: ${rate.mbPerSec.toFixed(0)} MB/s (${storeMib} MiB under ${rate.dir}, ${rate.fsType})`);
    }

    const hosts: TwoHosts = await createTwoHosts();
    cleanup.defer('delete the two hosts', () => hosts.destroy());
    log(`hosts ${hosts.src.name} (${hosts.src.address}) and ${hosts.dst.name} (${hosts.dst.address})`);
    const agents = new Map<string, DestAgentHandle>();
    const destFor = async (insecure: boolean): Promise<DestAgentHandle> => {
      const key = insecure ? 'insecure' : 'tls';
      const have = agents.get(key);
      if (have && !have.exited()) return have;
      const d = await startDestAgent(hosts, insecure ? { args: ['--insecure', '--insecure-any-address'], allowPeers: [] } : {});
      cleanup.defer(`stop the ${key} dest agent`, () => d.stop());
      agents.set(key, d);
      return d;
    };

    const refSeconds = opts.quick ? 3 : 5;
    const streamBytes = (opts.quick ? 512 : 2048) * 2 ** 20;
    let shaped: LinkId | undefined;
    const shape = async (link: LinkId): Promise<void> => {
      if (shaped === link) return;
      await shapeLink(hosts, linkOf(link), signal);
      shaped = link;
      await references(link);
    };
    // The references of a link, right before its cells (and for the raw veth again after them: the cores are
    // shared, so a ratio is taken against the mean of both).
    const references = async (link: LinkId, when: 'before' | 'after' = 'before'): Promise<void> => {
      const refs = file.references[link];
      const add = (r: (typeof refs)[number]): void => {
        if (!('skipped' in r)) r.when = when;
        refs.push(r);
        log('skipped' in r ? `${link}: ${r.label}: skipped (${r.skipped})` : `${link}: ${r.label}: ${r.gbitPerSec.toFixed(2)} Gbit/s (${r.mibPerSec.toFixed(0)} MiB/s)`);
      };
      add(await iperf3(hosts, 1, refSeconds, signal));
      if (link === 'unshaped') {
        add(await iperf3(hosts, 2, refSeconds, signal));
        add(await nodeStream(hosts, STREAM_PROBE, streamBytes, true, signal));
        add(await nodeStream(hosts, STREAM_PROBE, streamBytes, false, signal));
      }
      await save();
    };

    for (const [i, plan] of cells.entries()) {
      signal.throwIfAborted();
      const cell: CellResult = { ...plan };
      file.cells.push(cell);
      if (plan.skipped) {
        log(`${plan.id}: skipped (${plan.skipped})`);
        continue;
      }
      if (shaped === 'unshaped' && plan.link !== 'unshaped') await references('unshaped', 'after');
      await shape(plan.link);
      const timeoutMs = 60_000 + plan.mib * (plan.link === '100mbit' ? 400 : 60);
      cell.run = await ferryDataPlaneRun({
        hosts,
        dest: await destFor(plan.insecure),
        name: `dp${process.pid}-${i}`,
        mib: plan.mib,
        content: plan.content,
        dirtyMibPerSec: plan.dirtyMibPerSec,
        flags: plan.flags,
        signal,
        timeoutMs,
      });
      const r = cell.run;
      if (!r.ok) exitCode = 1;
      log(
        r.ok
          ? `${plan.id}: round 0 ${r.round0MiBPerSec.toFixed(0)} MiB/s (${(r.round0Bytes / 2 ** 20).toFixed(0)} MiB in ${r.round0Ms.toFixed(0)} ms), total ${(r.totalMs / 1000).toFixed(1)} s, downtime ${r.downtimeMs.toFixed(0)} ms, wire ${(r.wireBytes / 2 ** 20).toFixed(0)} MiB, ${r.rounds} rounds` +
              (r.round0Cpu ? `; round 0 CPU s: source ${sec(r.round0Cpu.source)}, dest ${sec(r.round0Cpu.dest)}, task ${sec(r.round0Cpu.task)}` : '')
          : `${plan.id}: FAILED: ${(r.error ?? '').split('\n').slice(0, 3).join(' | ')}`,
      );
      await save();
      // The profiled run goes right after the TLS cell, on the same link.
      if (plan.id === 'tls-unshaped' && opts.profile) {
        file.profile = await profiledRun(hosts, plan, signal).catch((e: unknown): ProfileResult => {
          signal.throwIfAborted();
          log(`profile: FAILED: ${(e as Error).message.split('\n')[0]}`);
          return { mib: plan.mib, note: `The profiled run failed: ${(e as Error).message.split('\n')[0]}` };
        });
        await save();
      }
    }
  } catch (err) {
    if (signal.aborted) {
      log('interrupted');
      exitCode = 130;
    } else {
      console.error(`bench:data-plane: ${(err as Error).stack ?? String(err)}`);
      exitCode = 1;
    }
  } finally {
    await cleanup.close().catch((e: unknown) => {
      console.error(`bench:data-plane: cleanup: ${(e as Error).message}`);
      exitCode ||= 1;
    });
  }
  await save();
  console.log('');
  console.log(dataPlaneConsole(file));
  if (exitCode !== 130 && opts.cells === undefined) {
    const rel = resultsPath.slice(REPO_ROOT.length);
    const summaryPath = join(RESULTS_DIR, `latest-data-plane${opts.quick ? '-quick' : ''}-summary.json`);
    await writeFile(summaryPath, `${JSON.stringify({ ...file, results: rel, targets: dataPlaneTargets(file) }, null, 1)}\n`);
    const written = [resultsPath, summaryPath];
    if (opts.docs && !opts.quick) {
      const old = existsSync(DOCS_MD) ? readFileSync(DOCS_MD, 'utf8') : '# Benchmarks\n';
      await writeFile(DOCS_MD, replaceSection(old, DOCS_SECTION, dataPlaneMarkdown(file, rel)));
      written.push(DOCS_MD);
    }
    log(`finished in ${((Date.now() - started) / 60000).toFixed(1)} min; wrote ${written.map((p) => p.slice(REPO_ROOT.length)).join(', ')}`);
  }
  return exitCode;
}

/**
 * A migration like the TLS cell's with `node --cpu-prof` on both sides: a dest agent of its own (its profile
 * is written when it exits) and the migrating CLI. Both profiles are cut to round 0 and summarised.
 */
async function profiledRun(hosts: TwoHosts, plan: CellPlan, signal: AbortSignal): Promise<ProfileResult> {
  const dir = makeTempDir(`ferry-bench-prof-${process.pid}-`);
  const srcDir = join(dir, 'source');
  const dstDir = join(dir, 'dest');
  // Node 20 refuses --cpu-prof in NODE_OPTIONS: the hook starts the same profiler from inside.
  const prof = (d: string): Record<string, string> => ({ NODE_OPTIONS: `--import=${CPU_PROFILE_HOOK}`, FERRY_BENCH_CPU_PROF_DIR: d });
  const result: ProfileResult = { mib: plan.mib };
  let dest: DestAgentHandle | undefined;
  mkdirSync(srcDir);
  mkdirSync(dstDir);
  try {
    dest = await startDestAgent(hosts, { env: prof(dstDir) });
    const r = await ferryDataPlaneRun({
      hosts,
      dest,
      name: `dp${process.pid}-prof`,
      mib: plan.mib,
      content: plan.content,
      dirtyMibPerSec: plan.dirtyMibPerSec,
      flags: plan.flags,
      env: prof(srcDir),
      signal,
      timeoutMs: 60_000 + plan.mib * 120,
    });
    await dest.stop();
    dest = undefined;
    if (!r.ok) {
      result.note = `the profiled run failed: ${(r.error ?? '').split('\n')[0]}`;
      return result;
    }
    const one = (d: string): string | undefined => {
      const files = existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.cpuprofile')) : [];
      // The CLI's own process; a child node (none today) would add files: take the largest.
      return files.map((f) => join(d, f)).sort((a, b) => readFileSync(b).length - readFileSync(a).length)[0];
    };
    const s = one(srcDir);
    const d = one(dstDir);
    if (s) result.source = summariseCpuProfile(s, r.round0Window);
    if (d) result.dest = summariseCpuProfile(d, r.round0Window);
    result.note = `Profiled run: round 0 ${r.round0MiBPerSec.toFixed(0)} MiB/s under the profiler (the unprofiled cell: see the table).${s ? '' : ' No source profile was written.'}${d ? '' : ' No dest profile was written.'}`;
    log(`profile: ${result.note}`);
    for (const side of ['source', 'dest'] as const) {
      const p = result[side];
      if (p) log(`profile ${side}: busy ${p.busyMs.toFixed(0)} of ${p.windowMs.toFixed(0)} ms; ${p.top.slice(0, 6).map((x) => `${x.what} ${x.percent.toFixed(1)} %`).join('; ')}`);
    }
    return result;
  } finally {
    await dest?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
