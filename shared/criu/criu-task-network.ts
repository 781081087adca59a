/**
 * The criu arguments of a task's own network namespace (shared/kernel/task-network.ts). Dump: none; criu dumps
 * the namespace whole and only warns that the veth's peer is outside it. Restore: `--external
 * veth[INNER]:OUTER@BRIDGE` re-creates the pair, the inner end (with its MAC) in the restored namespace, the
 * outer end in criu's own (the dest agent's), enslaved to BRIDGE and up (netns-tcp-lab: the recipe that works).
 * `--network-lock` is never passed at restore: criu takes the dump's method from inventory.img.
 */
import type { TaskNetwork } from '../kernel/task-network.js';

export function criuTaskNetworkRestoreArgs(n: TaskNetwork | undefined): string[] {
  return n ? ['--external', `veth[${n.innerLink}]:${n.outerLink}@${n.bridge}`] : [];
}
