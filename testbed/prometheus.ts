/**
 * A real Prometheus and Pushgateway (Debian's packages, scripts/setup.sh installs them) run by a test inside one
 * host's network namespace, as an operator's would run beside the agents: from there it reaches the agents'
 * loopback metrics (the source agent's) and the other host's address (the dest agent's), and no scrape or push
 * leaves the namespaces. Each start gets free loopback ports of that namespace, a temporary config and data dir
 * (scrape every second), and stop() ends both servers and removes the dir.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { httpGetIn } from './metrics-scrape.js';
import type { Host } from './netns-hosts.js';
import { makeTempDir } from './temp-dirs.js';
import { waitFor } from './wait-for.js';

const execFileAsync = promisify(execFile);

const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 10_000;

export interface ScrapeTarget {
  /** The job label, e.g. ferry-source. */
  job: string;
  /** HOST:PORT of a /metrics, as seen from the Prometheus's host. */
  address: string;
}

export interface PrometheusOptions {
  /** The host (network namespace) both servers run in. */
  host: Host;
  targets: readonly ScrapeTarget[];
  /** Rule files to load (e.g. deploy/prometheus/ferry-alerts.yml). */
  ruleFiles?: readonly string[];
}

/** One series of an instant query's answer (resultType vector). */
export interface InstantSample {
  metric: Record<string, string>;
  value: number;
}

/** One series of a range query's answer (resultType matrix): [unix seconds, value] pairs. */
export interface RangeSeries {
  metric: Record<string, string>;
  values: [number, number][];
}

export interface PrometheusHandle {
  readonly host: Host;
  /** http://127.0.0.1:PORT of the Prometheus, inside the host. */
  readonly url: string;
  /** http://127.0.0.1:PORT of the Pushgateway, inside the host (also scraped by the Prometheus, job pushgateway). */
  readonly pushgatewayUrl: string;
  /** An instant query (at `time`, unix seconds, or now). */
  query(promql: string, time?: number): Promise<InstantSample[]>;
  /** A range query from start to end (unix seconds) at `stepSeconds`. */
  queryRange(promql: string, start: number, end: number, stepSeconds: number): Promise<RangeSeries[]>;
  /** The targets' health as Prometheus sees it: job -> up. */
  targetsUp(): Promise<Record<string, boolean>>;
  /** The rules Prometheus loaded, with their health after the last evaluation. */
  rules(): Promise<{ name: string; type: 'alerting' | 'recording'; health: string; lastError?: string }[]>;
  /** The Pushgateway's own /metrics text (what it holds, with its push_time_seconds). */
  pushgatewayMetrics(): Promise<string>;
  /** SIGTERM to both (SIGKILL after 10 s), then removes the config and data dir. Idempotent. */
  stop(): Promise<void>;
}

/** Two ports free on the host's loopback (the namespace is the test's own: nothing else binds meanwhile). */
async function freePorts(host: Host, n: number): Promise<number[]> {
  const script = `const net = require('node:net');
const servers = Array.from({ length: ${n} }, () => net.createServer());
Promise.all(servers.map((s) => new Promise((ok) => s.listen(0, '127.0.0.1', ok)))).then(() => {
  process.stdout.write(servers.map((s) => s.address().port).join(' '));
  for (const s of servers) s.close();
});`;
  const { stdout } = await execFileAsync('nsenter', [`--net=${host.netns}`, process.execPath, '-e', script], { timeout: 10_000 });
  return stdout.trim().split(' ').map(Number);
}

function configYaml(opts: PrometheusOptions, pushgateway: string): string {
  const job = (name: string, address: string, extra = ''): string =>
    `  - job_name: ${JSON.stringify(name)}\n${extra}    static_configs:\n      - targets: [${JSON.stringify(address)}]\n`;
  return [
    '# Written by testbed/prometheus.ts for one test run.',
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    ...(opts.ruleFiles?.length ? ['rule_files:', ...opts.ruleFiles.map((f) => `  - ${JSON.stringify(f)}`)] : []),
    'scrape_configs:',
    ...opts.targets.map((t) => job(t.job, t.address)),
    // honor_labels: the pushed job/instance labels stay (as the Pushgateway's docs ask).
    job('pushgateway', pushgateway, '    honor_labels: true\n'),
  ].join('\n');
}

interface Server {
  child: ChildProcess;
  exited: Promise<void>;
  output: () => string;
}

