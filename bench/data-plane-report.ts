/**
 * The data-plane benchmark's results file, its targets (issue 15) and their rendering: the Markdown section of
 * docs/benchmarks.md and the console's table.
 */
import type { ProfileSummary } from './cpu-profile-summary.js';
import type { FerryDataPlaneRun } from './data-plane-ferry.js';
import type { ReferenceResult, ReferenceSkip } from './data-plane-references.js';
import type { MachineInfo } from './results.js';
import type { StoreRate } from './store-rate.js';

export type LinkId = 'unshaped' | '1gbit' | '100mbit';

export interface CellPlan {
  id: string;
  label: string;
  link: LinkId;
  mib: number;
  content: 'random' | 'heap';
  dirtyMibPerSec: number;
  flags: string[];
  /** The dest agent this cell needs: mutual TLS (the default) or plaintext. */
  insecure: boolean;
  /** Why it does not run with this build (a flag it lacks), if so. */
  skipped?: string | undefined;
}

export interface CellResult extends CellPlan {
  run?: FerryDataPlaneRun | undefined;
}

export interface ProfileResult {
  mib: number;
  source?: ProfileSummary | undefined;
  dest?: ProfileSummary | undefined;
  note?: string | undefined;
}

export interface DataPlaneFile {
  kind: 'data-plane';
  mode: 'quick' | 'full';
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  machine: MachineInfo | undefined;
  /** The flags of issue 15 this build has (`ferry migrate --help`). */
  flags: { compress: boolean; pageChannels: boolean };
  /** References per link, measured in this run over the same veth. */
  references: Record<LinkId, (ReferenceResult | ReferenceSkip)[]>;
  cells: CellResult[];
  /** The dest's store on the benchmark's work-dir filesystem and on a disk. */
  storeRates: StoreRate[];
  profile: ProfileResult | undefined;
}

export interface DataPlaneTarget {
  id: string;
  what: string;
  limit: string;
  value: number | undefined;
  /** `value` against its limit: met when <= 1 for a ceiling, >= 1 for a floor. */
  met: boolean | undefined;
  note: string;
}

const isRef = (r: ReferenceResult | ReferenceSkip | undefined): r is ReferenceResult => r !== undefined && !('skipped' in r);
/** The reference `id` of a link; measured more than once (before and after the cells), the mean rate. */
export const refOf = (f: DataPlaneFile, link: LinkId, id: string): ReferenceResult | undefined => {
  const rs = f.references[link].filter((x) => x.id === id).filter(isRef);
  if (rs.length === 0) return undefined;
  const mean = (pick: (r: ReferenceResult) => number): number => rs.reduce((a, r) => a + pick(r), 0) / rs.length;
  return { ...rs[0]!, mibPerSec: mean((r) => r.mibPerSec), gbitPerSec: mean((r) => r.gbitPerSec) };
};
const cellOf = (f: DataPlaneFile, id: string): FerryDataPlaneRun | undefined => {
  const c = f.cells.find((x) => x.id === id);
  return c?.run?.ok ? c.run : undefined;
};

