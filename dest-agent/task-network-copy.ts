/**
 * The restored copy's network on the dest, at the two ends of its session: at the Commit (or a restarted
 * agent's resume of a committed copy) its hold is let go in its namespace and its addresses announced, right
 * before the resume; at an abort the veth's outer end criu made here is deleted if the kill left it.
 */
import { deleteOuterLink, isTaskNetwork, releaseTaskNetworkHold } from '../shared/kernel/task-network-hold.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import type { Logger } from '../shared/logging/logger.js';

/** Lets go of the copy's hold and announces its addresses; failures logged (the copy is resumed regardless). */
export async function announceTaskNetwork(copyPid: number, network: TaskNetwork, log: Logger): Promise<void> {
  const report = await releaseTaskNetworkHold({ netns: `/proc/${copyPid}/ns/net`, network });
  if (report.errors.length > 0) log.error("the copy's network hold is not fully let go: peers may not reach it", { ...report });
  else log.info("the copy's network hold let go", { ...report });
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
