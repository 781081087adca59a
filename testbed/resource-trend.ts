/**
 * Whether what a long-running process holds is flat: after a warm-up (caches filled, JIT done, pools grown),
 * the last sample's RSS stays within a ratio of the median after the warm-up, and its open fds within a small
 * constant of theirs. A leak of one fd per migration, or a steady climb of memory, fails it; the noise of a
 * garbage collector does not. Pure, so the soak's verdict is tested on tables.
 */
import type { ProcessResources } from './process-probes.js';

export interface FlatLimits {
  /** Samples before this many are the warm-up, left out. */
  warmup: number;
  /** The last RSS may be at most this times the post-warm-up median. */
  rssRatio: number;
  /** The last fd count may exceed the post-warm-up median by at most this many. */
  fdSlack: number;
}

export const DEFAULT_FLAT_LIMITS: FlatLimits = { warmup: 10, rssRatio: 1.2, fdSlack: 2 };

export interface FlatVerdict {
  flat: boolean;
  /** Why not, in a few words; empty when flat. */
  reasons: string[];
  samples: number;
  rssMedianBytes: number;
  rssLastBytes: number;
  /** Last / median. */
  rssRatio: number;
  fdMedian: number;
  fdLast: number;
  /** Last minus median. */
  fdGrowth: number;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** samples[0] is after the first migration. */
export function judgeFlat(samples: readonly ProcessResources[], limits: FlatLimits = DEFAULT_FLAT_LIMITS): FlatVerdict {
  const after = samples.slice(limits.warmup);
  const last = samples.at(-1);
  const rssMedianBytes = median(after.map((s) => s.rssBytes));
  const fdMedian = median(after.map((s) => s.fds));
  const rssLastBytes = last?.rssBytes ?? Number.NaN;
  const fdLast = last?.fds ?? Number.NaN;
  const v: FlatVerdict = {
    flat: false,
    reasons: [],
    samples: samples.length,
    rssMedianBytes,
    rssLastBytes,
    rssRatio: rssLastBytes / rssMedianBytes,
    fdMedian,
    fdLast,
    fdGrowth: fdLast - fdMedian,
  };
  // Two samples at least after the warm-up, or "the last within the median" says nothing.
  if (after.length < 2) {
    v.reasons.push(`only ${after.length} sample(s) after a warm-up of ${limits.warmup}`);
    return v;
  }
  if (!(v.rssRatio <= limits.rssRatio)) v.reasons.push(`RSS ${v.rssRatio.toFixed(2)}x the post-warm-up median (limit ${limits.rssRatio}x)`);
  if (!(v.fdGrowth <= limits.fdSlack)) v.reasons.push(`${v.fdGrowth} fds above the post-warm-up median (limit ${limits.fdSlack})`);
  v.flat = v.reasons.length === 0;
  return v;
}
