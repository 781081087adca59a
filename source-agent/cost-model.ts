/**
 * The fixed cost of a freeze (dump, final images, rebuild, restore, resume: everything but sending the final
 * dirty pages), which the convergence policy adds to the transfer time of the dirty set.
 *
 * Learned: after each migration the source records (resident bytes, fixed cost) per dest in
 * the state dir's source/cost-model.json (config: --state-dir / $FERRY_STATE_DIR) and fits cost = a + b * bytes over the last samples. With no
 * history yet it is estimated from this migration's own measurements: the lazy dump and the final delta each
 * walk the task's memory about as fast as the tracker reads it, and the restore writes it into fresh memory
 * about as fast as the dest stores pages (the dest's own read-back runs beside the restore).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../shared/logging/logger.js';
import { transferRate, type FixedCost, type RoundRecord } from '../shared/policy/convergence.js';

export interface CostSample {
  residentBytes: number;
  fixedMs: number;
  at: string;
}

type CostFile = Record<string, CostSample[]>;

const KEEP = 10;

export function costModelPath(stateDir: string): string {
  return join(stateDir, 'source', 'cost-model.json');
}

async function load(path: string): Promise<CostFile> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as CostFile;
  } catch {
    return {}; // no history yet, or unreadable: learn again
  }
}

export async function loadCostSamples(dest: string, path: string): Promise<CostSample[]> {
  return (await load(path))[dest] ?? [];
}

export async function recordCostSample(dest: string, sample: CostSample, path: string): Promise<void> {
  const all = await load(path);
  all[dest] = [...(all[dest] ?? []), sample].slice(-KEEP);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, JSON.stringify(all, null, 1));
  await rename(`${path}.tmp`, path);
}

/** Least squares of fixedMs = a + b * bytes; proportional (a = 0) when the sizes do not differ enough. */
export function fitFixedCost(samples: readonly CostSample[], residentBytes: number): number | undefined {
  if (samples.length === 0) return undefined;
  const n = samples.length;
  const mx = samples.reduce((s, x) => s + x.residentBytes, 0) / n;
  const my = samples.reduce((s, x) => s + x.fixedMs, 0) / n;
  const sxx = samples.reduce((s, x) => s + (x.residentBytes - mx) ** 2, 0);
  const spread = Math.sqrt(sxx / n);
  if (n >= 2 && spread > 0.2 * mx) {
    const b = samples.reduce((s, x) => s + (x.residentBytes - mx) * (x.fixedMs - my), 0) / sxx;
    const a = my - b * mx;
    const fitted = a + b * residentBytes;
    if (b >= 0 && fitted > 0) return fitted;
  }
  const perByte = samples.map((x) => x.fixedMs / Math.max(1, x.residentBytes)).sort((p, q) => p - q);
  return perByte[Math.floor(perByte.length / 2)]! * residentBytes;
}

export interface MeasuredRates {
  /** Bytes per second the tracker read the task's memory at (source side). */
  readBytesPerSecond: number | undefined;
  /** Bytes per second the dest stored pages at. */
  storeBytesPerSecond: number | undefined;
}

export function fixedCost(samples: readonly CostSample[], residentBytes: number, rates: MeasuredRates): FixedCost {
  const learned = fitFixedCost(samples, residentBytes);
  if (learned !== undefined) {
    return { ms: learned, source: `learned from ${samples.length} earlier migration${samples.length === 1 ? '' : 's'} to this dest` };
  }
  const read = rates.readBytesPerSecond;
  const store = rates.storeBytesPerSecond;
  if (read && store) {
    return { ms: (2 * residentBytes * 1000) / read + (residentBytes * 1000) / store, source: "estimated from this migration's read and store rates" };
  }
  // Nothing measured yet (round 0 not done): a conservative 1 s per GiB, replaced after the first round.
  return { ms: residentBytes / 2 ** 30 * 1000, source: 'provisional, before any measurement' };
}

/** Teaches the model after a migration: its freeze's cost without the transfer of the final delta's pages. */
export async function learnFixedCost(
  path: string,
  dest: string,
  m: { rounds: readonly RoundRecord[]; residentBytes: number; downtimeMs: number; finalDeltaBytes: number },
  log: Logger,
): Promise<void> {
  const rate = transferRate(m.rounds);
  const transferMs = rate ? (m.finalDeltaBytes * 1000) / rate : 0;
  try {
    await recordCostSample(dest, { residentBytes: m.residentBytes, fixedMs: Math.max(0, m.downtimeMs - transferMs), at: new Date().toISOString() }, path);
  } catch (e) {
    log.warn('could not record the cost model sample', { err: e }); // the migration itself succeeded
  }
}
