/**
 * Where an agent's CPU went: a V8 CPU profile (`node --cpu-prof`) reduced to its top functions by self time,
 * optionally only the samples inside a window of CLOCK_MONOTONIC (a profile's timestamps are V8's TimeTicks,
 * which on Linux is that clock; process.hrtime reads the same one), e.g. round 0 of a migration.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  /** functionName (file:line), or V8's own entries: (garbage collector), (program), (idle). */
  what: string;
  ms: number;
  /** Share of the non-idle samples in the window. */
  percent: number;
}

export interface ProfileSummary {
  /** Non-idle sampled time in the window, ms. */
  busyMs: number;
  windowMs: number;
  top: SelfTime[];
}

function frameName(n: ProfileNode): string {
  const f = n.callFrame;
  const fn = f.functionName || '(anonymous)';
  if (!f.url) return fn;
  // Short and stable: <package>/<file> in node_modules, else the file and its directory (native/addon.js).
  const url = f.url.replace(/^file:\/\//, '');
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(?:.*\/)?([^/]+)$/.exec(url);
  const file = m ? `${m[1]}/${m[2]}` : url.split('/').slice(-2).join('/');
  return `${fn} (${file}:${f.lineNumber + 1})`;
}

export function summariseCpuProfile(path: string, window?: { fromUs: number; toUs: number }, topN = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let t = p.startTime;
  let busyUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    const node = byId.get(p.samples[i]!);
    if (!node) continue;
    const name = frameName(node);
    if (name === '(idle)') continue;
    busyUs += dt;
    self.set(name, (self.get(name) ?? 0) + dt);
  }
  const top = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, topN)
    .map(([what, us]) => ({ what, ms: us / 1000, percent: busyUs > 0 ? (100 * us) / busyUs : 0 }));
  const windowMs = window ? (window.toUs - window.fromUs) / 1000 : (p.endTime - p.startTime) / 1000;
  return { busyMs: busyUs / 1000, windowMs, top };
}