/** Issue 15's targets, from the cells and references of one run. */
export function dataPlaneTargets(f: DataPlaneFile): DataPlaneTarget[] {
  const t: DataPlaneTarget[] = [];
  const tls = cellOf(f, 'tls-unshaped');
  const floor = (id: string, what: string, limit: number, value: number | undefined, versus: string | undefined, note: string): void => {
    t.push({ id, what, limit: `>= ${limit}x`, value, met: value === undefined ? undefined : value >= limit, note: value === undefined ? `not measured: ${versus ?? 'missing'}` : note });
  };
  const nodeTls = refOf(f, 'unshaped', 'node-tls');
  const iperf = refOf(f, 'unshaped', 'iperf3');
  const r0 = tls?.round0MiBPerSec;
  floor('precopy-vs-node-tls', 'pre-copy round 0 (TLS, unshaped) / bare Node TLS stream', 0.8, r0 && nodeTls ? r0 / nodeTls.mibPerSec : undefined, !tls ? 'the TLS cell failed' : 'no Node TLS reference', `${fmt(r0)} vs ${fmt(nodeTls?.mibPerSec)} MiB/s`);
  floor('precopy-vs-iperf3', 'pre-copy round 0 (TLS, unshaped) / iperf3 one stream', 0.4, r0 && iperf ? r0 / iperf.mibPerSec : undefined, !tls ? 'the TLS cell failed' : 'no iperf3 reference', `${fmt(r0)} vs ${fmt(iperf?.mibPerSec)} MiB/s`);
  const fastAuto = cellOf(f, 'tls-unshaped-compress-auto');
  floor(
    'compress-fast-link',
    'pre-copy round 0 on the raw veth, --compress auto / no flag (never slower on a fast link)',
    0.95,
    fastAuto && r0 ? fastAuto.round0MiBPerSec / r0 : undefined,
    f.cells.find((c) => c.id === 'tls-unshaped-compress-auto')?.skipped ?? 'a cell failed',
    `${fmt(fastAuto?.round0MiBPerSec)} vs ${fmt(r0)} MiB/s`,
  );
  const g = cellOf(f, 'tls-1gbit');
  const gRef = refOf(f, '1gbit', 'iperf3');
  floor('precopy-vs-1gbit', 'pre-copy round 0 (TLS) / iperf3 on a tbf 1 Gbit/s link', 0.95, g && gRef ? g.round0MiBPerSec / gRef.mibPerSec : undefined, !g ? 'the 1 Gbit/s cell failed' : 'no iperf3 reference', `${fmt(g?.round0MiBPerSec)} vs ${fmt(gRef?.mibPerSec)} MiB/s`);
  const ceiling = (id: string, what: string, limit: number, offId: string, autoId: string, note: string): void => {
    const off = cellOf(f, offId);
    const auto = cellOf(f, autoId);
    const skipped = f.cells.find((c) => c.id === autoId)?.skipped;
    const value = off && auto ? auto.totalMs / off.totalMs : undefined;
    t.push({
      id,
      what,
      limit: `<= ${limit}x`,
      value,
      met: value === undefined ? undefined : value <= limit,
      note: value === undefined ? `not measured: ${skipped ?? 'a cell failed'}` : `${(auto!.totalMs / 1000).toFixed(1)} s vs ${(off!.totalMs / 1000).toFixed(1)} s; wire ${mibOf(auto!.wireBytes)} vs ${mibOf(off!.wireBytes)} MiB${note}`,
    });
  };
  ceiling('compress-heap', 'heap-like task on 100 Mbit/s: total time, --compress auto / off', 0.5, 'heap-100mbit-off', 'heap-100mbit-auto', '');
  // "No worse": within 5 % of uncompressed, the spread of two runs of the same cell here.
  ceiling('compress-random', 'incompressible task on 100 Mbit/s: total time, --compress auto / off', 1.05, 'random-100mbit-off', 'random-100mbit-auto', ' (limit: no worse, within 5 % run-to-run spread)');
  return t;
}

const fmt = (v: number | undefined, digits = 0): string => (v === undefined ? 'n/a' : v.toFixed(digits));
const mibOf = (bytes: number): string => (bytes / 2 ** 20).toFixed(0);
const perGiB = (cpu: number | undefined, bytes: number): string => (cpu === undefined || bytes <= 0 ? 'n/a' : (cpu / (bytes / 2 ** 30)).toFixed(2));

function referenceRows(f: DataPlaneFile): string[] {
  const rows = ['| link | reference | Gbit/s | MiB/s | sender CPU s/GiB | receiver CPU s/GiB |', '|---|---|---|---|---|---|'];
  for (const link of ['unshaped', '1gbit', '100mbit'] as const) {
    for (const r of f.references[link]) {
      if ('skipped' in r) rows.push(`| ${link} | ${r.label} | skipped: ${r.skipped} | | | |`);
      else rows.push(`| ${link} | ${r.label}${r.when === 'after' ? ' (after the cells)' : ''} | ${r.gbitPerSec.toFixed(2)} | ${r.mibPerSec.toFixed(0)} | ${fmt(r.senderCpuSecPerGiB, 2)} | ${fmt(r.receiverCpuSecPerGiB, 2)} |`);
    }
  }
  return rows;
}

function cellRows(f: DataPlaneFile): string[] {
  const rows = [
    '| cell | link | task | round 0 MiB/s | / Node TLS | / iperf3 | total s | downtime ms | sent MiB | wire MiB | round 0 CPU s/GiB: source | dest | task |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const c of f.cells) {
    const task = `${c.mib} MiB ${c.content}, ${c.dirtyMibPerSec} MiB/s`;
    if (c.skipped) {
      rows.push(`| ${c.label} | ${c.link} | ${task} | skipped: ${c.skipped} | | | | | | | | | |`);
      continue;
    }
    const r = c.run;
    if (!r?.ok) {
      rows.push(`| ${c.label} | ${c.link} | ${task} | FAILED: ${(r?.error ?? 'not run').split('\n')[0]!.slice(0, 120)} | | | | | | | | | |`);
      continue;
    }
    const nodeTls = refOf(f, c.link, 'node-tls');
    const iperf = refOf(f, c.link, 'iperf3');
    const cpu = r.round0Cpu;
    rows.push(
      `| ${c.label} | ${c.link} | ${task} | ${r.round0MiBPerSec.toFixed(0)} | ${nodeTls ? (r.round0MiBPerSec / nodeTls.mibPerSec).toFixed(2) : 'n/a'} | ${iperf ? (r.round0MiBPerSec / iperf.mibPerSec).toFixed(2) : 'n/a'} | ` +
        `${(r.totalMs / 1000).toFixed(1)} | ${r.downtimeMs.toFixed(0)} | ${mibOf(r.bytesSent)} | ${mibOf(r.wireBytes)} | ${perGiB(cpu?.source, r.round0Bytes)} | ${perGiB(cpu?.dest, r.round0Bytes)} | ${perGiB(cpu?.task, r.round0Bytes)} |`,
    );
  }
  return rows;
}

