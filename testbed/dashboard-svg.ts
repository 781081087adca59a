/**
 * The Grafana dashboard (deploy/grafana/ferry.json) drawn as an SVG from the series a real Prometheus
 * answered for its panels: the same grid (24 columns, gridPos), titles, legends and units, so the docs show
 * what an operator's Grafana shows for one migration without running Grafana. Time series as steps (a gauge
 * holds its value until the next scrape), stats and bar gauges as their last value, the table as label rows.
 */
import type { DashboardPanel, PanelSeries } from './grafana-dashboard.js';
import { esc, f, tickLabel, ticks } from './time-series-svg.js';

export interface DrawnPanel {
  panel: DashboardPanel;
  series: PanelSeries[];
}

export interface DashboardPicture {
  title: string;
  subtitle: string[];
  /** unix seconds of the range's first and last point: every time series shares this axis. */
  start: number;
  end: number;
  /** Seconds between the range queries' points: a longer gap in a series breaks its line. */
  stepSeconds: number;
  panels: DrawnPanel[];
}

const COL = 50;
const ROW = 30;
const PAD = 6;
const HEADER = 64;
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

interface Scaled {
  divisor: number;
  unit: string;
}

/** Grafana's units, scaled so the axis reads in round numbers. */
function scaleFor(unit: string | undefined, max: number): Scaled {
  const binary = (suffix: string): Scaled => {
    const steps = ['', 'Ki', 'Mi', 'Gi', 'Ti'];
    let i = 0;
    while (i < steps.length - 1 && max >= 1024 ** (i + 1)) i++;
    return { divisor: 1024 ** i, unit: `${steps[i]}${suffix}` };
  };
  switch (unit) {
    case 'Bps':
      return binary('B/s');
    case 'bytes':
      return binary('B');
    case 'percentunit':
      return { divisor: 0.01, unit: '%' };
    case 's':
      return max > 0 && max < 1 ? { divisor: 0.001, unit: 'ms' } : { divisor: 1, unit: 's' };
    default:
      return { divisor: 1, unit: '' };
  }
}

const lastValue = (s: PanelSeries): number | undefined => s.values.at(-1)?.[1];

function formatValue(v: number | undefined, unit: string | undefined): string {
  if (v === undefined || Number.isNaN(v)) return 'No data';
  const sc = scaleFor(unit, Math.abs(v));
  return tickLabel(v / sc.divisor, sc.unit);
}

