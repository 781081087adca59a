/**
 * The fixed cost of a freeze (dump, final images, rebuild, restore, resume: everything but sending the final
 * dirty pages), which the convergence policy adds to the transfer time of the dirty set.
 *
 * Learned: after each migration the source records (resident bytes, VMAs, restore mode, fixed cost) per dest in
 * the state dir's source/cost-model.json (config: --state-dir / $FERRY_STATE_DIR) and fits cost = a + b * bytes +
 * c * VMAs over the last samples of the same restore mode (fitFixedCost). With no history yet it is estimated
 * from this migration's own measurements: the lazy dump and the final delta each walk the task's memory about as
 * fast as the tracker reads it, and an eager restore writes it into fresh memory about as fast as the dest stores
 * pages (a lazy one leaves that to the pager, after the resume); on top, a floor and a cost per VMA per restore
 * mode (CRIU dumps and restores each VMA, and the final delta reads each dumped area: ZDTM maps06's 30,000 VMAs
 * froze it for 3.2 s, 12 times the estimate).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../shared/logging/logger.js';
import { transferRate, type FixedCost, type RoundRecord } from '../shared/policy/convergence.js';
import type { RestoreMode } from './migration/restore-mode.js';

export interface CostSample {
  residentBytes: number;
  /** VMAs of the tree at the migration's start; absent in samples from before issue 13 (counted as none). */
  vmas?: number;
  /** The restore mode; absent in samples from before (counted for either). */
  restore?: RestoreMode;
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

/**
 * The floor of any freeze (criu's start, its parasite, the restore's fork, the Commit) and its cost per VMA of
 * the task, per restore mode, measured with bench/vma-cost.ts (many-maps tasks of 25 to 30,024 VMAs between two
 * netns hosts on the 2-core dev machine, the bytes included; dump, final delta, rebuild and restore each grow
 * with the VMAs). Eager: 170 ms at 25 VMAs, 2.9-3.4 s at 30,024 (fit 305 ms + 96 µs per VMA); lazy, the default:
 * 169 ms at 25, 3.2-4.6 s at 30,024 (fit 486 ms + 128 µs per VMA): its rebuild grows with the VMAs (0.8-1.7 s
 * at 30,024, eager 0.06-0.15 s: the pages image of every private file page, the pagemap split per VMA for the
 * pager) more than its restore saves. They stand in until the history has VMA counts that differ enough to
 * learn them, and bound what is learned from small tasks.
 */
export const FREEZE_COST: Record<RestoreMode, { baseMs: number; perVmaMs: number }> = {
  lazy: { baseMs: 150, perVmaMs: 0.13 },
  eager: { baseMs: 150, perVmaMs: 0.1 },
};

/**
 * How far past the history's largest task (in VMAs, in bytes) what it taught is trusted: further out, a cost per
 * VMA learned from tasks of tens to ~1,500 VMAs (ZDTM) is not extrapolated to 30,000 (maps06 froze 4.3 times
 * longer than estimated), nor a cost per byte from small tasks to a task of 512 MiB (ZDTM maps04) when this
 * migration's own rates are measured.
 */
const EXTRAPOLATE = 2;

/** Least squares of y = X w (rows of equal length, a column of ones first); undefined when singular. */
function leastSquares(rows: readonly number[][], ys: readonly number[]): number[] | undefined {
  const k = rows[0]!.length;
  // Columns scaled to at most 1 (bytes are ~1e9, VMAs ~1e4): the elimination's pivots stay comparable.
  const colScale = Array.from({ length: k }, (_, j) => Math.max(...rows.map((r) => Math.abs(r[j]!))) || 1);
  const x = rows.map((r) => r.map((v, j) => v / colScale[j]!));
  const a = Array.from({ length: k }, (_, i) => [...Array.from({ length: k }, (_, j) => x.reduce((s, r) => s + r[i]! * r[j]!, 0)), x.reduce((s, r, n) => s + r[i]! * ys[n]!, 0)]);
  for (let c = 0; c < k; c++) {
    const pivot = a.slice(c).reduce((best, row, i) => (Math.abs(row[c]!) > Math.abs(a[best]![c]!) ? c + i : best), c);
    [a[c], a[pivot]] = [a[pivot]!, a[c]!];
    if (Math.abs(a[c]![c]!) <= 1e-9 * rows.length) return undefined;
    for (let r = 0; r < k; r++) {
      if (r === c) continue;
      const f = a[r]![c]! / a[c]![c]!;
      for (let j = c; j <= k; j++) a[r]![j]! -= f * a[c]![j]!;
    }
  }
  return a.map((row, i) => row[k]! / row[i]! / colScale[i]!);
}