function profileRows(p: ProfileResult): string[] {
  const out: string[] = [];
  for (const side of ['source', 'dest'] as const) {
    const s = p[side];
    if (!s) continue;
    out.push('', `${side === 'source' ? 'Source (`ferry migrate`)' : 'Dest agent'}: ${s.busyMs.toFixed(0)} ms on CPU in a round 0 of ${s.windowMs.toFixed(0)} ms (${p.mib} MiB); top self time:`, '');
    out.push('| function | self ms | % of busy |', '|---|---|---|');
    for (const x of s.top.slice(0, 12)) out.push(`| \`${x.what.replace(/\|/g, '\\|')}\` | ${x.ms.toFixed(0)} | ${x.percent.toFixed(1)} |`);
  }
  if (p.note) out.push('', p.note);
  return out;
}

function targetRows(ts: DataPlaneTarget[]): string[] {
  return [
    '| target | limit | measured | | note |',
    '|---|---|---|---|---|',
    ...ts.map((t) => `| ${t.what} | ${t.limit} | ${fmt(t.value, 2)} | ${t.met === undefined ? 'n/a' : t.met ? 'met' : 'missed'} | ${t.note} |`),
  ];
}

/** The section of docs/benchmarks.md (docs-section.ts id `data-plane`). */
export function dataPlaneMarkdown(f: DataPlaneFile, resultsFile: string): string {
  const m = f.machine;
  const lines = [
    '## Data plane (issue 15): page throughput, CPU, compression',
    '',
    `\`npm run bench:data-plane${f.mode === 'quick' ? ' -- --quick' : ''}\`, ${f.startedAt.slice(0, 16).replace('T', ' ')} UTC, ${(f.durationMs / 60000).toFixed(1)} min` +
      (m ? `; ${m.cpuModel}, ${m.cores} cores, kernel ${m.kernel}, Node ${m.nodeVersion}, CRIU ${m.criuVersion}, commit ${m.ferryCommit}` : '') +
      `; every run in \`${resultsFile}\`. The build has --compress: ${f.flags.compress ? 'yes' : 'no'}, --page-channels: ${f.flags.pageChannels ? 'yes' : 'no'}.`,
    '',
    'One run, one veth pair between the two netns hosts; both agents, the task and the kernel share the cores. Round 0',
    "MiB/s: the summary's round 0 page bytes over its wall time (read, hash, send, the dest's acks); the ratios divide",
    'it by the references of the same link measured in the same run (the raw veth\'s before and after its cells: their',
    "mean). CPU s/GiB: utime + stime (/proc/PID/stat) of the migrating CLI (the source), the dest agent and the task",
    "from round 0's start to its end, per GiB of round 0 page data (all threads; the profile below is the main thread).",
    'Wire MiB: the src veth\'s tx counter over the migration (frames and TLS included). Store MB/s: the dest\'s',
    'TaskPageStore.put (hash check + positioned writev) of 1 MiB batches, alone, on the benchmark dest\'s work-dir',
    'filesystem (tmpfs) and on a disk.',
    '',
    ...referenceRows(f),
    '',
    ...cellRows(f),
    '',
    f.storeRates.length > 0
      ? `Dest store rate: ${f.storeRates.map((r) => `${r.mbPerSec.toFixed(0)} MB/s on ${r.fsType} (${r.dir}, ${mibOf(r.bytes)} MiB in ${r.ms.toFixed(0)} ms)`).join('; ')}.`
      : 'Dest store rate: not measured.',
    ...(f.profile ? ['', '### Where round 0 spends its CPU (`node --cpu-prof`, a separate run)', ...profileRows(f.profile)] : []),
    '',
    '### Targets',
    '',
    ...targetRows(dataPlaneTargets(f)),
  ];
  return lines.join('\n');
}

export function dataPlaneConsole(f: DataPlaneFile): string {
  return [...referenceRows(f), '', ...cellRows(f), '', ...targetRows(dataPlaneTargets(f))].join('\n');
}
