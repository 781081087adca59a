/**
 * deploy/prometheus/ checked by Prometheus's own promtool: the example config and its rule files load, every
 * alert passes its unit test (ferry-alerts.test.yml) and has a severity and a runbook in docs/operations.md; and
 * both agents' /metrics (idle, in this process) pass `promtool check metrics`. The populated output after a real
 * migration is checked by test/e2e/prometheus.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDestAgent, type DestAgent } from '../../dest-agent/dest-agent.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { startSourceAgent, type SourceAgent } from '../../source-agent/source-agent.js';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { metricsFindings, PROM_CLIENT_FINDINGS, promtool } from '../../testbed/promtool.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const DEPLOY = join(REPO_ROOT, 'deploy', 'prometheus');
const withPromtool = canRun('promtool checks (scripts/setup.sh installs Debian prometheus)', hasCommand('promtool'));
const withAgents = withPromtool && canRun('promtool check metrics of the agents', isRoot());

const read = (...p: string[]): string => readFileSync(join(REPO_ROOT, ...p), 'utf8');

/** The alerts of ferry-alerts.yml, each with its severity and runbook_url (one rule per `- alert:` block). */
function alertsOf(yaml: string): { name: string; severity: string | undefined; runbook: string | undefined }[] {
  return yaml
    .split(/^\s*- alert: /m)
    .slice(1)
    .map((block) => ({
      name: block.split('\n')[0]!.trim(),
      severity: /severity: (\w+)/.exec(block)?.[1],
      runbook: /runbook_url: '([^']+)'/.exec(block)?.[1],
    }));
}

/** GitHub's anchors of the markdown headings: lower case, punctuation dropped, spaces as dashes. */
function anchorsOf(markdown: string): Set<string> {
  const headings = markdown.split('\n').filter((l) => /^#{1,6} /.test(l));
  return new Set(headings.map((h) => h.replace(/^#+ /, '').trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-')));
}

describe.skipIf(!withPromtool)('deploy/prometheus under promtool', () => {
  it('promtool check config: the example config and both rule files it loads', async () => {
    const r = await promtool(['check', 'config', 'ferry-scrape.yml'], { cwd: DEPLOY });
    console.log(r.output.trim());
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS: 2 rule files found/);
  });

  it('promtool check rules: recording rules and alerts', async () => {
    const r = await promtool(['check', 'rules', 'ferry-rules.yml', 'ferry-alerts.yml'], { cwd: DEPLOY });
    console.log(r.output.trim());
    expect(r.exitCode, r.output).toBe(0);
  });

  it('promtool test rules: every alert fires on its situation, with its labels and annotations, and only then', async () => {
    const r = await promtool(['test', 'rules', 'ferry-alerts.test.yml'], { cwd: DEPLOY });
    console.log(r.output.trim());
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS/);
  });
});

describe('alerts: severity, runbook, unit test', () => {
  const alerts = alertsOf(read('deploy', 'prometheus', 'ferry-alerts.yml'));
  const tests = read('deploy', 'prometheus', 'ferry-alerts.test.yml');
  const anchors = anchorsOf(read('docs', 'operations.md'));

  it('covers the issue\'s situations', () => {
    expect(alerts.map((a) => a.name)).toEqual(
      expect.arrayContaining(['FerryMigrationRolledBack', 'FerryDowntimeOverBudget', 'FerryMigrationStuck', 'FerryAgentDown', 'FerryCommitUnconfirmed']),
    );
  });

  it.each(alerts.map((a) => [a.name, a] as const))('%s: a severity, a runbook section in docs/operations.md, a firing unit test', (name, a) => {
    expect(['critical', 'warning', 'info']).toContain(a.severity);
    expect(a.runbook).toBe(`docs/operations.md#${name.toLowerCase()}`);
    expect(anchors.has(name.toLowerCase()), `docs/operations.md has no heading "${name}"`).toBe(true);
    // A test case that expects it to fire (exp_alerts with a runbook), not only one that expects silence.
    expect(tests).toMatch(new RegExp(`alertname: ${name}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
  });
});

describe.skipIf(!withAgents)('promtool check metrics of both agents (idle)', () => {
  let dir = '';
  let source: SourceAgent | undefined;
  let dest: DestAgent | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-promtool-'));
    const metrics = { host: '127.0.0.1', port: 0 };
    source = await startSourceAgent({ socket: join(dir, 'source.sock'), allowDests: [], dialSecurity: INSECURE_LOOPBACK, metrics, imagesRoot: join(dir, 'images'), journalDir: join(dir, 'journal'), log: silentLogger });
    dest = await startDestAgent({ listen: { host: '127.0.0.1', port: 0 }, workDir: join(dir, 'dest'), security: INSECURE_LOOPBACK, metrics, log: silentLogger });
  });

  afterAll(async () => {
    await source?.close();
    await dest?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.each(['source', 'dest'] as const)('the %s agent: no lint finding', async (side) => {
    const port = side === 'source' ? source!.metricsPort : dest!.metricsPort;
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toMatch(/^ferry_/m);
    const findings = await metricsFindings(text);
    expect(findings.ferry).toEqual([]);
    // prom-client's own defaults: gauges named _total (its names, kept as every Node exporter has them).
    for (const f of findings.others) expect(PROM_CLIENT_FINDINGS).toContain(f);
  });
});