export function renderDashboard(pic: DashboardPicture): string {
  const width = 24 * COL;
  const bottom = Math.max(...pic.panels.map((p) => p.panel.gridPos.y + p.panel.gridPos.h));
  const height = HEADER + bottom * ROW + PAD;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#f4f5f5"/>`,
    `<text x="${PAD}" y="22" font-size="15" font-weight="bold">${esc(pic.title)}</text>`,
    ...pic.subtitle.map((line, i) => `<text x="${PAD}" y="${38 + i * 14}" fill="#555">${esc(line)}</text>`),
  ];
  for (const drawn of pic.panels) {
    const g = drawn.panel.gridPos;
    const box = { x: g.x * COL + PAD, y: HEADER + g.y * ROW, w: g.w * COL - PAD, h: g.h * ROW - PAD };
    if (drawn.panel.type === 'row') {
      out.push(`<text x="${box.x}" y="${box.y + 18}" font-size="13" font-weight="bold" fill="#333">${esc(drawn.panel.title)}</text>`);
      continue;
    }
    out.push(`<rect x="${box.x}" y="${box.y}" width="${box.w}" height="${box.h}" fill="white" stroke="#d8d9da"/>`);
    out.push(`<text x="${box.x + 8}" y="${box.y + 16}" font-weight="bold">${esc(drawn.panel.title)}</text>`);
    const inner = { x: box.x + 8, y: box.y + 24, w: box.w - 16, h: box.h - 30 };
    const unit = drawn.panel.fieldConfig?.defaults?.unit;
    if (drawn.panel.type === 'timeseries') out.push(...timeSeries(drawn.series, unit, inner, pic));
    else if (drawn.panel.type === 'stat') out.push(...stat(drawn.series, unit, inner));
    else if (drawn.panel.type === 'bargauge') out.push(...barGauge(drawn.series, unit, inner));
    else if (drawn.panel.type === 'table') out.push(...table(drawn.series, inner));
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

function noData(b: Box): string[] {
  return [`<text x="${f(b.x + b.w / 2)}" y="${f(b.y + b.h / 2)}" text-anchor="middle" fill="#999">No data</text>`];
}

function timeSeries(series: PanelSeries[], unit: string | undefined, b: Box, axis: { start: number; end: number; stepSeconds: number }): string[] {
  const t0 = axis.start;
  const t1 = axis.end;
  const points = series.flatMap((s) => s.values.filter(([, v]) => Number.isFinite(v)));
  if (points.length === 0) return noData(b);
  const legendRows = Math.min(series.length, 3);
  const plot = { x: b.x + 56, y: b.y + 4, w: b.w - 60, h: b.h - 22 - legendRows * 13 };
  const sc = scaleFor(unit, Math.max(...points.map(([, v]) => Math.abs(v))));
  const ys = ticks(Math.max(0, ...points.map(([, v]) => v / sc.divisor)));
  const yMax = ys.at(-1)!;
  const span = Math.max(1, t1 - t0);
  const x = (t: number): number => plot.x + ((t - t0) / span) * plot.w;
  const y = (v: number): number => plot.y + plot.h - (Math.max(0, Math.min(v / sc.divisor, yMax)) / yMax) * plot.h;
  const out: string[] = [];
  for (const v of ys) {
    const yy = plot.y + plot.h - (v / yMax) * plot.h;
    out.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${f(yy)}" y2="${f(yy)}" stroke="#eee"/>`);
    out.push(`<text x="${plot.x - 4}" y="${f(yy + 4)}" text-anchor="end" font-size="9" fill="#666">${esc(tickLabel(v, sc.unit))}</text>`);
  }
  for (const s of ticks(span)) {
    if (s > span) break;
    out.push(`<text x="${f(x(t0 + s))}" y="${f(plot.y + plot.h + 11)}" text-anchor="middle" font-size="9" fill="#666">${s} s</text>`);
  }
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    // A gap in the answer (no sample at a step) breaks the line, as Grafana draws it.
    let d = '';
    let prevT: number | undefined;
    for (const [t, v] of s.values) {
      if (!Number.isFinite(v)) continue;
      d += prevT === undefined || t - prevT > 1.5 * axis.stepSeconds ? `M${f(x(t))},${f(y(v))}` : `H${f(x(t))}V${f(y(v))}`;
      prevT = t;
    }
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    if (i < legendRows) {
      const ly = plot.y + plot.h + 24 + i * 13;
      const more = i === legendRows - 1 && series.length > legendRows ? ` (+${series.length - legendRows} more)` : '';
      out.push(`<line x1="${plot.x}" x2="${plot.x + 14}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
      out.push(`<text x="${plot.x + 18}" y="${ly}" font-size="10">${esc(s.legend + more)}</text>`);
    }
  });
  return out;
}

function stat(series: PanelSeries[], unit: string | undefined, b: Box): string[] {
  const v = series.length === 0 ? undefined : series.reduce((a, s) => a + (lastValue(s) ?? 0), 0);
  return [`<text x="${f(b.x + b.w / 2)}" y="${f(b.y + b.h / 2 + 14)}" text-anchor="middle" font-size="36" fill="#2ca02c">${esc(formatValue(v, unit))}</text>`];
}

function barGauge(series: PanelSeries[], unit: string | undefined, b: Box): string[] {
  if (series.length === 0) return noData(b);
  const values = series.map((s) => lastValue(s) ?? 0);
  const max = Math.max(...values, 1);
  const rowH = Math.min(28, b.h / series.length);
  return series.flatMap((s, i) => {
    const yy = b.y + i * rowH;
    const w = ((values[i] ?? 0) / max) * (b.w - 190);
    return [
      `<text x="${b.x}" y="${f(yy + rowH / 2 + 4)}">${esc(s.legend)}</text>`,
      `<rect x="${b.x + 80}" y="${f(yy + 3)}" width="${f(Math.max(1, w))}" height="${f(rowH - 6)}" fill="${PALETTE[i % PALETTE.length]}"/>`,
      `<text x="${f(b.x + 86 + w)}" y="${f(yy + rowH / 2 + 4)}">${esc(formatValue(values[i], unit))}</text>`,
    ];
  });
}

function table(series: PanelSeries[], b: Box): string[] {
  if (series.length === 0) return noData(b);
  const hidden = new Set(['__name__']);
  const columns = [...new Set(series.flatMap((s) => Object.keys(s.metric)))].filter((k) => !hidden.has(k));
  const colW = b.w / Math.max(1, columns.length);
  const out = columns.map((c, j) => `<text x="${f(b.x + j * colW)}" y="${b.y + 10}" font-weight="bold" fill="#555">${esc(c)}</text>`);
  series.forEach((s, i) =>
    columns.forEach((c, j) => out.push(`<text x="${f(b.x + j * colW)}" y="${b.y + 26 + i * 14}">${esc((s.metric[c] ?? '').slice(0, 40))}</text>`)),
  );
  return out;
}
