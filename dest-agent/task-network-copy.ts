/**
 * The restored copy's network on the dest, at the two ends of its session: at the Commit (or a restarted
 * agent's resume of a committed copy) its hold is opened in its namespace right before the resume, and after it
 * its addresses announced and the hold deleted; at an abort the veth's outer end criu made here is deleted if
 * the kill left it.
 */
import { deleteOuterLink, finishTaskNetworkHold, isTaskNetwork, openTaskNetworkHold, type HoldReleaseReport } from '../shared/kernel/task-network-hold.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import type { Logger } from '../shared/logging/logger.js';

function logRelease(log: Logger, report: HoldReleaseReport): void {
  if (report.errors.length > 0) log.error("the copy's network hold is not fully let go: peers may not reach it", { ...report });
  else log.info("the copy's network hold let go", { ...report });
}

/**
 * Lets the copy's traffic through, then `resume`s it at once; then (not awaited by the caller's answer: the
 * copy runs already) announces its addresses and deletes the hold. Failures logged, never thrown.
 */
export function resumeOnTheWire(copyPid: number, network: TaskNetwork, log: Logger, resume: () => void): Promise<void> {
  const hold = { netns: `/proc/${copyPid}/ns/net`, network };
  const openError = openTaskNetworkHold(hold);
  resume();
  return finishTaskNetworkHold(hold, openError).then(
    (report) => logRelease(log, report),
    (e: unknown) => log.error("the copy's network hold is not fully let go: peers may not reach it", { err: e }),
  );
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
