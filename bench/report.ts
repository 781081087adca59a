/**
 * Writing the results: the Markdown page (docs/benchmarks.md), the console table, and the downtime figure
 * (docs/benchmarks-downtime.svg) assembled for svg-plot.ts.
 */
import { LINKS, METHODS, formatMib, methodById, type LinkId, type MethodId } from './cases.js';
import { PHASE_LABELS, type BenchFile, type DowntimeSplit } from './results.js';
import { renderChart, type Chart, type Panel, type Series } from './svg-plot.js';
import { aggregate, evaluatePostCopyTargets, evaluateTargets, lazyVsEager, type CaseMethodStats, type Spread, type TargetResult } from './summary.js';

const LINK_ORDER: LinkId[] = ['1gbit', '100mbit', 'unshaped'];
const METHOD_ORDER: MethodId[] = METHODS.map((m) => m.id);

function fmtSpread(s: Spread | undefined, fmt: (v: number) => string): string {
  if (!s) return 'n/a';
  const [median, min, max] = [fmt(s.median), fmt(s.min), fmt(s.max)];
  return min === max ? median : `${median} (${min}–${max})`;
}

const ms = (v: number): string => String(Math.round(v));
const sec = (v: number): string => (v / 1000).toFixed(1);
const sec2 = (v: number): string => (v / 1000).toFixed(2);
const gbps = (v: number): string => (v / 1e9).toFixed(2);
const mib = (v: number): string => (v / 2 ** 20).toFixed(0);
const two = (v: number): string => v.toFixed(2);
const int = (v: number): string => (Number.isInteger(v) ? String(v) : v.toFixed(1));

export function sortStats(stats: CaseMethodStats[]): CaseMethodStats[] {
  return [...stats].sort(
    (a, b) =>
      LINK_ORDER.indexOf(a.link) - LINK_ORDER.indexOf(b.link) ||
      a.mib - b.mib ||
      a.dirtyMibPerSec - b.dirtyMibPerSec ||
      METHOD_ORDER.indexOf(a.method) - METHOD_ORDER.indexOf(b.method),
  );
}

const RESULT_HEADER = [
  'link',
  'RSS',
  'dirty MiB/s',
  'method',
  'ok/runs',
  'downtime ms',
  'total s',
  'MiB sent',
  'sent / RSS',
  'rounds',
  'work pre-copy / idle',
  'work over migration / idle',
  'downtime mostly',
  'freeze rule; throttle',
];

function resultRow(s: CaseMethodStats): string[] {
  const live = !methodById(s.method).stopAndCopy;
  return [
    LINKS[s.link].label,
    formatMib(s.mib),
    String(s.dirtyMibPerSec),
    methodById(s.method).label,
    `${s.ok}/${s.ok + s.failed}`,
    fmtSpread(s.downtimeMs, ms),
    fmtSpread(s.totalMs, sec),
    fmtSpread(s.bytesSent, mib),
    fmtSpread(s.bytesPerRss, two),
    live ? fmtSpread(s.rounds, int) : '–',
    live ? fmtSpread(s.precopyWorkRatio, two) : '–',
    fmtSpread(s.windowWorkRatio, two),
    s.dominantPhase && s.phases && s.downtimeMs
      ? `${PHASE_LABELS[s.dominantPhase]} ${Math.round((100 * s.phases[s.dominantPhase]) / s.downtimeMs.median)} %`
      : 'n/a',
    live ? [s.freezeRules.join(', '), ...(s.throttles.length > 0 ? [`throttled ${s.throttles.length}/${s.ok} (${[...new Set(s.throttles)].join(', ')})`] : [])].join('; ') : '–',
  ];
}

const PHASE_KEYS = Object.keys(PHASE_LABELS) as (keyof DowntimeSplit)[];
const PHASE_HEADER = ['link', 'RSS', 'dirty MiB/s', 'method', 'downtime', ...PHASE_KEYS.map((k) => PHASE_LABELS[k])];

