/**
 * When to stop pre-copy, and what to do when it does not converge: a pure function of the rounds so far,
 * every decision explained in words (the progress display and the JSON events show the reason).
 *
 * Measured per round: dirty pages, bytes sent, round time; derived: the dirty rate (bytes written per second
 * while the previous round ran) and the transfer rate (smoothed over rounds that moved enough data to be
 * bandwidth-bound). Expected downtime = dirty bytes / transfer rate + the fixed cost of freeze, dump,
 * rebuild and restore (learned from earlier migrations, or estimated from this one's measured rates; never
 * a constant). After each round, in order:
 *   1. the dirty set is under the floor                                   -> freeze ("floor")
 *   2. the expected downtime fits --max-downtime (from round 1)           -> freeze ("budget")
 *      When the fixed cost alone exceeds the budget no dirty set can fit; the aim is then the smallest
 *      downtime: freeze once sending the dirty set costs <= 10 % of the fixed cost ("small-delta").
 *   3. not converging: the dirty rate exceeds the transfer rate; the dirty set grew by more than 10 %
 *      (P.Haul's rule, from round 2); it shrank by less than half in two rounds in a row (QEMU's
 *      auto-converge trigger, from round 3); or --max-rounds is reached  -> the --on-no-converge action:
 *        freeze:   freeze anyway ("no-converge")
 *        abort:    stop, leave the task untouched and running ("no-converge")
 *        throttle: take CPU from the task (QEMU's auto-converge: 20 %, +10 % per round, up to the cap) and go
 *                  on ("throttle"); once the cap is reached and it still does not converge, freeze
 *                  ("throttle-exhausted"). max-rounds alone does not throttle: the rounds are spent. When even
 *                  the cap would leave the task dirtying faster than the link carries, throttling only
 *                  slows the task for nothing: freeze at once ("throttle-futile").
 *        postcopy: resume the copy on the dest now and send the rest after the resume ("postcopy"): never
 *                  throttles (the task keeps its full speed; KubeVirt's allowPostCopy after its progress timeout).
 *   Whatever the state: once pre-copy has sent 4x the task's memory, freeze ("byte-budget"; under postcopy,
 *   switch to post-copy instead, "postcopy").
 *   otherwise                                                             -> another round ("continue")
 * --post-copy always switches right after round 0, whatever round 0 found ("postcopy-always"). Converged
 * freezes (floor, budget, small-delta) stay ordinary freezes under auto: nothing is left to send afterwards.
 */
export interface RoundRecord {
  round: number;
  /** Pages sent in this round: every present page in round 0, the pages written since in later rounds. */
  dirtyPages: number;
  bytesSent: number;
  durationMs: number;
  /**
   * The part of the round spent sending (the round minus the tracker's own reading and hashing): the hash
   * tracker scans all memory every round, so the whole round time would understate the link.
   */
  transferMs: number;
}

export type NoConvergeAction = 'postcopy' | 'freeze' | 'throttle' | 'abort';

export interface ConvergencePolicy {
  maxRounds: number;
  maxDowntimeMs: number;
  floorPages: number;
  pageSize: number;
  onNoConverge: NoConvergeAction;
  /** --post-copy always: switch to post-copy after round 0 (implies onNoConverge postcopy). */
  postCopyAlways?: boolean | undefined;
  throttleStartPercent: number;
  throttleStepPercent: number;
  throttleMaxPercent: number;
}

export const DEFAULT_THROTTLE = { throttleStartPercent: 20, throttleStepPercent: 10, throttleMaxPercent: 90 } as const;

export interface FixedCost {
  /** Expected freeze + dump + final images + rebuild + restore + resume time, without the page transfer. */
  ms: number;
  /** Where the figure comes from, in words ("learned from 3 earlier migrations to this dest"). */
  source: string;
}

export interface PolicyState {
  history: readonly RoundRecord[];
  /** The task's present memory at the last round, for the byte budget. */
  residentBytes?: number | undefined;
  fixedCost: FixedCost;
  /** Share of the task's CPU currently taken away by auto-converge. */
  throttlePercent: number;
}

export type ConvergenceRule =
  | 'floor'
  | 'budget'
  | 'small-delta'
  | 'no-converge'
  | 'throttle'
  | 'throttle-exhausted'
  | 'throttle-futile'
  | 'byte-budget'
  | 'postcopy'
  | 'postcopy-always'
  | 'postcopy-early'
  | 'continue';

