/**
 * How the freeze's cost grows with the task's VMAs (issue 13 item 5: ZDTM maps06, ~30,000 VMAs, froze for
 * 3,248 ms while the policy estimated 681 ms). For each N, a `testbed/workloads/many-maps.c` task with 3N VMAs
 * (N one-page private file mappings, N written anonymous pages, N PROT_NONE gaps) runs under `ferry run` in the
 * src netns host and is migrated to the dest host in each restore mode (`--restore lazy`, the default, and
 * `--restore eager`); printed per run: VMAs, downtime and its phases, and the policy's expected downtime at its
 * freeze decision (from this migration's rates: every run gets a fresh state dir, so no history). A last run of
 * the largest N per mode shares a state dir with a run before it: the estimate learned from history. The fit
 * per mode at the end (downtime = a + c * VMAs) is what source-agent/cost-model.ts's FREEZE_COST comes from.
 *   npx vite-node bench/vma-cost.ts [N...]      (default 0 1000 4000 10000; root, CRIU, ~3 min)
 *   FERRY_BENCH_RESTORE=lazy|eager               (one mode only)
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createTwoHosts, makeTempDir, requireBuilt, runMigrate, startDestAgent } from '../testbed/two-hosts.js';
import { describeResult, REPO_ROOT, runFerry } from '../testbed/ferry-process.js';
import { processStartTime, readPidState } from '../testbed/process-probes.js';
import { waitFor } from '../testbed/wait-for.js';

type RestoreMode = 'lazy' | 'eager';

interface Run {
  mode: RestoreMode;
  n: number;
  vmas: number;
  downtimeMs: number;
  expectedMs: number | undefined;
  fixedCostMs: number | undefined;
  phases: Record<string, number | undefined>;
  history: boolean;
}

function mapsLines(pid: number): number {
  try {
    return readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').length - 1;
  } catch {
    return 0;
  }
}

function buildWorkload(): string {
  const out = join(REPO_ROOT, 'build', 'workloads', 'many-maps');
  mkdirSync(join(REPO_ROOT, 'build', 'workloads'), { recursive: true });
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', out, join(REPO_ROOT, 'testbed', 'workloads', 'many-maps.c')]);
  return out;
}

async function main(): Promise<void> {
  const ns = process.argv.slice(2).map(Number).filter((n) => Number.isInteger(n) && n >= 0);
  const sizes = ns.length ? ns : [0, 1000, 4000, 10000];
  const env = process.env.FERRY_BENCH_RESTORE;
  const modes: RestoreMode[] = env === 'lazy' || env === 'eager' ? [env] : ['lazy', 'eager'];
  requireBuilt();
  const binary = buildWorkload();
  const work = makeTempDir('ferry-bench-vma-');
  const hosts = await createTwoHosts();
  const dest = await startDestAgent(hosts);
  const runs: Run[] = [];
  try {
    const plan = modes.flatMap((mode) => {
      const shared = join(work, `state-${mode}-shared`);
      return [
        ...sizes.map((n) => ({ mode, n, stateDir: join(work, `state-${mode}-${n}`), history: false })),
        { mode, n: sizes.at(-1)!, stateDir: shared, history: false },
        { mode, n: sizes.at(-1)!, stateDir: shared, history: true },
      ];
    });
    for (const [i, step] of plan.entries()) {
      const run = await runFerry(['run', '--json', '--name', `vma-cost-${i}`, '--', binary, join(work, `file-${i}`), String(step.n)], { host: hosts.src, timeoutMs: 20_000 });
      if (run.exitCode !== 0) throw new Error(`ferry run: ${describeResult(run)}`);
      const task = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { pid: number; launcherPid: number };
      const victims = [task.pid, task.launcherPid].map((pid) => ({ pid, start: processStartTime(pid) }));
      try {
        const want = 3 * step.n;
        await waitFor(() => mapsLines(task.pid) >= want || undefined, 60_000, `many-maps ${step.n} to map`);
        const vmas = mapsLines(task.pid);
        const r = await runMigrate(hosts, task.pid, dest, { args: ['--restore', step.mode], env: { FERRY_STATE_DIR: step.stateDir }, timeoutMs: 120_000 });
        if (r.exitCode !== 0 || !r.summary) throw new Error(`migrate of ${step.n}: ${describeResult(r)}`);
        victims.push({ pid: r.summary.restoredPid, start: processStartTime(r.summary.restoredPid) });
        const decision = r.lines.filter((l) => l.kind === 'decision').at(-1);
        const d = decision?.kind === 'decision' ? decision : undefined;
        const s = r.summary;
        const one: Run = { mode: step.mode, n: step.n, vmas, downtimeMs: s.downtimeMs, expectedMs: d?.expectedDowntimeMs, fixedCostMs: d?.fixedCostMs, phases: s.phases as Record<string, number | undefined>, history: step.history };
        runs.push(one);
        const ph = Object.entries(one.phases).map(([k, v]) => `${k.replace(/Ms$/, '')} ${Math.round(v ?? 0)}`).join(', ');
        console.log(
          `${step.mode.padEnd(5)}  N ${String(step.n).padStart(6)}  VMAs ${String(vmas).padStart(6)}  downtime ${Math.round(s.downtimeMs)} ms (${ph})  expected ${d?.expectedDowntimeMs === undefined ? '?' : Math.round(d.expectedDowntimeMs)} ms${step.history ? ' (learned from history)' : ''}  original gone ${Math.round(s.originalExitMs)} ms after SIGKILL`,
        );
      } finally {
        for (const v of victims) if (v.start !== undefined && processStartTime(v.pid) === v.start) process.kill(v.pid, 'SIGKILL');
        await waitFor(() => victims.every((v) => readPidState(v.pid) === undefined || readPidState(v.pid) === 'Z' || processStartTime(v.pid) !== v.start), 15_000, 'the runs processes to be gone').catch(() => undefined);
      }
    }
  } finally {
    await dest.stop();
    await hosts.destroy();
    rmSync(work, { recursive: true, force: true });
  }
  for (const mode of modes) {
    // Least squares of downtime = a + c * VMAs over the fresh-state runs of this mode.
    const pts = runs.filter((r) => r.mode === mode && !r.history);
    if (pts.length === 0) continue;
    const mx = pts.reduce((s, r) => s + r.vmas, 0) / pts.length;
    const my = pts.reduce((s, r) => s + r.downtimeMs, 0) / pts.length;
    const sxx = pts.reduce((s, r) => s + (r.vmas - mx) ** 2, 0);
    const c = sxx > 0 ? pts.reduce((s, r) => s + (r.vmas - mx) * (r.downtimeMs - my), 0) / sxx : 0;
    const a = my - c * mx;
    console.log(`fit (${mode}): downtime = ${a.toFixed(0)} ms + ${(c * 1000).toFixed(1)} µs per VMA`);
    for (const r of runs.filter((x) => x.mode === mode)) {
      if (r.expectedMs) console.log(`  ${r.vmas} VMAs${r.history ? ' (history)' : ''}: downtime / expected = ${(r.downtimeMs / r.expectedMs).toFixed(2)}`);
    }
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
