/**
 * `ferry migrate --metrics` / `--pushgateway` (issue 14): refused before anything is touched when malformed or
 * misplaced; a push is one bounded PUT whose failure is reported, never thrown; `ferry --version` prints the
 * versions of ferry_build_info.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseMigrateMetricsFlags, startMigrateMetrics } from '../../cli/migrate-metrics.js';
import { parsePushgatewayUrl, pushMetrics } from '../../shared/metrics/pushgateway.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

async function withServer(answer: (req: IncomingMessage, body: string) => [number, string] | 'hang', run: (url: URL) => Promise<void>): Promise<void> {
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      const a = answer(req, body);
      if (a !== 'hang') res.writeHead(a[0]).end(a[1]);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await run(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function registry(): Registry {
  const r = new Registry();
  new Counter({ name: 'ferry_source_migrations_total', help: 'h', labelNames: ['result'], registers: [r] }).inc({ result: 'committed' });
  return r;
}

describe('ferry migrate --metrics and --pushgateway', () => {
  afterEach(() => vi.restoreAllMocks());

  it.each([
    ['--metrics without a port', { metrics: '127.0.0.1' }, 'BAD_ARGUMENT'],
    ['--metrics with a bad port', { metrics: '127.0.0.1:99999' }, 'BAD_ARGUMENT'],
    ['--metrics on every interface', { metrics: '0.0.0.0:9464' }, 'METRICS_WILDCARD_REFUSED'],
    ['--pushgateway not a URL', { pushgateway: 'pushgw:9091' }, 'BAD_ARGUMENT'],
    ['--pushgateway not http', { pushgateway: 'ftp://h:9091' }, 'BAD_ARGUMENT'],
    ['--pushgateway with a query', { pushgateway: 'http://h:9091/?job=x' }, 'BAD_ARGUMENT'],
    ['--pushgateway with credentials', { pushgateway: 'http://u:p@h:9091' }, 'BAD_ARGUMENT'],
  ] as const)('refuses %s', (_name, values, key) => {
    const e = expectFerryError(() => parseMigrateMetricsFlags(values), key);
    expect(e.hint).toMatch(/--metrics|--pushgateway/);
  });

  it('takes one address (port 0: any) and an http(s) base URL', () => {
    expect(parseMigrateMetricsFlags({ metrics: '127.0.0.1:0', pushgateway: 'https://pg.example:9091/base' })).toEqual({
      serveAt: { host: '127.0.0.1', port: 0 },
      pushgateway: new URL('https://pg.example:9091/base'),
    });
    expect(parseMigrateMetricsFlags({})).toEqual({ serveAt: undefined, pushgateway: undefined });
  });

  it.each([
    [['42', '--to', '127.0.0.1:9', '--via', '/run/ferry/source.sock', '--metrics', '127.0.0.1:9464'], 'with --via'],
    [['42', '--to', '127.0.0.1:9', '--via', '/run/ferry/source.sock', '--pushgateway', 'http://127.0.0.1:9091'], 'with --via'],
    [['--resume', 'all', '--pushgateway', 'http://127.0.0.1:9091'], 'with --resume'],
    [['42', '--to', '127.0.0.1:9', '--metrics', 'nope'], 'malformed'],
  ])('migrate refuses %j (%s) with BAD_ARGUMENT before anything is touched', async (argv) => {
    const { migrateCommand } = await import('../../cli/commands/migrate.js');
    await expect(migrateCommand(argv)).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
  });

  it('pushes one PUT of the registry under job ferry_migrate and this instance', async () => {
    const seen: { method?: string; url?: string; type?: string; body: string }[] = [];
    await withServer(
      (req, body) => {
        seen.push({ method: req.method, url: req.url, type: req.headers['content-type'], body });
        return [200, ''];
      },
      async (url) => {
        expect(await pushMetrics(new URL('/gw', url), registry(), { instance: 'host a' })).toBeUndefined();
      },
    );
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ method: 'PUT', url: '/gw/metrics/job/ferry_migrate/instance/host%20a' });
    expect(seen[0]!.type).toMatch(/^text\/plain/);
    expect(seen[0]!.body).toMatch(/^ferry_source_migrations_total\{result="committed"\} 1$/m);
  });

  it('a refused, absent or hanging Pushgateway is a reason, never a throw, and is bounded', async () => {
    await withServer(
      () => [400, 'pushed metrics are invalid'],
      async (url) => expect(await pushMetrics(url, registry())).toMatch(/answered 400: pushed metrics are invalid/),
    );
    let closedPort = 0;
    await withServer(
      () => [200, ''],
      (url) => {
        closedPort = Number(url.port);
        return Promise.resolve();
      },
    );
    expect(await pushMetrics(new URL(`http://127.0.0.1:${closedPort}`), registry())).toMatch(/ECONNREFUSED/);
    await withServer(
      () => 'hang',
      async (url) => {
        const t0 = Date.now();
        expect(await pushMetrics(url, registry(), { timeoutMs: 300 })).toMatch(/abort|timeout/i);
        expect(Date.now() - t0).toBeLessThan(3_000);
      },
    );
  });

  it('serves while the migration runs, stops at finish(); a port in use is BAD_ARGUMENT before the migration', async () => {
    const warnings: string[] = [];
    const m = await startMigrateMetrics({ serveAt: { host: '127.0.0.1', port: 0 }, pushgateway: undefined }, 300, (l) => warnings.push(l));
    const url = /http:\/\/\S+\/metrics/.exec(warnings[0] ?? '')?.[0];
    expect(url).toBeDefined();
    m!.listener({ kind: 'phase', phase: 'prepare' });
    const text = await (await fetch(url!)).text();
    expect(text).toMatch(/^ferry_source_migration_phase\{phase="prepare"\} 1$/m);
    expect(text).toMatch(/^process_cpu_seconds_total /m);
    await withServer(
      () => [200, ''],
      async (taken) => {
        await expect(startMigrateMetrics({ serveAt: { host: '127.0.0.1', port: Number(taken.port) }, pushgateway: undefined }, 300, () => undefined)).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
      },
    );
    await m!.finish();
    await expect(fetch(url!)).rejects.toThrow();
    expect(await startMigrateMetrics({ serveAt: undefined, pushgateway: undefined }, 300, () => undefined)).toBeUndefined();
  });

  it('parsePushgatewayUrl keeps a base path', () => {
    expect(parsePushgatewayUrl('http://127.0.0.1:9091/prefix').pathname).toBe('/prefix');
  });
});

describe('ferry --version', () => {
  it('prints ferry, criu (or why none) and node, and exits 0', async () => {
    const { main } = await import('../../cli/main.js');
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
    try {
      expect(await main(['--version'])).toBe(0);
      expect(await main(['version', '--json'])).toBe(0);
    } finally {
      vi.restoreAllMocks();
    }
    const [text, json] = out;
    expect(text).toMatch(/^ferry \d+\.\d+\.\d+\ncriu (\d+\.\d+(\.\d+)? \(\/.+\)|none: .+)\nnode v\d+/);
    expect(JSON.parse(json!)).toMatchObject({ version: expect.stringMatching(/^\d+\.\d+\.\d+$/), nodeVersion: process.version });
  });
});