/** postcopy: freeze, and resume the copy on the dest before it holds the task's memory (the rest follows). */
export type DecisionAction = 'continue' | 'freeze' | 'throttle' | 'postcopy' | 'abort';

export interface Decision {
  action: DecisionAction;
  rule: ConvergenceRule;
  reason: string;
  /** For action 'throttle': the new share of CPU to take away. */
  throttlePercent: number;
  dirtyRateBytesPerSecond: number | undefined;
  transferRateBytesPerSecond: number | undefined;
  expectedDowntimeMs: number | undefined;
}

/** Rounds that moved less than this are latency-bound, not bandwidth-bound: their rate says little. */
const MIN_RATE_SAMPLE_BYTES = 4 * 1024 * 1024;
const SMOOTHING = 0.5;
const GROWTH_LIMIT = 1.1;
const POOR_SHRINK = 0.5;
const BYTE_BUDGET_FACTOR = 4;
const SMALL_DELTA_SHARE = 0.1;

/** Bytes per second, smoothed (EWMA) over rounds that moved enough data; undefined before any such round. */
export function transferRate(history: readonly RoundRecord[]): number | undefined {
  let rate: number | undefined;
  for (const r of history) {
    if (r.bytesSent < MIN_RATE_SAMPLE_BYTES || r.transferMs <= 0) continue;
    const sample = (r.bytesSent * 1000) / r.transferMs;
    rate = rate === undefined ? sample : SMOOTHING * sample + (1 - SMOOTHING) * rate;
  }
  if (rate !== undefined) return rate;
  // Only small rounds so far: the best available figure is their total.
  const bytes = history.reduce((n, r) => n + r.bytesSent, 0);
  const ms = history.reduce((n, r) => n + r.transferMs, 0);
  return bytes > 0 && ms > 0 ? (bytes * 1000) / ms : undefined;
}

/** Bytes written per second by the task, seen by the last round (written while the round before it ran). */
export function dirtyRate(history: readonly RoundRecord[], pageSize: number): number | undefined {
  const last = history[history.length - 1];
  const prev = history[history.length - 2];
  if (!last || !prev || prev.durationMs <= 0) return undefined;
  return (last.dirtyPages * pageSize * 1000) / prev.durationMs;
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const rateText = (bps: number): string => `${(bps / 2 ** 20).toFixed(1)} MiB/s`;
const msText = (ms: number): string => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);