function phaseRow(s: CaseMethodStats): string[] {
  return [
    LINKS[s.link].label,
    formatMib(s.mib),
    String(s.dirtyMibPerSec),
    methodById(s.method).label,
    s.downtimeMs ? ms(s.downtimeMs.median) : 'n/a',
    ...PHASE_KEYS.map((k) => (s.phases && (s.phases[k] > 0 || s.method !== 'criu-stop-copy') ? ms(s.phases[k]) : '–')),
  ];
}

const LAZY_HEADER = [
  'RSS',
  'restore',
  'ok/runs',
  'downtime ms',
  ...PHASE_KEYS.map((k) => PHASE_LABELS[k]),
  'fill s',
  'fill GB/s',
  'pager GB/s',
  'faults (waited)',
  'replaced pages',
  'work during fill / idle',
  'total s',
];

function lazyRow(s: CaseMethodStats | undefined, mibOf: number, restore: 'lazy' | 'eager'): string[] {
  if (!s) return [formatMib(mibOf), restore, '0/0', ...LAZY_HEADER.slice(3).map(() => 'n/a')];
  const lazy = restore === 'lazy';
  return [
    formatMib(s.mib),
    restore,
    `${s.ok}/${s.ok + s.failed}`,
    fmtSpread(s.downtimeMs, ms),
    ...PHASE_KEYS.map((k) => (s.phases ? ms(s.phases[k]) : 'n/a')),
    lazy ? fmtSpread(s.fillMs, sec2) : '–',
    lazy ? fmtSpread(s.fillBytesPerSec, gbps) : '–',
    lazy ? fmtSpread(s.pagerBytesPerSec, gbps) : '–',
    lazy ? `${fmtSpread(s.fillFaults, int)} (${fmtSpread(s.fillFaultsWaited, int)})` : '–',
    lazy ? fmtSpread(s.replacedPages, int) : '–',
    fmtSpread(s.fillWorkRatio, two),
    fmtSpread(s.totalMs, sec),
  ];
}

/** Lazy beside eager, per case that has either (the figures of issue 11's note). */
function lazyVsEagerTable(stats: CaseMethodStats[]): string | undefined {
  const rows = lazyVsEager(stats);
  if (rows.length === 0) return undefined;
  const body = rows.flatMap((r) => [lazyRow(r.lazy, r.mib, 'lazy'), lazyRow(r.eager, r.mib, 'eager')]);
  const cases = rows.map((r) => r.caseId).join(', ');
  return `${table(LAZY_HEADER, body)}\n\n(${cases}; medians and min–max)`;
}

const POST_COPY_HEADER = [
  'RSS',
  'method',
  'ok/runs',
  'post-copied',
  'downtime ms',
  'total s',
  'sent / RSS',
  'pre-copy / RSS',
  'downtime / RSS',
  'post-copy / RSS',
  'rounds',
  'work pre-copy / idle',
  'work post-copy / idle',
  'remote pages',
  'faults waited',
  'wait p50 ms',
  'wait p99 ms',
];
const usToMs = (v: number): string => (v / 1000).toFixed(2);

function postCopyRow(s: CaseMethodStats): string[] {
  const lazy = s.restoreMode === 'lazy';
  return [
    formatMib(s.mib),
    methodById(s.method).label,
    `${s.ok}/${s.ok + s.failed}`,
    `${s.postCopied}/${s.ok}`,
    fmtSpread(s.downtimeMs, ms),
    fmtSpread(s.totalMs, sec),
    fmtSpread(s.phaseBytesPerRss, two),
    fmtSpread(s.precopyBytesPerRss, two),
    fmtSpread(s.downtimeBytesPerRss, two),
    fmtSpread(s.postcopyBytesPerRss, two),
    methodById(s.method).stopAndCopy ? '–' : fmtSpread(s.rounds, int),
    methodById(s.method).stopAndCopy ? '–' : fmtSpread(s.precopyWorkRatio, two),
    lazy ? fmtSpread(s.fillWorkRatio, two) : '–',
    lazy ? fmtSpread(s.remotePages, int) : '–',
    lazy ? fmtSpread(s.fillFaultsWaited, int) : '–',
    lazy ? fmtSpread(s.faultWaitP50Us, usToMs) : '–',
    lazy ? fmtSpread(s.faultWaitP99Us, usToMs) : '–',
  ];
}

