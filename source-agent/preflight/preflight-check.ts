/**
 * One check of the migratability preflight: a pure function of the facts read from /proc (preflight-facts.ts),
 * the operator's CRIU feature choices and the two PeerInfos, that says ok, refuse (CRIU would refuse the task in
 * the freeze, or the dest cannot provide what it needs) or note (worth saying, not blocking).
 */
import type { ErrorKey } from '../../shared/errors/codes.js';
import type { NetworkLock } from '../../shared/criu/criu-features.js';
import type { PeerInfo, TaskNetworkAnswerMessage } from '../../shared/transport/messages.js';
import type { CriuFeaturesChoice } from '../migration/criu-features-choice.js';
import type { AgentFacts, TreeFacts } from './preflight-facts.js';

export type Verdict = 'ok' | 'refuse' | 'note';

export interface PreflightInput {
  tree: TreeFacts;
  agent: AgentFacts;
  criuFeatures: CriuFeaturesChoice;
  /** The source's network-lock method (undefined: none works here). */
  networkLock: NetworkLock | undefined;
  source: PeerInfo;
  /** Absent for `ferry check PID` without --to: the checks that need it say so. */
  dest?: PeerInfo | undefined;
  /** The dest's answer to the tree's external mounts sent with Negotiate: those it lacks. */
  missingMounts?: readonly string[] | undefined;
  /** The dest's answer to the task's own network sent with Negotiate (its bridge, the addresses taken there). */
  taskNetworkAnswer?: TaskNetworkAnswerMessage | null | undefined;
  /** x64, arm64: the syscall numbers of vfork differ. */
  arch: string;
}

export interface Outcome {
  verdict: Verdict;
  message: string;
  /** Which side lacks what is needed (for the FerryError): the dest for the address and CPU checks. */
  side?: 'source' | 'dest';
  /** A refusal under another code than the check's (an existing code for the same condition). */
  key?: ErrorKey;
}

export interface PreflightCheck {
  /** Stable, kebab-case: what `--allow` and the JSON output name. */
  name: string;
  /** The code of a refusal (and of the finding whatever its verdict). */
  key: ErrorKey;
  /** May `--allow NAME` turn its refusal into a note? Only where the operator can know better than /proc. */
  overridable: boolean;
  run(input: PreflightInput): Outcome;
}

export const ok = (message: string): Outcome => ({ verdict: 'ok', message });
export const note = (message: string): Outcome => ({ verdict: 'note', message });
export const refuse = (message: string, side: 'source' | 'dest' = 'source'): Outcome => ({ verdict: 'refuse', message, side });

/** At most `n` items, then how many more: messages stay one line even for a tree of 4096 tasks. */
export function some(items: readonly string[], n = 4): string {
  return items.length <= n ? items.join('; ') : `${items.slice(0, n).join('; ')}; and ${items.length - n} more`;
}
