/**
 * A real Prometheus (Debian's package) scraping both agents every second during a real migration between the
 * two network-namespace hosts, then asked over its HTTP API with PromQL, as an operator's dashboard would: the
 * round series was seen rising, the dirty set fell, one downtime was observed, the migrations counter rose by one
 * with the committed result (and the dest's sessions too), bytes split by phase, nothing in flight at the end,
 * and no alert of deploy/prometheus/ fired. Both agents' populated /metrics pass `promtool check metrics`, every
 * family the rules and the dashboard use is exported, and a CLI migration's `--pushgateway` summary reaches a
 * real Pushgateway (and Prometheus through it).
 *
 * The workload converges in several rounds of a second or more, so that a scrape every second sees them go by:
 * 24 MiB under --bandwidth 2MiB (round 0 ~12 s), whose first 12 MiB are rewritten at 1 MiB/s: each later round
 * finds about a third of the one before dirty (measured: the task writes ~60 % of its nominal rate), so rounds
 * 1 and 2 last ~4 s and ~1 s and the policy freezes at round 3 or 4. FERRY_CONVERGENCE_SVG=PATH writes the migration's picture there (docs/convergence.svg), FERRY_DASHBOARD_SVG=PATH the dashboard's (docs/dashboard.svg).
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MigrationSummary } from '../../source-agent/migration/events.js';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { metricsFindings, PROM_CLIENT_FINDINGS } from '../../testbed/promtool.js';
import { startPrometheus, type InstantSample, type PrometheusHandle } from '../../testbed/prometheus.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { esc as escapeXml, renderTimeSeries } from '../../testbed/time-series-svg.js';
import { renderDashboard, type DrawnPanel } from '../../testbed/dashboard-svg.js';
import { fetchPanel, fillVariables, loadDashboard } from '../../testbed/grafana-dashboard.js';
import {
  createTwoHosts,
  describeResult,
  hasCriu,
  httpGetIn,
  makeTempDir,
  requireBuilt,
  runMigrate,
  runMigrateVia,
  startDestAgent,
  startSourceAgentDaemon,
  type DestAgentHandle,
  type SourceAgentDaemonHandle,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { waitFor } from '../../testbed/wait-for.js';
import { startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const runnable =
  canRun('e2e prometheus', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare')) &&
  canRun('e2e prometheus (scripts/setup.sh installs Debian prometheus and prometheus-pushgateway)', hasCommand('prometheus'), hasCommand('prometheus-pushgateway'), hasCommand('promtool')) &&
  canRun('e2e prometheus (CRIU)', hasCriu());

const DEPLOY = join(REPO_ROOT, 'deploy');
const WORKLOAD = { mib: 24, hotMib: 12, dirtyMibPerSec: 1 };
const BANDWIDTH = '2MiB';

describe.skipIf(!runnable)('a real Prometheus scraping both agents during a migration', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let daemon: SourceAgentDaemonHandle | undefined;
  let prom: PrometheusHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-prom-state-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts, { metrics: true });
    daemon = await startSourceAgentDaemon(hosts, { allowDests: [dest.address], metrics: true });
    // In the src host: it reaches the source agent's loopback metrics and the dest's address over the veth.
    prom = await startPrometheus({
      host: hosts.src,
      targets: [
        { job: 'ferry-source', address: `127.0.0.1:${daemon.metricsPort}` },
        { job: 'ferry-dest', address: `${hosts.dst.address}:${dest.metricsPort}` },
      ],
      ruleFiles: [join(DEPLOY, 'prometheus', 'ferry-rules.yml'), join(DEPLOY, 'prometheus', 'ferry-alerts.yml')],
    });
    // Both agents scraped at least once before the migration starts: its window's first sample is a baseline.
    await waitFor(async () => (await prom!.query('up{job=~"ferry-source|ferry-dest"} == 1')).length === 2, 20_000, 'a first successful scrape of both agents');
  }, 90_000);

  afterAll(async () => {
    for (const t of tasks) await t.stop();
    await prom?.stop();
    await daemon?.stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  /** Every query and its answer, printed as the test goes (the note quotes them). */
  const query = async (promql: string, time: number): Promise<InstantSample[]> => {
    const r = await prom!.query(promql, time);
    const shown = r.map((s) => `${JSON.stringify(Object.fromEntries(Object.entries(s.metric).filter(([k]) => !['instance'].includes(k))))} ${s.value}`);
    console.log(`PromQL ${promql}\n  -> ${shown.join('\n  -> ') || '(empty)'}`);
    return r;
  };
  const scalar = async (promql: string, time: number): Promise<number> => {
    const r = await query(promql, time);
    expect(r, promql).toHaveLength(1);
    return r[0]!.value;
  };
  const byLabel = (r: InstantSample[], label: string): Record<string, number> => Object.fromEntries(r.map((s) => [s.metric[label] ?? '', s.value]));

  let migrated: { summary: MigrationSummary; t0: number; tEnd: number } | undefined;

  it('PromQL over the scraped series: rounds rising, dirty pages falling, one downtime, one committed migration', async () => {
    const task = await startMemtest({ name: `prom-${process.pid}`, ...WORKLOAD, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    const t0 = Date.now() / 1000;
    const r = await runMigrateVia(hosts!, daemon!, task.rootPid, dest, { args: ['--bandwidth', BANDWIDTH], timeoutMs: 120_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    task.adopt(s.restoredPid);
    expect((await task.verify(s.restoredPid)).bad_pages).toBe(0);
    console.log(`migration: ${s.rounds.length} rounds, dirty pages ${s.rounds.map((x) => x.dirtyPages).join(' ')}, downtime ${s.downtimeMs} ms`);
    expect(s.rounds.length).toBeGreaterThanOrEqual(3);

    // The scrape after the end: bounded, then the window is closed.
    await waitFor(async () => (await prom!.query('sum(ferry_source_migrations_total{job="ferry-source",result="committed"})')).some((x) => x.value >= 1), 15_000, 'a scrape of the committed migration');
    await waitFor(async () => (await prom!.query('sum(ferry_dest_sessions_total{result="committed"})')).some((x) => x.value >= 1), 15_000, "a scrape of the dest's committed session");
    const tEnd = Math.ceil(Date.now() / 1000);
    // The window reaches back to the migration's start (tEnd - W <= t0; a scrape before it was waited for in
    // beforeAll).
    const w = Math.ceil(tEnd - t0);
    const window = `${w}s`;
    // A counter's rise over the migration as max - min over a range reaching 5 s before it: a range ignores the
    // staleness a failed scrape leaves, where `x - x offset W` found no sample at its instant (the dest's scrape
    // timed out at the migration's start once, on the busy cores: an empty answer).
    const range = `${w + 5}s`;
    migrated = { summary: s, t0, tEnd };

    // The round series was seen rising: each scrape a round later or the same, several distinct rounds seen.
    const rounds = await prom!.queryRange('ferry_source_precopy_round{job="ferry-source"}', Math.floor(t0), tEnd, 1);
    const seen = rounds[0]!.values.map(([, v]) => v);
    console.log(`PromQL query_range ferry_source_precopy_round [${w} s, step 1 s]\n  -> ${seen.join(' ')}`);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThanOrEqual(seen[i - 1]!);
    expect(new Set(seen).size).toBeGreaterThanOrEqual(3);
    expect(seen.at(-1)).toBe(s.rounds.length - 1);
    // Every round counted once (the counter's rise over the window, exact: no extrapolation).
    expect(await scalar(`(max_over_time(ferry_source_precopy_rounds_total{job="ferry-source"}[${range}]) - min_over_time(ferry_source_precopy_rounds_total{job="ferry-source"}[${range}]))`, tEnd)).toBe(s.rounds.length);

    // Round 0 (~12 s) is seen moving while it runs: the pre-copy bytes rise at several scrapes before it ends.
    const sentRange = await prom!.queryRange('sum(ferry_source_sent_bytes_total{job="ferry-source",phase="precopy"})', Math.floor(t0), tEnd, 1);
    const roundsRange = await prom!.queryRange('ferry_source_precopy_rounds_total{job="ferry-source"}', Math.floor(t0), tEnd, 1);
    const roundsAtStart = roundsRange[0]!.values[0]![1];
    const firstRoundEnd = roundsRange[0]!.values.find(([, v]) => v > roundsAtStart)![0];
    const duringRound0 = new Set(sentRange[0]!.values.filter(([t]) => t < firstRoundEnd).map(([, v]) => v));
    console.log(`pre-copy bytes seen during round 0 (before ${firstRoundEnd - Math.floor(t0)} s): ${[...duringRound0].join(' ')}`);
    expect(duringRound0.size).toBeGreaterThanOrEqual(4);

    // Dirty pages fell: the largest dirty set seen in the window is over twice the last round's.
    const maxDirty = await scalar(`max_over_time(ferry_source_dirty_pages{job="ferry-source"}[${window}])`, tEnd);
    const lastDirty = await scalar('ferry_source_dirty_pages{job="ferry-source"}', tEnd);
    expect(maxDirty).toBe(Math.max(...s.rounds.map((x) => x.dirtyPages)));
    expect(lastDirty).toBe(s.rounds.at(-1)!.dirtyPages);
    expect(maxDirty).toBeGreaterThan(2 * lastDirty);

    // One downtime observed, the one the CLI reported; the expectation it froze on beside it.
    expect(await scalar(`(max_over_time(ferry_source_downtime_seconds_count{job="ferry-source"}[${range}]) - min_over_time(ferry_source_downtime_seconds_count{job="ferry-source"}[${range}]))`, tEnd)).toBe(1);
    expect(await scalar(`(max_over_time(ferry_source_downtime_seconds_sum{job="ferry-source"}[${range}]) - min_over_time(ferry_source_downtime_seconds_sum{job="ferry-source"}[${range}]))`, tEnd)).toBeCloseTo(s.downtimeMs / 1000, 3);
    expect(await scalar('ferry_source_last_downtime_seconds{job="ferry-source"}', tEnd)).toBeCloseTo(s.downtimeMs / 1000, 3);
    expect(await scalar('ferry_source_expected_downtime_seconds{job="ferry-source"}', tEnd)).toBeGreaterThan(0);
    expect(await scalar('ferry_source_downtime_budget_seconds{job="ferry-source"}', tEnd)).toBeGreaterThan(0);

    // The migrations counter rose by one, with the committed result; the dest's sessions likewise.
    const results = byLabel(await query(`sum by (result) ((max_over_time(ferry_source_migrations_total{job="ferry-source"}[${range}]) - min_over_time(ferry_source_migrations_total{job="ferry-source"}[${range}])))`, tEnd), 'result');
    expect(results).toMatchObject({ committed: 1, 'rolled-back': 0 });
    expect(Object.values(results).reduce((a, b) => a + b, 0)).toBe(1);
    expect(await scalar(`sum((max_over_time(ferry_dest_sessions_total{result="committed"}[${range}]) - min_over_time(ferry_dest_sessions_total{result="committed"}[${range}])))`, tEnd)).toBe(1);

    // Bytes by phase: pre-copy as the rounds sent them, the freeze's bytes under downtime.
    const bytes = byLabel(await query(`sum by (phase) ((max_over_time(ferry_source_sent_bytes_total{job="ferry-source"}[${range}]) - min_over_time(ferry_source_sent_bytes_total{job="ferry-source"}[${range}])))`, tEnd), 'phase');
    expect(bytes.precopy).toBe(s.rounds.reduce((a, x) => a + x.bytesSent, 0));
    expect(bytes.downtime).toBeGreaterThan(0);

    // In flight during the window, in pre-copy at some scrape, idle at the end.
    expect(await scalar(`max_over_time(ferry_source_migrations_in_flight{job="ferry-source"}[${window}])`, tEnd)).toBe(1);
    expect(await scalar(`max_over_time(ferry_source_migration_phase{job="ferry-source",phase="precopy"}[${window}])`, tEnd)).toBe(1);
    expect(await scalar('ferry_source_migrations_in_flight{job="ferry-source"}', tEnd)).toBe(0);
    expect(await scalar(`max_over_time(ferry_dest_sessions_in_flight[${window}])`, tEnd)).toBe(1);
    expect(byLabel(await query('ferry_build_info', tEnd), 'side')).toEqual({ source: 1, dest: 1 });

    // The alert rules were evaluated on these series (Prometheus loaded them): only what this migration explains
    // fired. On 2 busy cores the freeze sometimes overruns --max-downtime (measured 232 and 448 ms against 0.3 s):
    // then, and only then, FerryDowntimeOverBudget fires.
    const loaded = (await prom!.rules()).filter((x) => x.type === 'alerting');
    expect(loaded.length).toBeGreaterThan(5);
    expect(loaded.filter((x) => x.health !== 'ok')).toEqual([]);
    const overBudget = (await scalar('ferry_source_last_downtime_seconds{job="ferry-source"} > bool ferry_source_downtime_budget_seconds{job="ferry-source"}', tEnd)) === 1;
    // Rules run every second, after the scrape they read: two evaluations later the alerts have settled.
    await sleep(2_000);
    const firing = (await query('ALERTS{alertstate="firing"}', Date.now() / 1000)).map((a) => a.metric.alertname);
    expect(firing).toEqual(overBudget ? ['FerryDowntimeOverBudget'] : []);
  }, 180_000);

  it("promtool check metrics: both agents' /metrics after the migration", async () => {
    expect(migrated, 'the migration above ran').toBeDefined();
    for (const [side, host, url] of [
      ['source', hosts!.src, `http://127.0.0.1:${daemon!.metricsPort}/metrics`],
      ['dest', hosts!.dst, `http://${hosts!.dst.address}:${dest!.metricsPort}/metrics`],
    ] as const) {
      const text = await httpGetIn(host, url);
      const findings = await metricsFindings(text);
      console.log(`promtool check metrics (${side}, ${text.split('\n').length} lines): ${[...findings.ferry, ...findings.others].join('; ') || 'no finding'}`);
      expect(findings.ferry).toEqual([]);
      for (const f of findings.others) expect(PROM_CLIENT_FINDINGS).toContain(f);
    }
  });

  it('every ferry_* family the rules and the dashboard use is one the agents export', async () => {
    const exported = new Set<string>();
    for (const [host, url] of [
      [hosts!.src, `http://127.0.0.1:${daemon!.metricsPort}/metrics`],
      [hosts!.dst, `http://${hosts!.dst.address}:${dest!.metricsPort}/metrics`],
    ] as const) {
      for (const m of (await httpGetIn(host, url)).matchAll(/^(ferry_\w+)/gm)) exported.add(m[1]!);
    }
    const used = new Set<string>();
    for (const file of ['prometheus/ferry-rules.yml', 'prometheus/ferry-alerts.yml', 'grafana/ferry.json']) {
      // Recording rules' own names carry a colon: not exported, so not matched here.
      for (const m of readFileSync(join(DEPLOY, file), 'utf8').matchAll(/(?<![\w:])(ferry_[a-z0-9_]+)(?![\w:])/g)) used.add(m[1]!);
    }
    const missing = [...used].filter((n) => !exported.has(n));
    console.log(`families used by deploy/: ${used.size}, exported: ${exported.size}`);
    expect(missing).toEqual([]);

    // Every dashboard query is PromQL this Prometheus evaluates, Grafana's variables filled as Grafana would.
    const exprs = loadDashboard().panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    const failed: string[] = [];
    for (const { panel, expr } of exprs) await prom!.query(fillVariables(expr, { stepSeconds: 15, rangeSeconds: 300 })).catch((err: Error) => failed.push(`${panel}: ${err.message}`));
    console.log(`dashboard: ${exprs.length} queries evaluated`);
    expect(failed).toEqual([]);

    // The recording rules ran on the real series (every 15 s: bounded wait for one evaluation of each).
    const rules = await waitFor(
      async () => {
        const all = await prom!.rules();
        return all.every((x) => x.health !== 'unknown') && all;
      },
      20_000,
      'one evaluation of every rule',
    );
    expect(rules.filter((x) => x.health !== 'ok')).toEqual([]);
    const now = Date.now() / 1000;
    expect(byLabel(await query('job_instance_result:ferry_source_migrations:rate5m', now), 'result')).toHaveProperty('committed');
    expect((await query('job_instance_phase:ferry_source_sent_bytes:rate1m{phase="precopy"}', now)).length).toBeGreaterThan(0);
  });

  it("the dashboard's panels over the migration, fetched as Grafana would: each shows it (FERRY_DASHBOARD_SVG=PATH draws them)", async () => {
    expect(migrated, 'the migration above ran').toBeDefined();
    const { t0, tEnd, summary } = migrated!;
    const start = Math.floor(t0) - 2;
    const end = tEnd + 2;
    const dashboard = loadDashboard();
    const panels: DrawnPanel[] = [];
    for (const panel of dashboard.panels) panels.push({ panel, series: panel.type === 'row' ? [] : await fetchPanel(prom!, panel, start, end, 1) });
    const hasData = (p: DrawnPanel): boolean => p.series.some((s) => s.values.some(([, v]) => Number.isFinite(v)));
    console.log(`dashboard panels without data over the migration: ${panels.filter((p) => p.panel.type !== 'row' && !hasData(p)).map((p) => p.panel.title).join(', ') || 'none'}`);
    // What one committed migration must show on the dashboard (the rest needs a rollback, a throttle, post-copy or an hour of history).
    const mustShow = [
      'Migrations in flight', 'Dest sessions open', 'Source phase', 'Dest session state', 'Pre-copy round', 'Dirty pages per round',
      'Dirty rate vs transfer rate', 'Pages per second', 'Round duration (p50, p99)', 'Expected vs actual downtime', 'Bytes sent by phase',
      'Bytes by phase over the range', 'Results over time', 'Pages received', 'Agents up', 'CPU', 'Resident memory', 'Versions',
    ];
    const titles = panels.map((p) => p.panel.title);
    for (const title of mustShow) {
      expect(titles, `the dashboard has the panel "${title}"`).toContain(title);
      expect(hasData(panels.find((p) => p.panel.title === title)!), `the panel "${title}" shows data`).toBe(true);
    }
    // The round panel reads as the migration ran; the results panel saw the committed one.
    const roundSeries = panels.find((p) => p.panel.title === 'Pre-copy round')!.series;
    expect(Math.max(...roundSeries.flatMap((s) => s.values.map(([, v]) => v)))).toBe(summary.rounds.length - 1);
    expect(panels.find((p) => p.panel.title === 'Results over time')!.series.map((s) => s.metric.result)).toContain('committed');

    const svg = renderDashboard({
      title: `${dashboard.title}, over one migration (a real Prometheus scraping both agents every second)`,
      subtitle: [
        `deploy/grafana/ferry.json's panels and PromQL, drawn from the query API by testbed/dashboard-svg.ts (test/e2e/prometheus.test.ts)`,
        `${WORKLOAD.mib} MiB task rewriting ${WORKLOAD.hotMib} MiB at ${WORKLOAD.dirtyMibPerSec} MiB/s, --bandwidth ${BANDWIDTH}: ${summary.rounds.length} rounds, downtime ${Math.round(summary.downtimeMs)} ms`,
      ],
      start,
      end,
      stepSeconds: 1,
      panels,
    });
    for (const title of titles) expect(svg).toContain(escapeXml(title));
    const out = process.env.FERRY_DASHBOARD_SVG;
    if (out) {
      writeFileSync(out, svg);
      console.log(`wrote ${out} (${svg.length} bytes)`);
    }
  }, 60_000);

  it('ferry migrate --pushgateway: the Pushgateway holds the summary and Prometheus scraped it', async () => {
    const task = await startMemtest({ name: `prom-push-${process.pid}`, mib: 8, dirtyMibPerSec: 0, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--pushgateway', prom!.pushgatewayUrl], timeoutMs: 60_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    task.adopt(r.summary!.restoredPid);
    expect((await task.verify(r.summary!.restoredPid)).bad_pages).toBe(0);

    const held = await prom!.pushgatewayMetrics();
    const pushed = held.split('\n').filter((l) => l.startsWith('ferry_source_') && l.includes('job="ferry_migrate"'));
    console.log(`Pushgateway holds ${pushed.length} ferry_source_* samples of job ferry_migrate, e.g.\n  ${pushed.filter((l) => /migrations_total|last_downtime|sent_bytes/.test(l)).join('\n  ')}`);
    expect(pushed.some((l) => /^ferry_source_migrations_total\{.*result="committed".*\} 1$/.test(l))).toBe(true);
    expect(held).toMatch(/^push_time_seconds\{.*job="ferry_migrate".*\} \d/m);

    // Through the Pushgateway, Prometheus has the pushed summary under the pushed job (honor_labels).
    const at = await waitFor(
      async () => {
        const now = Date.now() / 1000;
        return (await prom!.query('ferry_source_migrations_total{job="ferry_migrate",result="committed"}', now)).some((x) => x.value === 1) && now;
      },
      15_000,
      'Prometheus to scrape the pushed summary',
    );
    expect(await scalar('sum(ferry_source_migrations_total{job="ferry_migrate",result="committed"})', at)).toBe(1);
    expect(await scalar('ferry_source_last_downtime_seconds{job="ferry_migrate"}', at)).toBeCloseTo(r.summary!.downtimeMs / 1000, 3);
  }, 90_000);

  it('renders the migration as Prometheus saw it (FERRY_CONVERGENCE_SVG=PATH)', async (ctx) => {
    const out = process.env.FERRY_CONVERGENCE_SVG;
    if (!out || !migrated) {
      console.warn(`SKIP the picture: ${out ? 'the migration above did not run' : 'FERRY_CONVERGENCE_SVG is not set'}`);
      ctx.skip();
      return;
    }
    const { t0, tEnd, summary } = migrated;
    // From just before the migration to a few scrapes after its end (Prometheus kept scraping meanwhile).
    const start = Math.floor(t0) - 2;
    const end = Math.min(Math.floor(Date.now() / 1000), tEnd + 4);
    const range = async (promql: string): Promise<[number, number][]> => {
      const r = await prom!.queryRange(promql, start, end, 1);
      return (r[0]?.values ?? []).map(([t, v]): [number, number] => [t - start, v]);
    };
    // The freeze lasts less than a scrape: mark the first scrape that saw the migration over.
    const inFlight = await range('ferry_source_migrations_in_flight{job="ferry-source"}');
    const ran = inFlight.findIndex(([, v]) => v > 0);
    const endedAt = ran < 0 ? undefined : inFlight.slice(ran).find(([, v]) => v === 0)?.[0];
    const marks = endedAt === undefined ? [] : [{ at: endedAt, label: 'committed' }];
    const svg = renderTimeSeries({
      title: 'One migration, as a Prometheus scraping both agents every second saw it',
      subtitle: [
        `${WORKLOAD.mib} MiB task rewriting its first ${WORKLOAD.hotMib} MiB at ${WORKLOAD.dirtyMibPerSec} MiB/s, --bandwidth ${BANDWIDTH}, scraped every second`,
        `${summary.rounds.length} rounds, dirty pages ${summary.rounds.map((x) => x.dirtyPages).join(' > ')}, downtime ${Math.round(summary.downtimeMs)} ms (test/e2e/prometheus.test.ts)`,
      ],
      panels: [
        { title: 'ferry_source_precopy_round', unit: '', marks, lines: [{ label: 'round', color: '#1f77b4', points: await range('ferry_source_precopy_round{job="ferry-source"}') }] },
        { title: 'ferry_source_dirty_pages (the last round\'s dirty set)', unit: '', marks, lines: [{ label: 'dirty pages', color: '#d62728', points: await range('ferry_source_dirty_pages{job="ferry-source"}') }] },
        {
          title: 'dirty rate vs transfer rate',
          unit: 'MiB/s',
          marks,
          lines: [
            { label: 'transfer', color: '#2ca02c', points: await range('ferry_source_transfer_rate_bytes_per_second{job="ferry-source"} / 1048576') },
            { label: 'dirty', color: '#ff7f0e', dash: '5,3', points: await range('ferry_source_dirty_rate_bytes_per_second{job="ferry-source"} / 1048576') },
          ],
        },
        {
          title: 'downtime: expected if frozen now (clipped), budget, actual',
          unit: 's',
          yMax: 1,
          marks,
          lines: [
            { label: 'expected', color: '#9467bd', points: await range('ferry_source_expected_downtime_seconds{job="ferry-source"}') },
            { label: 'budget', color: '#7f7f7f', dash: '2,3', points: await range('ferry_source_downtime_budget_seconds{job="ferry-source"}') },
            { label: 'actual', color: '#d62728', points: await range('ferry_source_last_downtime_seconds{job="ferry-source"}') },
          ],
        },
        {
          title: 'ferry_source_sent_bytes_total by phase',
          unit: 'MiB',
          marks,
          lines: [
            { label: 'precopy', color: '#1f77b4', points: await range('sum(ferry_source_sent_bytes_total{job="ferry-source",phase="precopy"}) / 1048576') },
            { label: 'downtime', color: '#d62728', points: await range('sum(ferry_source_sent_bytes_total{job="ferry-source",phase="downtime"}) / 1048576') },
          ],
        },
      ],
    });
    writeFileSync(out, svg);
    console.log(`wrote ${out} (${svg.length} bytes)`);
  });
});