/** Issue 12's figures: the post-copy methods beside today's throttle path and stop-and-copy, per case. */
function postCopyTable(stats: CaseMethodStats[]): string | undefined {
  const cases = [...new Set(stats.filter((s) => methodById(s.method).postCopy !== undefined).map((s) => s.caseId))];
  if (cases.length === 0) return undefined;
  const rows = stats.filter((s) => cases.includes(s.caseId) && ['ferry-postcopy', 'ferry-postcopy-always', 'ferry-live-lazy', 'ferry-stop-copy'].includes(s.method));
  return `${table(POST_COPY_HEADER, rows.map(postCopyRow))}\n\n(${cases.join(', ')}; medians and min–max; RSS = the dump's pages x 4 KiB; work post-copy = from the resume to \`ferry migrate\`'s return, the fill: lazy restores only)`;
}

/** The targets a results file is judged by: issue 12's for a `--post-copy` run; else issue 11's and 3's (and 12's
 * when it has post-copy runs). */
export function targetsOf(file: BenchFile, stats: readonly CaseMethodStats[]): TargetResult[] {
  const post = stats.some((s) => methodById(s.method).postCopy !== undefined) ? evaluatePostCopyTargets(stats) : [];
  return file.mode === 'post-copy' ? post : [...evaluateTargets(stats), ...post];
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function targetRows(targets: TargetResult[]): string[][] {
  return targets.map((t) => [
    String(t.issue),
    t.what,
    t.limit,
    t.value,
    t.ratioToLimit === undefined ? 'n/a' : t.ratioToLimit.toFixed(2),
    t.met === undefined ? 'n/a' : t.met ? 'met' : '**missed**',
    [t.beside, t.note].filter((x) => x !== undefined).join('; '),
  ]);
}
const TARGET_HEADER = ['issue', 'target', 'limit', 'measured (median)', 'measured / limit', 'result', 'beside; dominating part / why'];

/** The result and target tables for the console (Markdown tables read fine in a terminal). */
export function consoleReport(file: BenchFile): string {
  const stats = sortStats(aggregate(file.runs));
  const targets = targetsOf(file, stats);
  const lazy = lazyVsEagerTable(stats);
  const post = postCopyTable(stats);
  return [
    table(RESULT_HEADER, stats.map(resultRow)),
    ...(lazy ? ['', 'Lazy vs eager restore (pre-copy; the downtime split in ms, the fill after the resume):', lazy] : []),
    ...(post ? ['', 'Post-copy vs the throttle path vs stop-and-copy (bytes by phase, work rates, faults that waited):', post] : []),
    '',
    file.mode === 'post-copy' ? 'Targets (issue 12: post-copy):' : 'Targets (issue 11: lazy restore; issue 3: pre-copy, eager restore; issue 12: post-copy):',
    table(TARGET_HEADER, targetRows(targets)),
  ].join('\n');
}

export function markdownReport(file: BenchFile, svgName: string): string {
  const stats = sortStats(aggregate(file.runs));
  const targets = targetsOf(file, stats);
  const m = file.machine;
  const failed = file.runs.filter((r) => !r.ok);
  const reps = spreadOfReps(file);
  const out: string[] = [];
  out.push('# Benchmarks');
  out.push('');
  out.push(
    `Generated by \`npm run bench\` (bench/run.ts) on ${m.date}: a ${file.mode} run of ${(file.durationMs / 60_000).toFixed(1)} minutes, ` +
      `${file.runs.length} migrations. The raw records of every run are in \`bench/results/\` (the summary of the latest full run is ` +
      '`bench/results/latest-summary.json`). Re-run it rather than edit this page.',
  );
  out.push('');
  out.push('## Machine');
  out.push('');
  out.push(
    table(
      ['kernel', 'CPU', 'cores', 'memory', 'CRIU', 'Node', 'Ferry commit'],
      [[m.kernel, m.cpuModel, String(m.cores), `${m.memoryGiB.toFixed(1)} GiB`, m.criuVersion, m.nodeVersion, m.ferryCommit]],
    ),
  );
  out.push('');
  out.push('A VM shared with other work: first-touch memory is slow and timings vary from run to run, hence the spreads.');
  out.push('');
  out.push('## How it is measured');
  out.push('');
  out.push(
    [
      '- Two "hosts": network namespaces joined by a veth pair (testbed/two-hosts.ts). The link is shaped on the source\'s egress with',
      '  `tc qdisc ... tbf rate R burst 1mb latency 50ms` (1 Gbit/s, 100 Mbit/s), or left as the raw veth ("unshaped").',
      '- The task is `testbed/workloads/memtest.c`: RSS as listed, rewriting random pages at the dirty rate; a fresh task for every run.',
      '- Methods, interleaved within each repetition (the order rotates):',
      '  - **Ferry pre-copy, lazy**: `ferry migrate PID --to DEST --json --on-no-converge throttle --restore lazy` (defaults otherwise: 300 ms',
      '    downtime budget, 10 rounds): the copy resumes at once and the dest\'s pager pages its memory in (the fill) while the source confirms',
      '    the pages it trusted against the frozen original; `ferry migrate` returns when the fill is done and the original is killed.',
      '  - **Ferry pre-copy, eager**: the same with `--restore eager`: `criu restore` brings every page in before the resume.',
      '  - **Ferry stop-and-copy**: `ferry migrate ... --no-precopy --restore eager`: frozen at once, the final delta carries every page.',
      '  - **Ferry post-copy (auto / always)** (`--post-copy` runs only): `ferry migrate ... --post-copy auto|always --restore lazy`: the copy',
      '    resumes when pre-copy does not converge (auto) or right after round 0 (always), and the pages the dest lacks come from the',
      '    frozen original after the resume. Bytes by phase: the summary\'s precopyBytes, downtimeBytes and postcopyBytes over the dump\'s pages x 4 KiB.',
      '  - **plain CRIU**: `criu dump --leave-stopped` (src netns) → `tar | tcp-pipe` over the shaped link → `criu restore -d` (dst netns) →',
      '    SIGKILL to the stopped original. Images on tmpfs on both sides; the receiver waits before the clock starts.',
      '- Downtime: Ferry\'s summary (`downtimeMs`: start of `criu dump` to the Commit\'s answer, the copy resumed). Plain CRIU: start of',
      '  `criu dump` to the end of `criu restore` (which resumes the tree). Total: Ferry\'s `totalMs` (a lazy one includes the fill); plain',
      '  CRIU\'s equals its downtime. The split: dump, final delta (transfer), rebuild, restore, commit, and the gaps (downtime minus their sum).',
      '- Fill (lazy): `fillMs`, from the Commit\'s answer to the dest\'s "every page in"; fill GB/s = the dump\'s pages x 4 KiB / fillMs; pager GB/s = the pages the pager put in / its own time from criu restore\'s end (the copy stopped until the Commit meanwhile);',
      '  faults of the copy during the fill (those that waited for the source\'s confirmation); pages whose bytes the source replaced.',
      '- Bytes sent: Ferry\'s page bytes plus image bytes; plain CRIU\'s tar stream. "sent / RSS" divides by the task\'s VmRSS before the migration.',
      '- Work rate: pages the task rewrote per second (its own counter and clock, via SIGUSR2). Idle: a 2 s window just before the migration.',
      '  Pre-copy: sampled every 0.5 s from the first round to the freeze decision. Over migration: from just before the migration to',
      '  just after the copy resumed, so it includes the downtime (spans across the original and its copy are on the benchmark\'s clock: a',
      '  restored copy\'s CLOCK_MONOTONIC is set back by criu, 240-320 ms here). During fill: the copy\'s counter read as soon as `ferry migrate` returned,',
      '  less the original\'s at its last sample before the freeze (and the writes estimated between that sample and the freeze), over',
      '  the time from the resume to that read: it spans the fill plus the kill of the original (eager: only the kill and the CLI\'s exit).',
      '  n/a for 0 MiB/s (nothing to count).',
      '- Every restored copy checks every page of its memory; a run with a bad page counts as failed.',
      `- Cells show the median and, in parentheses, the min–max over the runs (${reps}).`,
    ].join('\n'),
  );
  out.push('');
  out.push('Link check (one TCP stream of zeros through the same path, first byte to last):');
  out.push('');
  out.push(table(['link', 'measured'], file.linkChecks.map((c) => [LINKS[c.link].label, `${c.mbitPerSec.toFixed(0)} Mbit/s`])));
  out.push('');
  out.push('## Results');
  out.push('');
  out.push(table(RESULT_HEADER, stats.map(resultRow)));
  out.push('');
  out.push('"downtime mostly": the part with the largest median share of the downtime (freeze/dump, transfer (final delta), rebuild,');
  out.push('restore, resume/commit, gaps).');
  const lazyTable = lazyVsEagerTable(stats);
  if (lazyTable) {
    out.push('');
    out.push('### Lazy vs eager restore');
    out.push('');
    out.push('The same pre-copy, two restores, interleaved in one run: the downtime split (ms), then what the lazy fill did after the resume.');
    out.push('');
    out.push(lazyTable);
  }
  const postTable = postCopyTable(stats);
  if (postTable) {
    out.push('');
    out.push('### Post-copy');
    out.push('');
    out.push('Post-copy (`--post-copy auto|always --restore lazy`) beside the throttle path and stop-and-copy, interleaved in one run: bytes');
    out.push('sent by phase over the RSS, the task\'s work rate before and after the resume, and the faults that waited for a page.');
    out.push('');
    out.push(postTable);
  }
  out.push('');
  out.push(`![Downtime versus dirty rate](${svgName})`);
  out.push('');
  out.push('### Where the downtime goes');
  out.push('');
  out.push('Median ms of each part over the successful runs (plain CRIU: dump, copy, restore; its restore resumes the task). Gaps: the');
  out.push('downtime less the phases, what lies between them.');
  out.push('');
  out.push(table(PHASE_HEADER, stats.filter((x) => x.phases).map(phaseRow)));
  out.push('');
  out.push('## Targets');
  out.push('');
  out.push('Issue 11 (lazy restore) on Ferry pre-copy, lazy; its "stop-and-copy downtime" is Ferry\'s own stop-and-copy (eager), the ratio to');
  out.push('plain CRIU\'s beside it. Issue 3 (pre-copy) on Ferry pre-copy, eager: the restore those targets were set with. For a missed');
  out.push('downtime target the note names the part of the split that dominates (for a scaling target, the part that grows most).');
  out.push('');
  out.push(table(TARGET_HEADER, targetRows(targets)));
  out.push('');
  if (file.unavailable.length > 0 || file.skipped.length > 0 || failed.length > 0) {
    out.push('## Left out and failed');
    out.push('');
    for (const u of file.unavailable) out.push(`- ${methodById(u.method).label} did not run: ${u.reason}`);
    if (file.skipped.length > 0) {
      const byCase = new Map<string, number>();
      for (const s of file.skipped) byCase.set(s.caseId, (byCase.get(s.caseId) ?? 0) + 1);
      out.push(`- Left out to stay within the time budget: ${[...byCase].map(([c, n]) => `${c} (${n} runs)`).join(', ')}.`);
    }
    for (const r of failed) out.push(`- Failed: ${r.caseId} ${methodById(r.method).label} rep ${r.rep}: ${(r.error ?? '').split('\n')[0]?.slice(0, 300)}`);
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

function spreadOfReps(file: BenchFile): string {
  const counts = new Map<string, number>();
  for (const r of file.runs) counts.set(`${r.caseId}/${r.method}`, (counts.get(`${r.caseId}/${r.method}`) ?? 0) + 1);
  const n = [...counts.values()];
  if (n.length === 0) return 'no runs';
  const lo = Math.min(...n);
  const hi = Math.max(...n);
  return lo === hi ? `${lo} per case and method` : `${lo} to ${hi} per case and method; the time budget decided`;
}

// ---------------------------------------------------------------------------------------------------------
// The figure

const METHOD_STYLE: Record<MethodId, { color: string; label: string }> = {
  'ferry-live-lazy': { color: '#2ca02c', label: 'Ferry pre-copy, lazy restore' },
  'ferry-live-eager': { color: '#1f77b4', label: 'Ferry pre-copy, eager restore' },
  'ferry-stop-copy': { color: '#d62728', label: 'Ferry stop-and-copy' },
  'criu-stop-copy': { color: '#7f7f7f', label: 'plain CRIU stop-and-copy' },
  'ferry-postcopy': { color: '#9467bd', label: 'Ferry post-copy (auto)' },
  'ferry-postcopy-always': { color: '#ff7f0e', label: 'Ferry post-copy (always)' },
};
const RSS_STYLE: { mib: number; dash: string; marker: Series['marker'] }[] = [
  { mib: 256, dash: '', marker: 'circle' },
  { mib: 1024, dash: '6 3', marker: 'square' },
  { mib: 4096, dash: '2 2', marker: 'triangle' },
];

export function downtimeChart(file: BenchFile): string {
  const stats = aggregate(file.runs);
  const panels: Panel[] = [];
  for (const link of LINK_ORDER) {
    const inLink = stats.filter((s) => s.link === link && s.downtimeMs);
    if (inLink.length === 0) continue;
    const rates = [...new Set(inLink.map((s) => s.dirtyMibPerSec))].sort((a, b) => a - b);
    const series: Series[] = [];
    for (const rss of RSS_STYLE) {
      for (const method of METHOD_ORDER) {
        const pts = inLink.filter((s) => s.mib === rss.mib && s.method === method);
        if (pts.length === 0) continue;
        series.push({
          label: `${METHOD_STYLE[method].label}, ${formatMib(rss.mib)}`,
          color: METHOD_STYLE[method].color,
          dash: rss.dash,
          marker: rss.marker,
          points: pts.map((s) => ({ x: rates.indexOf(s.dirtyMibPerSec), median: s.downtimeMs!.median, min: s.downtimeMs!.min, max: s.downtimeMs!.max })),
        });
      }
    }
    panels.push({ title: LINKS[link].label, categories: rates.map(String), series });
  }
  const sizes = RSS_STYLE.filter((r) => stats.some((s) => s.mib === r.mib));
  const chart: Chart = {
    title: 'Downtime versus dirty rate: pre-copy versus stop-and-copy',
    subtitle: `median and min–max per case; ${file.machine.cpuModel}, ${file.machine.cores} cores, kernel ${file.machine.kernel}, ${file.machine.date}`,
    xLabel: 'dirty rate (MiB/s)',
    yLabel: 'downtime (log scale)',
    panels,
    refLines: [
      { y: 150, label: '150 ms (lazy, 256 MiB)' },
      { y: 200, label: '200 ms (lazy, 1 GiB)' },
      { y: 300, label: '300 ms (issue 3)' },
    ],
    legend: [
      ...METHOD_ORDER.filter((m) => stats.some((s) => s.method === m)).map((m) => ({ label: METHOD_STYLE[m].label, color: METHOD_STYLE[m].color, dash: '', marker: undefined })),
      ...sizes.map((r) => ({ label: `RSS ${formatMib(r.mib)}`, color: '#333', dash: r.dash, marker: r.marker })),
    ],
  };
  return renderChart(chart);
}
