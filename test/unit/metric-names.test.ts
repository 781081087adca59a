/**
 * Every family both agents export follows Prometheus naming (docs/metrics.md): one prefix per component, base
 * units, counters in _total, closed low-cardinality labels; a pid or an id only on an _info metric.
 */
import { execFileSync } from 'node:child_process';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { registerBuildInfo } from '../../shared/metrics/build-info.js';
import { createAgentRegistry } from '../../shared/metrics/agent-registry.js';
import { createDestMetrics } from '../../dest-agent/dest-metrics.js';
import type { DestSession, DestSessionState } from '../../dest-agent/session.js';
import type { MigrationSummary } from '../../source-agent/migration/events.js';
import { SourceMetrics } from '../../source-agent/source-metrics.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';
import { ROUND, THROTTLE_DECISION } from '../support/migration-events.js';

const round = ROUND;
const decision = THROTTLE_DECISION;
const summary = {
  rounds: [round], totalMs: 1000, downtimeMs: 140, finalDeltaPages: 3, imageBytesSent: 500, restoreMode: 'lazy', fillMs: 200, replacedPages: 0,
  precopyBytes: 90 * 4096, downtimeBytes: 500, postcopyBytes: 0, faultWaitP50Us: 250, faultWaitP99Us: 4000,
} as unknown as MigrationSummary;

/** Two migrations through the source's metrics (one committed, one rolled back) and one lazy session through the dest's. */
function exercised(source = withBuildInfo(new Registry(), 'source')): { source: Registry; dest: Registry } {
  const sourceMetrics = new SourceMetrics(source, 4096);
  const ok = sourceMetrics.track({ maxDowntimeMs: 300 });
  ok({ kind: 'started', migrationId: 'a2b7c1', pid: 4242, dest: '10.0.0.2:7070', tasks: 1, tracker: 'soft-dirty', trackerNote: '' });
  for (const phase of ['prepare', 'precopy'] as const) ok({ kind: 'phase', phase });
  ok({ kind: 'round', round, pagesSent: 100, bytesSent: round.bytesSent, rateBytesPerSecond: 1e7 });
  ok(decision);
  for (const phase of ['freeze', 'final-delta', 'restore', 'commit', 'fill'] as const) ok({ kind: 'phase', phase });
  ok({ kind: 'done', summary });
  const failed = sourceMetrics.track({ maxDowntimeMs: 300 });
  failed({ kind: 'phase', phase: 'prepare' });
  failed({ kind: 'failed', phase: 'prepare', error: new FerryError('PAGE_STREAM_FAILED').toJSON() });

  const dest = withBuildInfo(new Registry(), 'dest');
  const d = createDestMetrics(dest);
  const session = { id: 'a2b7c1' } as DestSession;
  let from: DestSessionState | undefined;
  for (const to of ['receiving', 'restoring', 'restored', 'filling', 'committed'] as const) {
    d.onTransition({ session, from, to, fields: {} });
    from = to;
  }
  d.restoreSeconds.observe(0.3);
  return { source, dest };
}

function withBuildInfo(r: Registry, side: 'source' | 'dest'): Registry {
  registerBuildInfo(r, side, { version: '0.1.0', criuVersion: '4.2.1', nodeVersion: 'v20.0.0' });
  return r;
}

interface Family {
  name: string;
  type: string;
  labels: Set<string>;
}

function families(text: string): Family[] {
  const out = new Map<string, Family>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) out.set(t[1]!, { name: t[1]!, type: t[2]!, labels: new Set() });
    const s = /^([a-zA-Z_:][\w:]*?)(?:_bucket|_sum|_count)?\{([^}]*)\}/.exec(line);
    const f = s && (out.get(s[1]!) ?? [...out.values()].find((x) => line.startsWith(`${x.name}_`) || line.startsWith(`${x.name}{`)));
    if (f) for (const m of s[2]!.matchAll(/(\w+)="/g)) if (m[1] !== 'le') f.labels.add(m[1]!);
  }
  return [...out.values()];
}

const ALLOWED_LABELS = new Set(['phase', 'result', 'kind', 'state', 'code', 'side', 'tracker', 'codec']);
const INFO_LABELS = new Set(['migration_id', 'pid', 'tracker', 'dest', 'version', 'criu_version', 'node_version', 'side']);

function checkFamily(f: Family, prefix: string): string[] {
  const bad: string[] = [];
  if (f.name !== 'ferry_build_info' && !f.name.startsWith(prefix)) bad.push(`${f.name}: not ${prefix}*`);
  if (!/^[a-z][a-z0-9_]*$/.test(f.name)) bad.push(`${f.name}: not snake_case`);
  if ((f.type === 'counter') !== f.name.endsWith('_total')) bad.push(`${f.name}: a ${f.type} ${f.type === 'counter' ? 'must' : 'must not'} end in _total`);
  if (f.type === 'histogram' && !/_(seconds|bytes)$/.test(f.name)) bad.push(`${f.name}: a histogram in a base unit (_seconds, _bytes)`);
  if (/_(ms|milliseconds|us|microseconds|kb|mb|kib|mib|percent)(_|$)/.test(f.name)) bad.push(`${f.name}: not a base unit`);
  const allowed = f.name.endsWith('_info') ? INFO_LABELS : ALLOWED_LABELS;
  for (const l of f.labels) if (!allowed.has(l)) bad.push(`${f.name}: label ${l} is not low-cardinality`);
  return bad;
}

