import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { summariseCpuProfile } from '../../bench/cpu-profile-summary.js';
import type { FerryDataPlaneRun } from '../../bench/data-plane-ferry.js';
import { dataPlaneMarkdown, dataPlaneTargets, refOf, type CellResult, type DataPlaneFile } from '../../bench/data-plane-report.js';
import type { ReferenceResult } from '../../bench/data-plane-references.js';
import { keepSections, replaceSection } from '../../bench/docs-section.js';

const ref = (id: string, mibPerSec: number): ReferenceResult => ({ id, label: id, mibPerSec, gbitPerSec: (mibPerSec * 2 ** 20 * 8) / 1e9, bytes: 1 });

function run(over: Partial<FerryDataPlaneRun>): FerryDataPlaneRun {
  return {
    ok: true,
    error: undefined,
    round0Bytes: 2 ** 30,
    round0Ms: 1000,
    round0MiBPerSec: 1024,
    round0TransferMiBPerSec: 1024,
    presentPages: 262144,
    zeroPages: 0,
    totalMs: 10_000,
    downtimeMs: 200,
    rounds: 3,
    bytesSent: 2 ** 30,
    wireBytes: 2 ** 30,
    round0Cpu: { source: 1, dest: 1, task: 0 },
    totalCpu: undefined,
    badPages: 0,
    round0Window: undefined,
    summary: undefined,
    ...over,
  };
}

const cell = (id: string, link: CellResult['link'], r: FerryDataPlaneRun | undefined, skipped?: string): CellResult => ({
  id,
  label: id,
  link,
  mib: 1024,
  content: 'random',
  dirtyMibPerSec: 8,
  flags: [],
  insecure: false,
  skipped,
  run: r,
});

function file(cells: CellResult[]): DataPlaneFile {
  return {
    kind: 'data-plane',
    mode: 'full',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '',
    durationMs: 60_000,
    machine: undefined,
    flags: { compress: true, pageChannels: false },
    // The raw veth's references twice (before and after its cells): ratios use the mean.
    references: { unshaped: [ref('iperf3', 2000), ref('node-tls', 1000), ref('iperf3', 3000), ref('node-tls', 1400)], '1gbit': [ref('iperf3', 114)], '100mbit': [] },
    cells,
    storeRates: [],
    profile: undefined,
  };
}

describe('data-plane targets', () => {
  const f = file([
    cell('tls-unshaped', 'unshaped', run({ round0MiBPerSec: 1000 })),
    cell('tls-1gbit', '1gbit', run({ round0MiBPerSec: 110 })),
    cell('heap-100mbit-off', '100mbit', run({ totalMs: 20_000 })),
    cell('heap-100mbit-auto', '100mbit', run({ totalMs: 8_000 })),
    cell('random-100mbit-off', '100mbit', run({ totalMs: 20_000 })),
    cell('random-100mbit-auto', '100mbit', undefined, 'this build has no --compress'),
  ]);
  const byId = new Map(dataPlaneTargets(f).map((t) => [t.id, t]));

  it('takes the mean of a reference measured twice', () => {
    expect(refOf(f, 'unshaped', 'iperf3')?.mibPerSec).toBe(2500);
    expect(refOf(f, 'unshaped', 'node-tls')?.mibPerSec).toBe(1200);
  });

  it('marks floors and ceilings met or missed from the same run', () => {
    expect(byId.get('precopy-vs-node-tls')).toMatchObject({ met: true });
    expect(byId.get('precopy-vs-node-tls')!.value).toBeCloseTo(1000 / 1200);
    expect(byId.get('precopy-vs-iperf3')).toMatchObject({ value: 0.4, met: true });
    expect(byId.get('precopy-vs-1gbit')!.value).toBeCloseTo(110 / 114);
    expect(byId.get('compress-heap')).toMatchObject({ value: 0.4, met: true });
  });

  it('says why a target was not measured', () => {
    expect(byId.get('compress-random')).toMatchObject({ value: undefined, met: undefined });
    expect(byId.get('compress-random')!.note).toContain('no --compress');
  });

  it('renders skipped and failed cells', () => {
    const md = dataPlaneMarkdown(file([cell('tls-unshaped', 'unshaped', run({ ok: false, error: 'boom\nmore' })), cell('x', 'unshaped', undefined, 'no flag')]), 'bench/results/x.json');
    expect(md).toContain('FAILED: boom |');
    expect(md).toContain('skipped: no flag');
    expect(md).toMatch(/bare Node TLS stream \| >= 0.8x \| n\/a \| n\/a \| not measured: the TLS cell failed/);
  });
});

describe('docs sections', () => {
  it('replaces its own section and leaves the rest', () => {
    const once = replaceSection('# B\n\ntext\n', 'data-plane', 'one');
    expect(once).toBe('# B\n\ntext\n\n<!-- bench:data-plane -->\none\n<!-- /bench:data-plane -->\n');
    const twice = replaceSection(`${once}\n## after\n`, 'data-plane', 'two');
    expect(twice).toContain('<!-- bench:data-plane -->\ntwo\n<!-- /bench:data-plane -->\n');
    expect(twice).not.toContain('one');
    expect(twice).toContain('## after');
  });

  it('carries a section over into a regenerated file', () => {
    const old = replaceSection('# old\n', 'data-plane', 'kept');
    expect(keepSections(old, '# fresh\n')).toBe('# fresh\n\n<!-- bench:data-plane -->\nkept\n<!-- /bench:data-plane -->\n');
    expect(keepSections(old, old)).toBe(old);
  });
});

describe('cpu profile summary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-prof-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const frame = (functionName: string, url = '') => ({ functionName, url, lineNumber: 9, columnNumber: 0, scriptId: '0' });
  const path = join(dir, 'p.cpuprofile');
  writeFileSync(
    path,
    JSON.stringify({
      nodes: [
        { id: 1, callFrame: frame('(root)') },
        { id: 2, callFrame: frame('(idle)') },
        { id: 3, callFrame: frame('hashPages', 'file:///repo/dist/shared/native/addon.js') },
        { id: 4, callFrame: frame('(garbage collector)') },
      ],
      startTime: 1_000_000,
      endTime: 1_010_000,
      // One sample per ms: idle, hash x3, gc, idle, hash, gc x2, idle.
      samples: [2, 3, 3, 3, 4, 2, 3, 4, 4, 2],
      timeDeltas: [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
    }),
  );

  it('ranks self time without idle', () => {
    const s = summariseCpuProfile(path);
    expect(s.top.map((t) => t.what)).toEqual(['hashPages (native/addon.js:10)', '(garbage collector)']);
    expect(s.busyMs).toBe(7);
    expect(s.top[0]!.percent).toBeCloseTo((100 * 4) / 7);
  });

  it('keeps only the samples inside a window', () => {
    // Samples at 1,000,000 + k ms; the window holds k = 5..8: idle, hash, gc, gc.
    const s = summariseCpuProfile(path, { fromUs: 1_005_000, toUs: 1_008_000 });
    expect(s.top.map((t) => [t.what, t.ms])).toEqual([
      ['(garbage collector)', 2],
      ['hashPages (native/addon.js:10)', 1],
    ]);
    expect(s.windowMs).toBe(3);
  });
});
