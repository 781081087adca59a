/**
 * The metrics move while a migration runs (issue 14): both agents' /metrics scraped every 150 ms during a real
 * migration between the two network-namespace hosts show the rounds going by, the phase changing, the dirty set
 * falling and the session open then closed on the dest; `ferry migrate --metrics` serves the same while an
 * in-process migration runs and `--pushgateway` pushes its final figures (to a small recording server here;
 * the real Pushgateway is the Prometheus test's). The same migration's logs: every line both agents wrote
 * parses as JSON, and the migration's lines carry side, migration id, phase and, in the pre-copy, the round.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PHASES } from '../../shared/phases.js';
import { migrationRecords, parseAgentLog, type AgentLogRecord } from '../../testbed/agent-log.js';
import { pollMetricsIn, type MetricsPoller, type PolledScrape } from '../../testbed/metrics-scrape.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  hasCriu,
  makeTempDir,
  requireBuilt,
  startDestAgent,
  startMigrate,
  startMigrateVia,
  startSourceAgentDaemon,
  type DestAgentHandle,
  type FerryResult,
  type Host,
  type SourceAgentDaemonHandle,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

// Round 0 of 64 MiB at 200 Mbit/s lasts ~2.7 s and the task dirties 4 MiB/s: several rounds, each long enough
// for a 150 ms scrape to see.
const MIB = 64;
const DIRTY_MIB_PER_S = 4;
const MIGRATE_ARGS = ['--bandwidth', '200mbit'];
const EVERY_MS = 150;
// Fresh network namespace: nothing else listens on its loopback.
const CLI_METRICS_PORT = 19464;
const PUSHGATEWAY_PORT = 19091;

const runnable =
  canRun('e2e metrics', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('tc'), hasCommand('gcc'), hasCommand('unshare')) && canRun('e2e metrics (CRIU)', hasCriu());

/** The values of one sample over the scrapes of one URL, in order (scrapes without it left out). */
function series(scrapes: readonly PolledScrape[], url: number, sample: string): number[] {
  return scrapes.filter((s) => s.url === url && sample in s.samples).map((s) => s.samples[sample]!);
}

/** Phases seen at 1 in ferry_source_migration_phase, in the order first seen. */
function phasesSeen(scrapes: readonly PolledScrape[], url: number): string[] {
  const seen: string[] = [];
  for (const s of scrapes.filter((x) => x.url === url)) {
    for (const [k, v] of Object.entries(s.samples)) {
      const m = /^ferry_source_migration_phase\{phase="([^"]+)"\}$/.exec(k);
      if (m && v === 1 && !seen.includes(m[1]!)) seen.push(m[1]!);
    }
  }
  return seen;
}

function isNonDecreasing(xs: readonly number[]): boolean {
  return xs.every((x, i) => i === 0 || x >= xs[i - 1]!);
}

/** The source side's expectations, the same for the daemon and for `ferry migrate --metrics`. */
function expectSourceSeries(scrapes: readonly PolledScrape[], url: number, result: FerryResult): void {
  const s = result.summary!;
  const rounds = series(scrapes, url, 'ferry_source_precopy_rounds_total');
  const round = series(scrapes, url, 'ferry_source_precopy_round');
  console.log(`  source: ${rounds.length} scrapes; rounds_total ${[...new Set(rounds)].join(' -> ')}; phases ${phasesSeen(scrapes, url).join(' -> ')}`);
  expect(s.rounds.length, 'enough rounds to see some go by').toBeGreaterThanOrEqual(2);
  // The rounds go by: more than one value seen, never going back, ending at the summary's count.
  expect(isNonDecreasing(rounds)).toBe(true);
  expect(new Set(rounds).size).toBeGreaterThanOrEqual(2);
  expect(rounds.at(-1)).toBe(s.rounds.length);
  expect(Math.max(...round)).toBeGreaterThan(Math.min(...round));
  // The phase changes, in the machine's order, and precopy is among them.
  const phases = phasesSeen(scrapes, url);
  expect(phases).toContain('precopy');
  expect(phases.length).toBeGreaterThanOrEqual(2);
  const order = ['negotiate', 'prepare', 'precopy', 'freeze', 'final-delta', 'restore', 'commit', 'fill'];
  expect(phases.map((p) => order.indexOf(p))).toEqual([...phases.map((p) => order.indexOf(p))].sort((a, b) => a - b));
  // The dirty set falls: round 0 sends everything, the last round far less.
  const dirty = series(scrapes, url, 'ferry_source_dirty_pages').filter((v) => v > 0);
  expect(dirty.at(-1)!).toBeLessThan(dirty[0]!);
  expect(series(scrapes, url, 'ferry_source_migrations_in_flight')).toContain(1);
}

