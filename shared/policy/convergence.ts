/**
 * When to stop pre-copy and freeze: a pure function of the rounds so far, explained in words.
 * The walking skeleton's rule (the full policy with learned fixed costs and throttling comes later):
 *   1. the dirty set is under a floor                        -> freeze ("floor")
 *   2. sending it would fit the downtime budget              -> freeze ("budget")  (QEMU's rule)
 *   3. max rounds reached                                    -> freeze ("max-rounds")
 *   4. the last round did not shrink the dirty set by 10 %   -> freeze ("not-shrinking")  (P.Haul's spirit)
 *   otherwise                                                -> another round
 * Round 0 carries every present page, so rule 2 applies from round 1 and rule 4 (which compares two
 * rounds of written pages) from round 2.
 */
export interface RoundRecord {
  round: number;
  /** Pages sent in this round: everything present in round 0, the pages written since in later rounds. */
  dirtyPages: number;
  bytesSent: number;
  durationMs: number;
}

export interface ConvergencePolicy {
  maxRounds: number;
  maxDowntimeMs: number;
  floorPages: number;
  pageSize: number;
}

export type ConvergenceRule = 'floor' | 'budget' | 'max-rounds' | 'not-shrinking' | 'continue';

export interface Decision {
  action: 'continue' | 'freeze';
  rule: ConvergenceRule;
  reason: string;
  /** The expected transfer time of the final delta at the measured rate, when it could be estimated. */
  expectedTransferMs: number | undefined;
}

/** Bytes per second over the rounds so far (total bytes / total time), or undefined before any data moved. */
export function transferRate(history: readonly RoundRecord[]): number | undefined {
  const bytes = history.reduce((n, r) => n + r.bytesSent, 0);
  const ms = history.reduce((n, r) => n + r.durationMs, 0);
  return bytes > 0 && ms > 0 ? (bytes * 1000) / ms : undefined;
}

export function decideAfterRound(history: readonly RoundRecord[], policy: ConvergencePolicy): Decision {
  const last = history[history.length - 1];
  if (!last) throw new Error('decideAfterRound needs at least one round');
  const prev = history[history.length - 2];
  const rate = transferRate(history);
  const dirtyBytes = last.dirtyPages * policy.pageSize;
  const expectedTransferMs = rate === undefined ? undefined : (dirtyBytes * 1000) / rate;
  const mib = (pages: number): string => `${((pages * policy.pageSize) / 2 ** 20).toFixed(1)} MiB`;
  const decide = (action: Decision['action'], rule: ConvergenceRule, reason: string): Decision => ({ action, rule, reason, expectedTransferMs });

  if (last.dirtyPages <= policy.floorPages) {
    return decide('freeze', 'floor', `freezing: ${last.dirtyPages} dirty pages <= floor of ${policy.floorPages}`);
  }
  if (prev && expectedTransferMs !== undefined && expectedTransferMs <= policy.maxDowntimeMs) {
    return decide(
      'freeze',
      'budget',
      `freezing: the dirty set (${mib(last.dirtyPages)}) sends in ~${Math.round(expectedTransferMs)} ms <= ${policy.maxDowntimeMs} ms budget`,
    );
  }
  if (history.length >= policy.maxRounds) {
    return decide('freeze', 'max-rounds', `freezing: ${history.length} rounds done, the maximum is ${policy.maxRounds}`);
  }
  if (prev && history.length >= 3 && last.dirtyPages > prev.dirtyPages * 0.9) {
    return decide(
      'freeze',
      'not-shrinking',
      `freezing: the dirty set no longer shrinks (${mib(prev.dirtyPages)} -> ${mib(last.dirtyPages)}); more rounds would not help`,
    );
  }
  return decide('continue', 'continue', `round ${last.round + 1}: ${mib(last.dirtyPages)} still dirty`);
}
