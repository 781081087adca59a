/**
 * Where a lazy migration's freeze goes (`npx vite-node bench/freeze-split.ts`, root, CRIU, `npm run build`
 * first; ~15 s a run): memtest at each size (BENCH_SPLIT_MIB, default 256,1024; 8 MiB/s dirtying) migrated
 * between the two netns hosts (the veth unshaped) BENCH_SPLIT_REPS times (default 3), sizes interleaved; each
 * restored copy checks every page. Prints the summary's split (dump, final delta, rebuild, restore, commit,
 * and the gaps between them) per run and the medians, and the dest agent's RSS at the Restore (every spawn in
 * the freeze forks it: bench/spawn-cost.ts). BENCH_SPLIT_ARGS adds `ferry migrate` flags (e.g. `--restore
 * eager`). The machine is shared: compare within one run.
 */
import { rmSync } from 'node:fs';
import { createTwoHosts, makeTempDir, runMigrate, startDestAgent } from '../testbed/two-hosts.js';
import { startMemtest } from '../testbed/workloads/memtest.js';

const SIZES_MIB = (process.env.BENCH_SPLIT_MIB ?? '256,1024').split(',').map(Number);
const REPS = Number(process.env.BENCH_SPLIT_REPS ?? 3);
const ARGS = (process.env.BENCH_SPLIT_ARGS ?? '').split(' ').filter(Boolean);
const PARTS = ['downtime', 'dump', 'finalDelta', 'rebuild', 'restore', 'commit', 'gaps'] as const;
type Split = Record<(typeof PARTS)[number], number>;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function once(mib: number, rep: number): Promise<Split> {
  const stateDir = makeTempDir('ferry-split-state-');
  const hosts = await createTwoHosts();
  const dest = await startDestAgent(hosts, { env: { FERRY_LOG_LEVEL: 'debug' } });
  const task = await startMemtest({ name: `split-${process.pid}-${mib}-${rep}`, mib, dirtyMibPerSec: 8, stateDir, netns: hosts.src.netns });
  try {
    const r = await runMigrate(hosts, task.rootPid, dest, { env: { FERRY_LOG_LEVEL: 'debug' }, timeoutMs: 120_000, args: ARGS });
    const s = r.summary;
    if (!s) throw new Error(`migration failed (exit ${r.exitCode}): ${r.stderr.slice(-2000)}`);
    task.adopt(s.restoredPid);
    const report = await task.verify(s.restoredPid);
    if (report.bad_pages !== 0) throw new Error(`${report.bad_pages} bad pages after the migration`);
    const ph = s.phases;
    const p = { dumpMs: ph.dumpMs ?? 0, finalDeltaMs: ph.finalDeltaMs ?? 0, rebuildMs: ph.rebuildMs ?? 0, restoreMs: ph.restoreMs ?? 0, commitMs: ph.commitMs ?? 0 };
    const parts = p.dumpMs + p.finalDeltaMs + p.rebuildMs + p.restoreMs + p.commitMs;
    const split: Split = { downtime: s.downtimeMs, dump: p.dumpMs, finalDelta: p.finalDeltaMs, rebuild: p.rebuildMs, restore: p.restoreMs, commit: p.commitMs, gaps: s.downtimeMs - parts };
    // The steps' own debug lines: the source's final delta, the dest's lazy images.
    const steps = /"scanMs".*?(?=})/.exec(r.stderr)?.[0] ?? '';
    const images = /"checkMs".*?(?=})/.exec(dest.stderr())?.[0] ?? '';
    const round = (t: string): string => t.replace(/(\d+\.\d)\d+/g, '$1');
    console.log(`${mib} MiB #${rep}: ${PARTS.map((k) => `${k} ${split[k].toFixed(0)}`).join(', ')} ms; ${s.restoreMode}; final delta ${steps}; images ${round(images)}`);
    return split;
  } finally {
    await task.stop();
    await dest.stop();
    await hosts.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const runs = new Map<number, Split[]>(SIZES_MIB.map((m) => [m, []]));
  for (let rep = 0; rep < REPS; rep++) for (const mib of SIZES_MIB) runs.get(mib)!.push(await once(mib, rep));
  console.log(`\n| MiB | ${PARTS.join(' | ')} |\n|---|${PARTS.map(() => '---').join('|')}|`);
  for (const [mib, rs] of runs) console.log(`| ${mib} | ${PARTS.map((k) => median(rs.map((r) => r[k])).toFixed(0)).join(' | ')} |`);
  const [a, b] = SIZES_MIB;
  if (a !== undefined && b !== undefined) {
    const ratio = median(runs.get(b)!.map((r) => r.downtime)) / median(runs.get(a)!.map((r) => r.downtime));
    console.log(`\ndowntime(${b} MiB) / downtime(${a} MiB) = ${ratio.toFixed(2)} (medians of ${REPS})`);
  }
}

await main();