function startServer(host: Host, argv: string[]): Server {
  const child = spawn('nsenter', [`--net=${host.netns}`, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (b: Buffer): void => {
    // The last 64 KiB is enough to say why it did not start.
    out = (out + b.toString()).slice(-65_536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((done) => {
    child.once('exit', () => done());
    child.once('error', (err) => {
      out += `\nspawn failed: ${err.message}`;
      done();
    });
  });
  return { child, exited, output: () => out };
}

async function stopServer(s: Server): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), STOP_GRACE_MS);
  await s.exited;
  clearTimeout(timer);
}

async function getJson(host: Host, url: string): Promise<unknown> {
  const body = JSON.parse(await httpGetIn(host, url)) as { status: string; data: unknown; error?: string };
  if (body.status !== 'success') throw new Error(`Prometheus ${url}: ${body.error ?? body.status}`);
  return body.data;
}

/** Starts the Pushgateway, then a Prometheus that scrapes the targets and the Pushgateway every second; resolves
 * once both answer /-/ready. */
export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusHandle> {
  const { host } = opts;
  const dir = makeTempDir('ferry-e2e-prom-');
  const servers: Server[] = [];
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      for (const s of servers.reverse()) await stopServer(s);
      rmSync(dir, { recursive: true, force: true });
    })());

  try {
    const [promPort, pushPort] = await freePorts(host, 2);
    const url = `http://127.0.0.1:${promPort}`;
    const pushgatewayUrl = `http://127.0.0.1:${pushPort}`;
    const config = join(dir, 'prometheus.yml');
    writeFileSync(config, configYaml(opts, `127.0.0.1:${pushPort}`));
    // Debian's build persists to /var/lib/prometheus/pushgateway.data unless told: keep it in our dir.
    servers.push(
      startServer(host, ['prometheus-pushgateway', `--web.listen-address=127.0.0.1:${pushPort}`, `--persistence.file=${join(dir, 'pushgateway.data')}`]),
    );
    servers.push(
      startServer(host, [
        'prometheus',
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        '--log.level=warn',
      ]),
    );
    const ready = async (base: string, s: Server): Promise<boolean> => {
      if (s.child.exitCode !== null) throw new Error(`${s.child.spawnargs.join(' ')} exited ${s.child.exitCode}:\n${s.output()}`);
      return httpGetIn(host, `${base}/-/ready`, 2_000).then(
        () => true,
        () => false,
      );
    };
    await waitFor(() => ready(pushgatewayUrl, servers[0]!), START_TIMEOUT_MS, 'the Pushgateway to answer /-/ready');
    await waitFor(() => ready(url, servers[1]!), START_TIMEOUT_MS, 'Prometheus to answer /-/ready');

    return {
      host,
      url,
      pushgatewayUrl,
      query: async (promql, time) => {
        const q = new URLSearchParams({ query: promql, ...(time === undefined ? {} : { time: String(time) }) });
        const data = (await getJson(host, `${url}/api/v1/query?${q.toString()}`)) as { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
        if (data.resultType !== 'vector') throw new Error(`${promql}: a ${data.resultType}, not a vector`);
        return data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
      },
      queryRange: async (promql, start, end, stepSeconds) => {
        const q = new URLSearchParams({ query: promql, start: String(start), end: String(end), step: String(stepSeconds) });
        const data = (await getJson(host, `${url}/api/v1/query_range?${q.toString()}`)) as { result: { metric: Record<string, string>; values: [number, string][] }[] };
        return data.result.map((r) => ({ metric: r.metric, values: r.values.map(([t, v]): [number, number] => [t, Number(v)]) }));
      },
      targetsUp: async () => {
        const data = (await getJson(host, `${url}/api/v1/targets?state=active`)) as { activeTargets: { labels: Record<string, string>; health: string }[] };
        return Object.fromEntries(data.activeTargets.map((t) => [t.labels.job ?? '', t.health === 'up']));
      },
      rules: async () => {
        const data = (await getJson(host, `${url}/api/v1/rules`)) as { groups: { rules: { name: string; type: 'alerting' | 'recording'; health: string; lastError?: string }[] }[] };
        return data.groups.flatMap((g) => g.rules.map((r) => ({ name: r.name, type: r.type, health: r.health, ...(r.lastError ? { lastError: r.lastError } : {}) })));
      },
      pushgatewayMetrics: () => httpGetIn(host, `${pushgatewayUrl}/metrics`),
      stop,
    };
  } catch (err) {
    const logs = servers.map((s) => `${s.child.spawnargs.slice(2, 3).join('')}: ${s.output().slice(-2_000)}`).join('\n');
    await stop();
    throw new Error(`Prometheus did not start: ${(err as Error).message}\n${logs}`, { cause: err });
  }
}