describe('metric families (docs/metrics.md)', () => {
  it('follow the naming rules on both sides; a pid or an id is only on an _info metric', async () => {
    const { source, dest } = exercised();
    const src = families(await source.metrics());
    const dst = families(await dest.metrics());
    expect(src.length).toBeGreaterThan(20);
    expect([...src.flatMap((f) => checkFamily(f, 'ferry_source_')), ...dst.flatMap((f) => checkFamily(f, 'ferry_dest_'))]).toEqual([]);
    for (const f of [...src, ...dst].filter((x) => !x.name.endsWith('_info'))) {
      expect([...f.labels].filter((l) => /pid|id$|session|host|path|peer/.test(l)), f.name).toEqual([]);
    }
  });

  it('every family exported is in docs/metrics.md and every family there is exported', async () => {
    const { source, dest } = exercised();
    const { readFileSync } = await import('node:fs');
    const doc = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
    // The tables before the Pushgateway section (the renames table after it names the old families).
    const tables = doc.slice(0, doc.indexOf('## Pushgateway'));
    const documented = new Set([...tables.matchAll(/^\| `(ferry_[a-z0-9_]+)`/gm)].map((m) => m[1]!));
    // Registered by the gRPC server the dest agent runs (shared/transport/agent-server.ts), not by its metrics.
    documented.delete('ferry_dest_peer_refusals_total');
    const exported = new Set([...families(await source.metrics()), ...families(await dest.metrics())].map((f) => f.name));
    expect([...exported].filter((n) => !documented.has(n))).toEqual([]);
    expect([...documented].filter((n) => !exported.has(n))).toEqual([]);
  });

  it('the phase gauge follows the migration and the info metric lives only while it runs', async () => {
    const registry = new Registry();
    const metrics = new SourceMetrics(registry, 4096);
    const value = async (name: string, labels: Record<string, string> = {}): Promise<number | undefined> => {
      const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
      return (m?.values as { value: number; labels: Record<string, string> }[]).find((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l))?.value;
    };
    const observe = metrics.track({ maxDowntimeMs: 250 });
    observe({ kind: 'started', migrationId: 'm1', pid: 7, dest: 'd:1', tasks: 1, tracker: 'hash', trackerNote: '' });
    expect(await value('ferry_source_migrations_in_flight')).toBe(1);
    expect(await value('ferry_source_migration_phase', { phase: 'negotiate' })).toBe(1);
    expect(await value('ferry_source_migration_info', { migration_id: 'm1', pid: '7' })).toBe(1);
    expect(await value('ferry_source_downtime_budget_seconds')).toBeCloseTo(0.25);
    observe({ kind: 'phase', phase: 'prepare' });
    observe({ kind: 'phase', phase: 'precopy' });
    observe({ kind: 'round', round: { ...round, round: 1 }, pagesSent: 100, bytesSent: round.bytesSent, rateBytesPerSecond: 1e7 });
    expect(await value('ferry_source_migration_phase', { phase: 'negotiate' })).toBe(0);
    expect(await value('ferry_source_migration_phase', { phase: 'precopy' })).toBe(1);
    expect(await value('ferry_source_precopy_round')).toBe(1);
    expect(await value('ferry_source_pages_per_second')).toBe(2000);
    observe({ kind: 'failed', phase: 'precopy', error: new FerryError('COMMIT_UNCONFIRMED', { sourceState: 'frozen' }).toJSON() });
    expect(await value('ferry_source_migrations_total', { result: 'unknown', phase: 'precopy' })).toBe(1);
    expect(await value('ferry_source_migrations_in_flight')).toBe(0);
    expect(await value('ferry_source_migration_phase', { phase: 'precopy' })).toBe(0);
    expect(await value('ferry_source_migration_info', { migration_id: 'm1' })).toBeUndefined();
  });

  it('a migration that fails before its first phase leaves nothing in flight', async () => {
    const registry = new Registry();
    const observe = new SourceMetrics(registry, 4096).track({ maxDowntimeMs: 300 });
    observe({ kind: 'failed', phase: 'negotiate', error: new FerryError('DEST_UNREACHABLE').toJSON() });
    const text = await registry.metrics();
    expect(text).toMatch(/^ferry_source_migrations_in_flight 0$/m);
    expect(text).toMatch(/^ferry_source_migration_phase\{phase="negotiate"\} 0$/m);
    expect(text).toMatch(/^ferry_source_migrations_total\{result="rolled-back",phase="negotiate"\} 1$/m);
  });

  it('the dest counts open sessions by state and phase and times the fill', async () => {
    const { dest } = exercised();
    const text = await dest.metrics();
    expect(text).toMatch(/^ferry_dest_sessions_in_flight 0$/m);
    expect(text).toMatch(/^ferry_dest_session_state\{state="filling"\} 0$/m);
    expect(text).toMatch(/^ferry_dest_fill_duration_seconds_count 1$/m);
    expect(text).toMatch(/^ferry_build_info\{version="0.1.0",criu_version="4.2.1",node_version="v20.0.0",side="dest"\} 1$/m);
  });

  it.runIf(canRun('promtool check metrics', hasCommand('promtool')))('promtool check metrics finds nothing on either side (with the process metrics)', async () => {
    const { source, dest } = exercised(await createAgentRegistry('source'));
    for (const r of [source, dest]) {
      // promtool prints one finding a line and exits non-zero on any. prom-client's own nodejs_active_*_total are
      // gauges named _total (its choice, not ours): those are the only findings allowed.
      const out = execFileSync('sh', ['-c', 'promtool check metrics 2>&1; true'], { input: await r.metrics(), encoding: 'utf8', timeout: 30_000 });
      const findings = out.split('\n').filter((l) => l.trim() && !/^nodejs_active_\w+_total non-counter metrics should not have "_total" suffix$/.test(l));
      expect(findings).toEqual([]);
    }
  });
});