/** Whether a sample's measure differs enough across the samples to learn its coefficient. */
function spreads(xs: readonly number[], minSpread: number): boolean {
  const m = xs.reduce((s, x) => s + x, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / xs.length);
  return sd > 0.2 * m && sd > minSpread;
}

const median = (xs: readonly number[]): number => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)]!;

export interface FitInput {
  vmas?: number;
  /** This migration's measured cost per byte of the freeze, when measured. */
  perByteMs?: number;
  /** The restore mode chosen at negotiate (default lazy, as migrate's). */
  restore?: RestoreMode;
}

/**
 * The fixed cost from the samples (a sample without a VMA count, from before, counts none). VMA counts that
 * spread across the samples: a + c * VMAs is learned (plus this migration's cost per byte, `perByteMs`, when
 * measured), c at least the mode's measured cost per VMA for a task beyond EXTRAPOLATE times the history's
 * largest. Else c is the mode's, and the rest is a + b * bytes when the sizes spread (not beyond EXTRAPOLATE
 * times the largest when `perByteMs` is measured), proportional when all samples are about one size, or, for a
 * task far from that size, `perByteMs` on a learned base: a history of small tasks must not scale linearly to
 * a task a hundred times larger.
 */
export function fitFixedCost(samples: readonly CostSample[], residentBytes: number, input: FitInput = {}): number | undefined {
  if (samples.length === 0) return undefined;
  const { vmas = 0, perByteMs } = input;
  const perVmaMs = FREEZE_COST[input.restore ?? 'lazy'].perVmaMs;
  const bytes = samples.map((x) => x.residentBytes);
  const counts = samples.map((x) => x.vmas ?? 0);
  const ys = samples.map((x) => x.fixedMs);
  const learnBytes = samples.length >= 2 && spreads(bytes, 0);
  const learnVmas = samples.length >= 3 && spreads(counts, 500);
  if (learnVmas) {
    // a + c * VMAs, on what the bytes leave (this migration's cost per byte) when it is measured. Not a + b *
    // bytes + c * VMAs: in a history where one task has both many VMAs and many bytes (ZDTM maps06), b takes
    // the VMAs' cost and a task with 512 MiB and 40 VMAs (maps04) was estimated at 5.5 s for a 445 ms freeze.
    const part = (i: number): number => (perByteMs === undefined ? 0 : perByteMs * bytes[i]!);
    const w = leastSquares(
      samples.map((_, i) => [1, counts[i]!]),
      ys.map((y, i) => y - part(i)),
    );
    const c = w && vmas > EXTRAPOLATE * Math.max(...counts) ? Math.max(w[1]!, perVmaMs) : w?.[1];
    const fitted = w ? w[0]! + c! * vmas + (perByteMs ?? 0) * residentBytes : undefined;
    if (fitted !== undefined && w![1]! >= 0 && fitted > 0) return fitted;
  }
  const vmaPart = perVmaMs * vmas;
  const rest = samples.map((x, i) => Math.max(0, ys[i]! - perVmaMs * counts[i]!));
  if (learnBytes && !(perByteMs !== undefined && residentBytes > EXTRAPOLATE * Math.max(...bytes))) {
    const w = leastSquares(samples.map((x) => [1, x.residentBytes]), rest);
    if (w && w[1]! >= 0 && w[0]! + w[1]! * residentBytes > 0) return w[0]! + w[1]! * residentBytes + vmaPart;
  }
  const mx = bytes.reduce((s, x) => s + x, 0) / bytes.length;
  if (perByteMs !== undefined && (residentBytes > EXTRAPOLATE * mx || residentBytes < mx / EXTRAPOLATE)) {
    return median(rest.map((r, i) => Math.max(0, r - perByteMs * bytes[i]!))) + perByteMs * residentBytes + vmaPart;
  }
  return median(rest.map((r, i) => r / Math.max(1, bytes[i]!))) * residentBytes + vmaPart;
}