/**
 * Both agents' logs of one migration (issue 14): every line parses as JSON (parseAgentLog throws on one that
 * does not); each of the migration's lines names its side, the id and a phase; those of the pre-copy (after
 * its 'phase' line) carry the round, and the rounds are the summary's.
 */
function expectMigrationLogs(sourceLog: string, destLog: string, result: FerryResult): void {
  const s = result.summary!;
  const src = migrationRecords(parseAgentLog(sourceLog, 'the source agent'), s.migrationId);
  const dst = migrationRecords(parseAgentLog(destLog, 'the dest agent'), s.migrationId);
  const inPrecopy = (recs: AgentLogRecord[]): AgentLogRecord[] => recs.filter((r) => r.phase === 'precopy' && r.msg !== 'phase');
  console.log(`  logs: source ${src.length} lines of the migration (${inPrecopy(src).length} in the pre-copy), dest ${dst.length} (${inPrecopy(dst).length})`);
  for (const [side, recs] of [['source', src], ['dest', dst]] as const) {
    expect(recs.length, `${side}: lines of the migration`).toBeGreaterThanOrEqual(3);
    for (const r of recs) {
      expect([r.side, typeof r.ts, typeof r.level, typeof r.msg], JSON.stringify(r)).toEqual([side, 'string', 'string', 'string']);
      expect(PHASES, JSON.stringify(r)).toContain(r.phase);
    }
    const precopy = inPrecopy(recs);
    expect(precopy.length, `${side}: lines in the pre-copy`).toBeGreaterThanOrEqual(2);
    for (const r of precopy) expect(Number.isInteger(r.round), JSON.stringify(r)).toBe(true);
  }
  const rounds = s.rounds.map((_, i) => i);
  expect(src.filter((r) => r.msg === 'round done').map((r) => r.round)).toEqual(rounds);
  expect(src.filter((r) => r.msg === 'decision').map((r) => r.round)).toEqual(rounds);
  // The dest sees a round when its first batch comes (the final delta's pages are the round after the last).
  const destRounds = dst.filter((r) => r.msg === 'receiving a round').map((r) => r.round as number);
  expect(destRounds[0]).toBe(0);
  expect(destRounds.length).toBeGreaterThanOrEqual(2);
  expect(destRounds.every((r, i) => i === 0 || r > destRounds[i - 1]!)).toBe(true);
  expect(destRounds.at(-1)!).toBeLessThanOrEqual(s.rounds.length);
}

