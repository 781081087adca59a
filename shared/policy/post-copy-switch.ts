/**
 * The early post-copy switch (--post-copy auto), asked by an exact tracker after its scan and before it reads a
 * page (trackers/tracker.ts BeforeRead): pre-copy cannot converge when the dirty set the scan found is more than
 * half of what the round before it sent (each round would resend most of the last: the policy's POOR_SHRINK rule,
 * which after the round needs two such rounds to fire) and sending it would not fit the freeze budget anyway.
 * Deciding before the round saves sending it: with writes spread over 256 MiB at 128 MiB/s on 1 Gbit/s, round 1
 * would resend two thirds of memory, most of which post-copy then sends again.
 */
import { transferRate, type ConvergenceRule, type RoundRecord } from './convergence.js';

/** The dirty set, as a share of the last round's pages, from which the next round is not worth sending. */
export const EARLY_SWITCH_SHARE = 0.5;

export interface EarlySwitch {
  rule: Extract<ConvergenceRule, 'postcopy-early'>;
  reason: string;
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export function switchBeforeRead(history: readonly RoundRecord[], candidatePages: number, o: { pageSize: number; maxDowntimeMs: number }): EarlySwitch | undefined {
  const last = history[history.length - 1];
  if (!last || last.dirtyPages <= 0) return undefined; // round 0 is always sent whole
  const rate = transferRate(history);
  if (rate === undefined) return undefined;
  const bytes = candidatePages * o.pageSize;
  const transferMs = (bytes * 1000) / rate;
  if (candidatePages <= EARLY_SWITCH_SHARE * last.dirtyPages || transferMs <= o.maxDowntimeMs) return undefined;
  const share = Math.round((100 * candidatePages) / last.dirtyPages);
  return {
    rule: 'postcopy-early',
    reason:
      `switching to post-copy before round ${last.round + 1}: its dirty set (${mib(bytes)}) is ${share} % of what round ${last.round} sent ` +
      `and would take ~${Math.round(transferMs)} ms at ${mib(rate)}/s: pre-copy would resend most of the memory every round`,
  };
}