export interface MeasuredRates {
  /** Bytes per second the tracker read the task's memory at (source side). */
  readBytesPerSecond: number | undefined;
  /** Bytes per second the dest stored pages at. */
  storeBytesPerSecond: number | undefined;
}

/**
 * The freeze's fixed cost for a task of `residentBytes` and `vmas` VMAs (issue 13: ZDTM maps06's 30,000) restored
 * in `restore` mode, learned from the samples of that mode only (a sample from before, without one, counts for
 * either): a lazy restore's freeze costs more per VMA than an eager one's.
 */
export function fixedCost(all: readonly CostSample[], residentBytes: number, rates: MeasuredRates, vmas = 0, restore: RestoreMode = 'lazy'): FixedCost {
  const samples = all.filter((x) => (x.restore ?? restore) === restore);
  const { baseMs, perVmaMs } = FREEZE_COST[restore];
  const read = rates.readBytesPerSecond;
  const store = rates.storeBytesPerSecond;
  // Eager: the lazy dump and the final delta each walk the memory about as fast as the tracker reads it, and the
  // restore writes it about as fast as the dest stores pages. Lazy: the restore writes none of it (the pager
  // fills after the resume), and the dump, the final delta and the dest's check of every page's reference
  // together cost about one read of it (ZDTM maps04, 512 MiB: 868 ms frozen, 0.7 s above the floor, where the
  // eager formula said 2.7 s).
  const perByteMs = read && store ? (restore === 'lazy' ? 1000 / read : 2000 / read + 1000 / store) : undefined;
  const vmaNote = vmas > 0 ? `, ${vmas} VMAs` : '';
  const learned = fitFixedCost(samples, residentBytes, { vmas, restore, ...(perByteMs !== undefined && { perByteMs }) });
  if (learned !== undefined) {
    return { ms: learned, source: `learned from ${samples.length} earlier ${restore} migration${samples.length === 1 ? '' : 's'} to this dest${vmaNote}` };
  }
  if (perByteMs !== undefined) {
    return { ms: baseMs + perVmaMs * vmas + perByteMs * residentBytes, source: `estimated from this migration's read and store rates${vmaNote}` };
  }
  // Nothing measured yet (round 0 not done): a conservative 1 s per GiB, replaced after the first round.
  return { ms: baseMs + perVmaMs * vmas + (residentBytes / 2 ** 30) * 1000, source: `provisional, before any measurement${vmaNote}` };
}

/** Teaches the model after a migration: its freeze's cost without the transfer of the final delta's pages. */
export async function learnFixedCost(
  path: string,
  dest: string,
  m: { rounds: readonly RoundRecord[]; residentBytes: number; vmas: number; restore: RestoreMode; downtimeMs: number; finalDeltaBytes: number },
  log: Logger,
): Promise<void> {
  const rate = transferRate(m.rounds);
  const transferMs = rate ? (m.finalDeltaBytes * 1000) / rate : 0;
  try {
    await recordCostSample(dest, { residentBytes: m.residentBytes, vmas: m.vmas, restore: m.restore, fixedMs: Math.max(0, m.downtimeMs - transferMs), at: new Date().toISOString() }, path);
  } catch (e) {
    log.warn('could not record the cost model sample', { err: e }); // the migration itself succeeded
  }
}
