/**
 * deploy/grafana/ferry.json as the tests read it: its panels, their PromQL with Grafana's variables filled in
 * the way Grafana fills them, and each panel's series fetched from a real Prometheus. The dashboard picture
 * (dashboard-svg.ts) and the e2e checks of its queries share this, so both see what an operator's Grafana sees.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './ferry-process.js';
import type { PrometheusHandle, RangeSeries } from './prometheus.js';

export const DASHBOARD_FILE = join(REPO_ROOT, 'deploy', 'grafana', 'ferry.json');

export interface DashboardTarget {
  expr: string;
  legendFormat?: string;
}

export interface DashboardPanel {
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: DashboardTarget[];
  fieldConfig?: { defaults?: { unit?: string } };
}

export interface Dashboard {
  title: string;
  panels: DashboardPanel[];
}

export function loadDashboard(file = DASHBOARD_FILE): Dashboard {
  return JSON.parse(readFileSync(file, 'utf8')) as Dashboard;
}

export interface FillOptions {
  /** Seconds between points: Grafana's $__interval. */
  stepSeconds: number;
  /** The whole range shown: Grafana's $__range. */
  rangeSeconds: number;
}

/**
 * Grafana's variables as Grafana sets them: $__rate_interval is max(4 x scrape interval, step + scrape
 * interval), here with the tests' 1 s scrape; $source/$dest "All" match every instance.
 */
export function fillVariables(expr: string, o: FillOptions): string {
  const step = Math.max(1, Math.round(o.stepSeconds));
  return expr
    .replaceAll('$__rate_interval', `${Math.max(4, step + 1)}s`)
    .replaceAll('$__interval', `${step}s`)
    .replaceAll('$__range', `${Math.max(1, Math.round(o.rangeSeconds))}s`)
    .replaceAll('$source', '.*')
    .replaceAll('$dest', '.*');
}

/** `{{phase}}` in a legend format -> the series' label. */
export function legendOf(target: DashboardTarget, metric: Record<string, string>): string {
  const format = target.legendFormat ?? '';
  const filled = format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k: string) => metric[k] ?? '');
  return filled.trim() || Object.entries(metric).map(([k, v]) => `${k}=${v}`).join(' ') || target.expr;
}

export interface PanelSeries {
  legend: string;
  values: [number, number][];
  metric: Record<string, string>;
}

/** Every target of a panel over [start, end], as Grafana's range queries would fetch them. */
export async function fetchPanel(prom: PrometheusHandle, panel: DashboardPanel, start: number, end: number, stepSeconds: number): Promise<PanelSeries[]> {
  const out: PanelSeries[] = [];
  for (const target of panel.targets ?? []) {
    const expr = fillVariables(target.expr, { stepSeconds, rangeSeconds: end - start });
    const series: RangeSeries[] = await prom.queryRange(expr, start, end, stepSeconds);
    for (const s of series) out.push({ legend: legendOf(target, s.metric), values: s.values, metric: s.metric });
  }
  return out;
}