export function decideAfterRound(state: PolicyState, policy: ConvergencePolicy): Decision {
  const { history } = state;
  const last = history[history.length - 1];
  if (!last) throw new Error('decideAfterRound needs at least one round');
  const prev = history[history.length - 2];
  const rate = transferRate(history);
  const dRate = dirtyRate(history, policy.pageSize);
  const dirtyBytes = last.dirtyPages * policy.pageSize;
  const transferMs = rate === undefined ? undefined : (dirtyBytes * 1000) / rate;
  const expectedDowntimeMs = transferMs === undefined ? undefined : transferMs + state.fixedCost.ms;
  const decide = (action: Decision['action'], rule: ConvergenceRule, reason: string, throttlePercent = state.throttlePercent): Decision => ({
    action,
    rule,
    reason,
    throttlePercent,
    dirtyRateBytesPerSecond: dRate,
    transferRateBytesPerSecond: rate,
    expectedDowntimeMs,
  });

  // The remote part: what the dest will fetch after the resume (the last round's dirty set, roughly).
  const postCopyNow = (why: string): Decision => decide('postcopy', 'postcopy', `switching to post-copy: ${why}; ${mib(dirtyBytes)} left for after the resume`);
  if (policy.postCopyAlways && history.length === 1) {
    // Round 0 sent everything present: what is left is what the task wrote since it was read.
    return decide('postcopy', 'postcopy-always', `switching to post-copy after round 0 (--post-copy always): ${mib(last.bytesSent)} sent in round 0; the pages written since go after the resume`);
  }

  if (last.dirtyPages <= policy.floorPages) {
    return decide('freeze', 'floor', `freezing: ${last.dirtyPages} dirty pages <= floor of ${policy.floorPages}`);
  }
  if (prev && transferMs !== undefined && expectedDowntimeMs !== undefined) {
    if (expectedDowntimeMs <= policy.maxDowntimeMs) {
      return decide(
        'freeze',
        'budget',
        `freezing: expected downtime ${msText(expectedDowntimeMs)} <= ${msText(policy.maxDowntimeMs)} ` +
          `(${mib(dirtyBytes)} dirty in ~${msText(transferMs)} + fixed ${msText(state.fixedCost.ms)}, ${state.fixedCost.source})`,
      );
    }
    if (state.fixedCost.ms > policy.maxDowntimeMs && transferMs <= SMALL_DELTA_SHARE * state.fixedCost.ms) {
      return decide(
        'freeze',
        'small-delta',
        `freezing: the fixed cost ${msText(state.fixedCost.ms)} (${state.fixedCost.source}) alone exceeds ${msText(policy.maxDowntimeMs)}; ` +
          `the dirty set (${mib(dirtyBytes)}, ~${msText(transferMs)}) adds little to it`,
      );
    }
  }

  const sent = history.reduce((n, r) => n + r.bytesSent, 0);
  if (state.residentBytes && sent >= BYTE_BUDGET_FACTOR * state.residentBytes) {
    if (policy.onNoConverge === 'postcopy') return postCopyNow(`pre-copy has sent ${mib(sent)}, ${BYTE_BUDGET_FACTOR}x the task's ${mib(state.residentBytes)}`);
    return decide('freeze', 'byte-budget', `freezing: pre-copy has sent ${mib(sent)}, ${BYTE_BUDGET_FACTOR}x the task's ${mib(state.residentBytes)}`);
  }

  const notConverging = ((): string | undefined => {
    if (prev && dRate !== undefined && rate !== undefined && dRate > rate) return `dirty rate ${rateText(dRate)} > link ${rateText(rate)}`;
    if (prev && history.length >= 3 && last.dirtyPages > prev.dirtyPages * GROWTH_LIMIT) {
      return `the dirty set grew ${mib(prev.dirtyPages * policy.pageSize)} -> ${mib(dirtyBytes)}`;
    }
    const poorShrink = (k: number): boolean => k >= 2 && history[k]!.dirtyPages > POOR_SHRINK * history[k - 1]!.dirtyPages;
    const k = history.length - 1;
    if (poorShrink(k) && poorShrink(k - 1)) {
      return `the dirty set shrinks by less than half a round (${mib(history[k - 2]!.dirtyPages * policy.pageSize)} -> ${mib(prev!.dirtyPages * policy.pageSize)} -> ${mib(dirtyBytes)})`;
    }
    return undefined;
  })();
  const roundsSpent = history.length >= policy.maxRounds;
  if (!notConverging && !roundsSpent) {
    return decide('continue', 'continue', `round ${last.round + 1}: ${mib(dirtyBytes)} still dirty`);
  }
  const why = notConverging ?? `${history.length} rounds done, the maximum is ${policy.maxRounds}`;
  switch (policy.onNoConverge) {
    case 'postcopy':
      return postCopyNow(why);
    case 'abort':
      return decide('abort', 'no-converge', `aborting: not converging (${why}); the task keeps running here`);
    case 'freeze':
      return decide('freeze', 'no-converge', `freezing anyway: not converging (${why})`);
    case 'throttle': {
      if (dRate !== undefined && rate !== undefined && state.throttlePercent < policy.throttleMaxPercent) {
        // The rate the task would still write at under the heaviest throttle.
        const atCap = (dRate * (100 - policy.throttleMaxPercent)) / (100 - state.throttlePercent);
        if (atCap >= rate) {
          return decide(
            'freeze',
            'throttle-futile',
            `freezing: even at ${policy.throttleMaxPercent} % throttle the task would write ${rateText(atCap)} > link ${rateText(rate)} (${why})`,
          );
        }
      }
      const hardLimit = history.length >= 2 * policy.maxRounds;
      if (notConverging && !hardLimit && state.throttlePercent < policy.throttleMaxPercent) {
        const next =
          state.throttlePercent === 0
            ? policy.throttleStartPercent
            : Math.min(policy.throttleMaxPercent, state.throttlePercent + policy.throttleStepPercent);
        return decide('throttle', 'throttle', `throttling task to ${100 - next} % of its CPU: ${why}`, next);
      }
      if (state.throttlePercent > 0) {
        return decide('freeze', 'throttle-exhausted', `freezing: still not converging at ${state.throttlePercent} % throttle (${why})`);
      }
      return decide('freeze', 'no-converge', `freezing: ${why}`);
    }
  }
}
