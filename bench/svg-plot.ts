/**
 * A small SVG line chart with a log-scale y axis, side-by-side panels, min–max whiskers and a legend: enough
 * for the downtime figure without a plotting dependency. Categories on the x axis are evenly spaced.
 */

export interface Point {
  /** Index into the panel's categories. */
  x: number;
  median: number;
  min: number;
  max: number;
}

export interface Series {
  label: string;
  color: string;
  /** stroke-dasharray, '' for solid. */
  dash: string;
  marker: 'circle' | 'square' | 'triangle';
  points: Point[];
}

export interface Panel {
  title: string;
  categories: string[];
  series: Series[];
}

export interface Chart {
  title: string;
  subtitle: string;
  xLabel: string;
  yLabel: string;
  panels: Panel[];
  /** Horizontal reference lines, e.g. a target. */
  refLines: { y: number; label: string }[];
  /** Legend entries (usually one per method and one per marker/dash meaning). */
  legend: { label: string; color: string; dash: string; marker: Series['marker'] | undefined }[];
}

const W_PANEL = 300;
const H_PLOT = 300;
const M = { left: 80, right: 16, top: 64, bottom: 48 };
const GAP = 24;
const LEGEND_H = 56;

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f = (n: number): string => (Math.round(n * 10) / 10).toString();

function formatMs(ms: number): string {
  if (ms >= 1000) return `${ms / 1000} s`;
  return `${ms} ms`;
}

/** 1-2-5 ticks covering [lo, hi]. */
function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(Number(v.toPrecision(3)));
    }
  }
  return ticks;
}

function marker(kind: Series['marker'], x: number, y: number, color: string): string {
  const r = 4;
  switch (kind) {
    case 'circle':
      return `<circle cx="${f(x)}" cy="${f(y)}" r="${r}" fill="${color}"/>`;
    case 'square':
      return `<rect x="${f(x - r)}" y="${f(y - r)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 'triangle':
      return `<path d="M${f(x)} ${f(y - r - 1)} L${f(x + r + 1)} ${f(y + r)} L${f(x - r - 1)} ${f(y + r)} Z" fill="${color}"/>`;
  }
}

export function renderChart(chart: Chart): string {
  const all = chart.panels.flatMap((p) => p.series.flatMap((s) => s.points.flatMap((pt) => [pt.min, pt.max, pt.median])));
  all.push(...chart.refLines.map((r) => r.y));
  const positive = all.filter((v) => v > 0);
  if (positive.length === 0) positive.push(100, 1000);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
  const hi = Math.max(10 ** Math.ceil(Math.log10(Math.max(...positive))), lo * 10);
  const yOf = (v: number): number => M.top + H_PLOT * (1 - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
  const width = M.left + chart.panels.length * W_PANEL + (chart.panels.length - 1) * GAP + M.right;
  const height = M.top + H_PLOT + M.bottom + LEGEND_H;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${M.left}" y="20" font-size="15" font-weight="bold">${esc(chart.title)}</text>`);
  out.push(`<text x="${M.left}" y="38" fill="#555">${esc(chart.subtitle)}</text>`);
  out.push(`<text transform="translate(18 ${M.top + H_PLOT / 2}) rotate(-90)" text-anchor="middle">${esc(chart.yLabel)}</text>`);

  chart.panels.forEach((panel, pi) => {
    const x0 = M.left + pi * (W_PANEL + GAP);
    const n = Math.max(1, panel.categories.length);
    const xOf = (i: number): number => x0 + (W_PANEL * (i + 0.5)) / n;
    out.push(`<g>`);
    out.push(`<rect x="${x0}" y="${M.top}" width="${W_PANEL}" height="${H_PLOT}" fill="none" stroke="#999"/>`);
    out.push(`<text x="${x0 + W_PANEL / 2}" y="${M.top - 8}" text-anchor="middle" font-weight="bold">${esc(panel.title)}</text>`);
    for (const t of logTicks(lo, hi)) {
      const y = yOf(t);
      const major = /^1/.test(String(t));
      out.push(`<line x1="${x0}" x2="${x0 + W_PANEL}" y1="${f(y)}" y2="${f(y)}" stroke="${major ? '#ddd' : '#f0f0f0'}"/>`);
      if (pi === 0) out.push(`<text x="${x0 - 6}" y="${f(y + 4)}" text-anchor="end">${esc(formatMs(t))}</text>`);
    }
    panel.categories.forEach((c, i) => {
      out.push(`<text x="${f(xOf(i))}" y="${M.top + H_PLOT + 16}" text-anchor="middle">${esc(c)}</text>`);
    });
    out.push(`<text x="${x0 + W_PANEL / 2}" y="${M.top + H_PLOT + 34}" text-anchor="middle">${esc(chart.xLabel)}</text>`);
    for (const r of chart.refLines) {
      const y = yOf(r.y);
      out.push(`<line x1="${x0}" x2="${x0 + W_PANEL}" y1="${f(y)}" y2="${f(y)}" stroke="#2a2" stroke-dasharray="2 3"/>`);
      if (pi === 0) out.push(`<text x="${x0 + 4}" y="${f(y - 4)}" fill="#2a2">${esc(r.label)}</text>`);
    }
    // Series side by side around each category, so that whiskers do not hide each other.
    const k = panel.series.length;
    const step = Math.min(10, (W_PANEL / n) / (k + 1));
    panel.series.forEach((s, si) => {
      const dx = (si - (k - 1) / 2) * step;
      const pts = [...s.points].sort((a, b) => a.x - b.x);
      if (pts.length > 1) {
        const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${f(xOf(p.x) + dx)} ${f(yOf(p.median))}`).join(' ');
        out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
      }
      for (const p of pts) {
        const x = xOf(p.x) + dx;
        out.push(`<line x1="${f(x)}" x2="${f(x)}" y1="${f(yOf(p.min))}" y2="${f(yOf(p.max))}" stroke="${s.color}" stroke-width="1"/>`);
        out.push(marker(s.marker, x, yOf(p.median), s.color));
      }
    });
    out.push(`</g>`);
  });

  // Legend: as many entries per line as fit.
  const ly = M.top + H_PLOT + M.bottom + 8;
  const slot = 190;
  const perLine = Math.max(1, Math.floor((width - M.left - M.right) / slot));
  chart.legend.forEach((e, i) => {
    const x = M.left + (i % perLine) * slot;
    const y = ly + Math.floor(i / perLine) * 20;
    out.push(`<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="${e.color}" stroke-width="1.5"${e.dash ? ` stroke-dasharray="${e.dash}"` : ''}/>`);
    if (e.marker) out.push(marker(e.marker, x + 14, y, e.color));
    out.push(`<text x="${x + 34}" y="${y + 4}">${esc(e.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
