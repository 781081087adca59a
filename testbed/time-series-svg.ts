/**
 * Panels of Prometheus range-query series stacked over one time axis, as a small SVG without a plotting
 * dependency (bench/svg-plot.ts draws the benchmarks' categorical, log-scale figures; this is linear over time).
 * Drawn as steps: a gauge holds its value until the next scrape.
 */

export interface TimeSeriesLine {
  label: string;
  color: string;
  /** stroke-dasharray, '' for solid. */
  dash?: string;
  /** [unix seconds, value] */
  points: readonly (readonly [number, number])[];
}

export interface TimeSeriesPanel {
  title: string;
  /** The unit shown after the axis ticks ('s', 'pages', 'MiB'). */
  unit: string;
  lines: TimeSeriesLine[];
  /** Top of the y axis; higher values are drawn clipped at it (e.g. an early expectation far above the rest). */
  yMax?: number;
  /** Vertical markers (e.g. the freeze), at unix seconds. */
  marks?: { at: number; label: string }[];
}

export interface TimeSeriesChart {
  title: string;
  /** One line each. */
  subtitle: string[];
  panels: TimeSeriesPanel[];
}

const W = 720;
const PANEL_H = 130;
const GAP = 46;
const M = { left: 78, right: 150, top: 78, bottom: 40 };

export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
export const f = (n: number): string => (Math.round(n * 10) / 10).toString();

/** About four round ticks from 0 to at least hi. */
export function ticks(hi: number): number[] {
  if (!(hi > 0)) return [0, 1];
  const raw = hi / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = 0; v < hi + step; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

export function tickLabel(v: number, unit: string): string {
  const s = Math.abs(v) >= 1000 ? `${Number((v / 1000).toPrecision(3))}k` : String(Number(v.toPrecision(3)));
  return unit ? `${s} ${unit}` : s;
}

export function renderTimeSeries(chart: TimeSeriesChart): string {
  const all = chart.panels.flatMap((p) => p.lines.flatMap((l) => l.points.map(([t]) => t)));
  const t0 = Math.min(...all);
  const t1 = Math.max(...all, t0 + 1);
  const plotW = W - M.left - M.right;
  const x = (t: number): number => M.left + ((t - t0) / (t1 - t0)) * plotW;
  const height = M.top + chart.panels.length * (PANEL_H + GAP) - GAP + M.bottom;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${height}" fill="white"/>`,
    `<text x="${M.left}" y="22" font-size="15" font-weight="bold">${esc(chart.title)}</text>`,
    ...chart.subtitle.map((line, i) => `<text x="${M.left}" y="${38 + i * 14}" fill="#555">${esc(line)}</text>`),
  ];
  chart.panels.forEach((p, i) => {
    const top = M.top + i * (PANEL_H + GAP);
    const hi = p.yMax ?? Math.max(0, ...p.lines.flatMap((l) => l.points.map(([, v]) => v)));
    const ys = ticks(hi);
    const yMax = ys.at(-1)!;
    const y = (v: number): number => top + PANEL_H - (Math.min(v, yMax) / yMax) * PANEL_H;
    out.push(`<text x="${M.left}" y="${top - 8}" font-weight="bold">${esc(p.title)}</text>`);
    for (const v of ys) {
      out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#e4e4e4"/>`);
      out.push(`<text x="${M.left - 6}" y="${f(y(v) + 4)}" text-anchor="end" fill="#444">${esc(tickLabel(v, p.unit))}</text>`);
    }
    out.push(`<rect x="${M.left}" y="${top}" width="${plotW}" height="${PANEL_H}" fill="none" stroke="#999"/>`);
    for (const m of p.marks ?? []) {
      out.push(`<line x1="${f(x(m.at))}" x2="${f(x(m.at))}" y1="${top}" y2="${top + PANEL_H}" stroke="#c00" stroke-dasharray="2,3"/>`);
      out.push(`<text x="${f(x(m.at) + 3)}" y="${top + 11}" fill="#c00">${esc(m.label)}</text>`);
    }
    p.lines.forEach((l, j) => {
      if (l.points.length === 0) return;
      const d = l.points.map(([t, v], k) => (k === 0 ? `M${f(x(t))},${f(y(v))}` : `H${f(x(t))}V${f(y(v))}`)).join('');
      out.push(`<path d="${d}" fill="none" stroke="${l.color}" stroke-width="1.8" stroke-dasharray="${l.dash ?? ''}"/>`);
      const ly = top + 14 + j * 16;
      out.push(`<line x1="${W - M.right + 10}" x2="${W - M.right + 30}" y1="${ly - 4}" y2="${ly - 4}" stroke="${l.color}" stroke-width="2" stroke-dasharray="${l.dash ?? ''}"/>`);
      out.push(`<text x="${W - M.right + 34}" y="${ly}">${esc(l.label)}</text>`);
    });
  });
  const axisY = height - M.bottom + 16;
  for (const s of ticks(t1 - t0)) {
    if (t0 + s > t1) break;
    out.push(`<text x="${f(x(t0 + s))}" y="${axisY}" text-anchor="middle" fill="#444">${s} s</text>`);
  }
  out.push(`<text x="${M.left + plotW / 2}" y="${axisY + 16}" text-anchor="middle" fill="#444">time since the first sample (scraped every second)</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
