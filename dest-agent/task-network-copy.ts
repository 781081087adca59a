/**
 * The restored copy's network on the dest, at the ends of its session: right after criu restore it must be
 * held (else it could answer before the Commit decided anything); at the Commit its hold is let through while
 * it is still stopped (before `committed` is journaled: a hold that cannot be let go refuses the Commit), and
 * after the resume its addresses announced and the hold deleted; at an abort the veth's outer end criu made
 * here is deleted if the kill left it. A restarted agent finishes what a dead one left (restart-recovery.ts).
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { faultArmed } from '../shared/fault-injection.js';
import { holdTablesIn, isNetworkHeld, releaseNetworkHold } from '../shared/kernel/nft-hold.js';
import {
  deleteOuterLink,
  finishTaskNetworkHold,
  isTaskNetwork,
  openTaskNetworkHold,
  releaseTaskNetworkHold,
  type HoldReleaseReport,
  type TaskNetworkHold,
} from '../shared/kernel/task-network-hold.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import type { Logger } from '../shared/logging/logger.js';

const copyHold = (copyPid: number, network: TaskNetwork): TaskNetworkHold => ({ netns: `/proc/${copyPid}/ns/net`, network });

function logRelease(log: Logger, report: HoldReleaseReport): void {
  if (report.errors.length > 0) log.error("the copy's network hold is not fully let go: peers may not reach it", { ...report });
  else log.info("the copy's network hold let go", { ...report });
}

/**
 * Right after criu restore: the copy is held whole (the source's hold travelled in its ruleset). A copy that is
 * not (criu lost the tables, or they came opened) is refused: it would answer before the Commit, beside the
 * original a rollback resumes. TASK_NETWORK_NOT_HELD_ON_DEST.
 */
export function checkCopyHeld(copyPid: number, network: TaskNetwork): void {
  const { netns } = copyHold(copyPid, network);
  let held: boolean | string;
  try {
    held = isNetworkHeld(netns);
  } catch (e) {
    held = String(e);
  }
  if (held === true) return;
  throw new FerryError('TASK_NETWORK_NOT_HELD_ON_DEST', {
    side: 'dest',
    phase: 'restore',
    detail: held === false ? `${netns}: no whole ferry-hold (tables ${holdTablesIn(netns).map((t) => `${t.family} ${t.name}`).join(', ') || 'none'})` : `${netns}: ${held}`,
  });
}

/** A copy's hold let through: what the open left to do after the resume. */
export interface CopyThrough {
  hold: TaskNetworkHold;
  /** Why the open failed (its tables were deleted instead), if it did. */
  openError: string | undefined;
  /** The tables deleted in place of the open. */
  released: string[];
}

/**
 * Lets traffic through the stopped copy's hold: opened (well under a millisecond), else its tables deleted.
 * Throws when neither worked: the copy is still stopped and held, and must not be resumed as it is.
 */
export function letCopyThrough(copyPid: number, network: TaskNetwork): CopyThrough {
  const hold = copyHold(copyPid, network);
  const stuck = faultArmed('dest.hold-stuck') ? 'FERRY_FAULT dest.hold-stuck' : undefined;
  const openError = stuck ?? openTaskNetworkHold(hold);
  if (openError === undefined) return { hold, openError, released: [] };
  try {
    if (stuck) throw new Error(stuck);
    return { hold, openError, released: releaseNetworkHold(hold.netns) };
  } catch (e) {
    throw new Error(`${openError}; nor deleted: ${String(e)}`, { cause: e });
  }
}

/** After the resume (not awaited by the caller's answer: the copy runs already): announced, the hold deleted. Never rejects. */
export function finishCopyThrough(through: CopyThrough, log: Logger): Promise<void> {
  return finishTaskNetworkHold(through.hold, through.openError).then(
    (report) => logRelease(log, { ...report, released: [...through.released, ...report.released] }),
    (e: unknown) => log.error("the copy's network hold is not fully let go: peers may not reach it", { err: e }),
  );
}

/**
 * A restarted agent's resume of a copy whose commit is decided already: let through, `resume`d, then announced
 * and the hold deleted. A hold that cannot be let go is logged, never thrown: the copy is resumed regardless.
 */
export async function resumeOnTheWire(copyPid: number, network: TaskNetwork, log: Logger, resume: () => void): Promise<void> {
  let through: CopyThrough;
  try {
    through = letCopyThrough(copyPid, network);
  } catch (e) {
    resume();
    log.error("the copy's network hold could not be let go: peers cannot reach it until it is deleted by hand", { err: e });
    return;
  }
  resume();
  await finishCopyThrough(through, log);
}

/**
 * A committed copy found running with hold tables left (the previous agent died between the resume and their
 * deletion, or the deletion failed): they are let go of whole (opened, announced, deleted). A leftover must
 * not stay: CRIU dumps it with the namespace, and an opened one would leave every later move's hold open.
 */
export async function finishLeftoverHold(copyPid: number, network: TaskNetwork, log: Logger): Promise<void> {
  const hold = copyHold(copyPid, network);
  let left: number;
  try {
    left = holdTablesIn(hold.netns).length;
  } catch (e) {
    log.error("the running copy's network hold could not be looked for", { err: e });
    return;
  }
  if (left > 0) logRelease(log, await releaseTaskNetworkHold(hold));
}

/** After the copy's kill: its outer veth deleted here, if the namespace's end did not take it along. */
export function removeOuterLink(copyPid: number | undefined, network: TaskNetwork, log: Logger): void {
  try {
    const deleted = deleteOuterLink(network.outerLink);
    log.info("the copy's veth after the abort", { outerLink: network.outerLink, copyPid, deleted });
  } catch (e) {
    log.error("the copy's veth is not deleted: delete it by hand", { outerLink: network.outerLink, err: e });
  }
}

/** The journaled task network of a session, if it is one (a restarted agent reads it back). */
export function journaledTaskNetwork(v: unknown): TaskNetwork | undefined {
  return isTaskNetwork(v) ? v : undefined;
}