/** A one-route HTTP server inside the host that answers 200 to every request and reports it on stdout. */
async function startRecordingServer(host: Host, port: number): Promise<{ requests: { method: string; url: string; body: string }[]; stop(): Promise<void> }> {
  const script = `
    require('node:http').createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => {
        process.stdout.write(JSON.stringify({ method: req.method, url: req.url, body }) + '\\n');
        res.writeHead(200).end();
      });
    }).listen(${port}, '127.0.0.1', () => process.stdout.write('listening\\n'));`;
  const child: ChildProcess = spawn('nsenter', [`--net=${host.netns}`, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const requests: { method: string; url: string; body: string }[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the recording server did not listen within 10 s')), 10_000);
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l === 'listening') {
        clearTimeout(timer);
        resolve();
      } else requests.push(JSON.parse(l) as { method: string; url: string; body: string });
    });
    child.once('exit', () => reject(new Error('the recording server exited')));
  });
  return {
    requests,
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe.skipIf(!runnable)('metrics while a migration runs', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let daemon: SourceAgentDaemonHandle | undefined;
  const tasks: MemtestHandle[] = [];
  const pollers: MetricsPoller[] = [];
  let stateDir: string | undefined;

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-metrics-state-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts, { metrics: true });
    daemon = await startSourceAgentDaemon(hosts, { allowDests: [dest.address], metrics: true });
  }, 60_000);

  afterAll(async () => {
    for (const p of pollers) await p.stop();
    for (const t of tasks) await t.stop();
    await daemon?.stop();
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  async function memtest(name: string): Promise<MemtestHandle> {
    const task = await startMemtest({ name: `${name}-${process.pid}`, mib: MIB, dirtyMibPerSec: DIRTY_MIB_PER_S, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    return task;
  }

  it('both agents, scraped every 150 ms, show the rounds, the phases and the dest session go by; their logs say where each line is', async () => {
    const task = await memtest('e2e-metrics-via');
    const src = `http://127.0.0.1:${daemon!.metricsPort}/metrics`;
    const dst = `http://${hosts!.dst.address}:${dest!.metricsPort}/metrics`;
    const poller = pollMetricsIn(hosts!.src, [src, dst], EVERY_MS, ['ferry_']);
    pollers.push(poller);
    const result = await startMigrateVia(hosts!, daemon!, task.rootPid, dest, { args: MIGRATE_ARGS, timeoutMs: 120_000 }).done;
    if (result.summary) task.adopt(result.summary.restoredPid);
    // One more scrape of each after the end.
    const after = poller.scrapes.length;
    const deadline = Date.now() + 5_000;
    while (poller.scrapes.length < after + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await poller.stop();
    expect(result.exitCode, describeResult(result)).toBe(0);
    const scrapes = poller.scrapes;
    // At least every 200 ms on average while it ran (the interval is 150 ms; the 2 cores are shared).
    expect(series(scrapes, 0, 'ferry_source_migrations_in_flight').length).toBeGreaterThanOrEqual(result.durationMs / 200 / 2);
    expectSourceSeries(scrapes, 0, result);
    const last = scrapes.filter((s) => s.url === 0).at(-1)!.samples;
    expect(last['ferry_source_migrations_in_flight']).toBe(0);
    expect(last['ferry_source_migrations_total{result="committed",phase="commit"}']).toBe(1);
    expect(last['ferry_source_downtime_seconds_count']).toBe(1);
    expect(last['ferry_source_last_downtime_seconds']).toBeCloseTo(result.summary!.downtimeMs / 1000, 3);
    expect(last['ferry_source_sent_bytes_total{phase="precopy"}']).toBe(result.summary!.precopyBytes);
    expect(Object.keys(last).some((k) => k.startsWith('ferry_build_info{') && k.includes('side="source"'))).toBe(true);
    // The dest: the session open (receiving at first), then closed and counted committed; one restore timed.
    const open = series(scrapes, 1, 'ferry_dest_sessions_in_flight');
    console.log(`  dest: ${open.length} scrapes; sessions in flight ${[...new Set(open)].join(' -> ')}`);
    expect(open).toContain(1);
    expect(series(scrapes, 1, 'ferry_dest_session_state{state="receiving"}')).toContain(1);
    const lastDest = scrapes.filter((s) => s.url === 1).at(-1)!.samples;
    expect(lastDest['ferry_dest_sessions_in_flight']).toBe(0);
    expect(lastDest['ferry_dest_sessions_total{result="committed"}']).toBe(1);
    expect(lastDest['ferry_dest_restore_duration_seconds_count']).toBe(1);
    expect(Object.keys(lastDest).some((k) => k.startsWith('ferry_build_info{') && k.includes('side="dest"'))).toBe(true);
    expectMigrationLogs(daemon!.stderr(), dest!.stderr(), result);
  }, 180_000);

  it('ferry migrate --metrics serves the migration while it runs; --pushgateway pushes its final figures', async () => {
    const task = await memtest('e2e-metrics-cli');
    const gateway = await startRecordingServer(hosts!.src, PUSHGATEWAY_PORT);
    try {
      const poller = pollMetricsIn(hosts!.src, [`http://127.0.0.1:${CLI_METRICS_PORT}/metrics`], EVERY_MS, ['ferry_']);
      pollers.push(poller);
      const run = startMigrate(hosts!, task.rootPid, dest, {
        args: [...MIGRATE_ARGS, '--metrics', `127.0.0.1:${CLI_METRICS_PORT}`, '--pushgateway', `http://127.0.0.1:${PUSHGATEWAY_PORT}`],
        timeoutMs: 120_000,
      });
      const result = await run.done;
      if (result.summary) task.adopt(result.summary.restoredPid);
      await poller.stop();
      expect(result.exitCode, describeResult(result)).toBe(0);
      expect(result.stderr).toContain(`metrics on http://127.0.0.1:${CLI_METRICS_PORT}/metrics`);
      expectSourceSeries(poller.scrapes, 0, result);
      // Served while it ran only: the CLI stopped serving before it exited.
      expect(poller.failures).toBeGreaterThan(0);
      expect(gateway.requests.map((r) => [r.method, r.url])).toEqual([['PUT', `/metrics/job/ferry_migrate/instance/${encodeURIComponent(hostname())}`]]);
      const body = gateway.requests[0]!.body;
      expect(body).toMatch(/^ferry_source_migrations_total\{result="committed",phase="commit"\} 1$/m);
      expect(body).toMatch(/^ferry_source_downtime_seconds_count 1$/m);
      expect(body).toMatch(new RegExp(`^ferry_source_precopy_rounds_total ${result.summary!.rounds.length}$`, 'm'));
      expect(body).toMatch(/^ferry_build_info\{.*side="source"\} 1$/m);
      // The migration's figures only, not this process's.
      expect(body).not.toMatch(/^process_/m);
    } finally {
      await gateway.stop();
    }
  }, 180_000);
});
