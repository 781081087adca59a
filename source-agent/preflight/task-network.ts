/**
 * Task network: a task with its own network identity (`ferry run --net`) moves with its namespace, its veth's
 * outer end re-created on the dest's bridge. Its namespace must have the shape Ferry moves (lo and one veth
 * whose peer is on a bridge here: shared/kernel/read-task-network.ts); the dest must have the bridge, and the
 * task's addresses must be free on the dest's segment (answered by nobody but the task's own MAC, which is the
 * running original's). Negotiate carries the task's network; the dest answers (dest-agent/task-network-answer.ts).
 */
import { TASK_NETWORK_FEATURE } from '../../shared/peer-info.js';
import { note, ok, refuse, some, type Outcome, type PreflightCheck } from './preflight-check.js';

export const taskNetworkCheck: PreflightCheck = {
  name: 'task-network',
  key: 'TASK_NETWORK_UNSUPPORTED',
  overridable: false,
  run({ tree, dest, taskNetworkAnswer }): Outcome {
    if (tree.taskNetworkProblem !== undefined) return refuse(tree.taskNetworkProblem);
    const net = tree.taskNetwork;
    if (!net) return ok("the task shares this agent's network namespace");
    const what = `${net.addresses.join(', ')} on ${net.innerLink} (${net.mac}), outer end ${net.outerLink} on ${net.bridge}`;
    if (!dest) return note(`the task has its own network: ${what}; the dest's bridge and the addresses there are not checked: needs --to`);
    if (!dest.features.includes(TASK_NETWORK_FEATURE) || !taskNetworkAnswer) {
      return refuse(`the task has its own network (${what}) and the dest ${dest.hostname} (an older Ferry) cannot check or restore it`, 'dest');
    }
    const a = taskNetworkAnswer;
    if (a.bridgeProblem !== '') return { ...refuse(`the dest ${dest.hostname} has no usable bridge ${a.bridge} for the task's network: ${a.bridgeProblem}`, 'dest'), key: 'PREFLIGHT_BRIDGE_MISSING' };
    if (a.taken.length > 0) {
      const taken = a.taken.map((t) => `${t.address} answered by ${t.macs.join(', ')}`);
      return { ...refuse(`on the dest ${dest.hostname}'s bridge ${a.bridge}, another station holds an address of the task: ${some(taken)}`, 'dest'), key: 'PREFLIGHT_ADDRESS_IN_USE' };
    }
    return ok(`the task has its own network (${what}); the dest has the bridge ${a.bridge}, and nobody else answers the address(es) there`);
  },
};
