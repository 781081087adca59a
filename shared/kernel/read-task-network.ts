/**
 * The task's network identity as its namespace shows it (task-network.ts): what the source's preflight checks,
 * Negotiate sends and the dump carries. Ferry moves exactly the shape `ferry run --net` makes: the namespace
 * holds lo and one veth, whose peer is in this agent's namespace, enslaved to a bridge. The peer is found by
 * the inner end's IFLA_LINK in the namespace its IFLA_LINK_NETNSID names, and checked both ways (the outer end
 * points back at the inner one, in the task's namespace), so that an ifindex that merely matches in another
 * namespace is never taken for the peer. Anything else is refused (TASK_NETWORK_UNSUPPORTED) with what was found.
 */
import { readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../errors/ferry-error.js';
import { formatCidr } from './ip-cidr.js';
import { criuLinkNameProblem } from './link-name.js';
import { listIpv4Addresses, listIpv6Addresses, listLinks, netnsIdIn, type Link } from './rtnetlink.js';
import { THIS_NETNS } from './netns-socket.js';
import type { TaskNetwork } from './task-network.js';

/** A TaskNetwork and the ifindex of its outer end here: what the freeze journals, so that only that link is deleted. */
export interface TaskNetworkPeer {
  network: TaskNetwork;
  outerIfindex: number;
}

/** The wire's bound (proto TaskNetwork): a task with more addresses is refused here rather than by the dest. */
export const MAX_TASK_ADDRESSES = 16;

const unsupported = (found: string): FerryError => new FerryError('TASK_NETWORK_UNSUPPORTED', { phase: 'negotiate', side: 'source', sourceState: 'running', detail: found });

function nsLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

function opensAsNamespace(path: string): boolean {
  try {
    return statSync(path).ino > 0;
  } catch {
    return false;
  }
}

const describe = (l: Link): string => `${l.name} (${l.kind || 'no kind'})`;

/**
 * undefined when the task shares this agent's network namespace (or /proc does not say: a fake one in tests);
 * its TaskNetwork when its namespace has the shape `ferry run --net` makes; TASK_NETWORK_UNSUPPORTED otherwise.
 */
export function readTaskNetwork(rootPid: number, procRoot = '/proc'): TaskNetwork | undefined {
  return readTaskNetworkPeer(rootPid, procRoot)?.network;
}

/** readTaskNetwork, with the outer end's ifindex in this agent's namespace. */
export function readTaskNetworkPeer(rootPid: number, procRoot = '/proc'): TaskNetworkPeer | undefined {
  const taskNs = join(procRoot, String(rootPid), 'ns', 'net');
  // thread-self: this thread's (node's main one, which a caller may have put into another namespace).
  const mine = nsLink(join(procRoot, 'thread-self', 'ns', 'net')) ?? nsLink(join(procRoot, 'self', 'ns', 'net'));
  const its = nsLink(taskNs);
  if (mine === undefined || its === undefined || mine === its) return undefined;
  // A namespace file that cannot be opened: the task is gone (the freeze will say so), or /proc is a fake one.
  if (!opensAsNamespace(taskNs)) return undefined;

  const links = listLinks(taskNs).filter((l) => l.name !== 'lo');
  if (links.length !== 1) {
    const found = links.length === 0 ? 'no link but lo' : `${links.length} links besides lo: ${links.map(describe).join(', ')}`;
    throw unsupported(`the task's network namespace holds ${found}; one veth is needed`);
  }
  const inner = links[0]!;
  if (inner.kind !== 'veth') throw unsupported(`the task's link ${describe(inner)} is not a veth`);
  if (inner.link === undefined || inner.linkNetnsId === undefined) throw unsupported(`the peer of the task's veth ${inner.name} is not in another namespace`);
  if (netnsIdIn(taskNs, THIS_NETNS) !== inner.linkNetnsId) {
    throw unsupported(`the peer of the task's veth ${inner.name} is in a third namespace, not this agent's`);
  }
  const here = listLinks(THIS_NETNS);
  const outer = here.find((l) => l.ifindex === inner.link);
  const taskIdHere = netnsIdIn(THIS_NETNS, taskNs);
  if (!outer || outer.kind !== 'veth' || outer.link !== inner.ifindex || outer.linkNetnsId === undefined || outer.linkNetnsId !== taskIdHere) {
    throw unsupported(`the peer of the task's veth ${inner.name} (ifindex ${inner.link}) is not a veth of this agent's namespace that points back at it`);
  }
  const bridge = here.find((l) => l.ifindex === outer.master);
  if (!bridge || bridge.kind !== 'bridge') {
    throw unsupported(`the task's veth peer ${outer.name} is ${bridge ? `enslaved to ${describe(bridge)}` : 'on no bridge'}; it must be on a bridge`);
  }
  const addresses = [...listIpv4Addresses(taskNs), ...listIpv6Addresses(taskNs)].filter((a) => a.ifindex === inner.ifindex).map(formatCidr);
  if (addresses.length === 0) throw unsupported(`the task's veth ${inner.name} has no IPv4 nor global IPv6 address`);
  if (addresses.length > MAX_TASK_ADDRESSES) throw unsupported(`the task's veth ${inner.name} has ${addresses.length} addresses, at most ${MAX_TASK_ADDRESSES} are supported`);
  if (inner.mac === '') throw unsupported(`the task's veth ${inner.name} has no MAC`);
  // The restore gives these names to criu (`veth[INNER]:OUTER@BRIDGE`): refused here, before the freeze and the dump.
  for (const name of [inner.name, outer.name, bridge.name]) {
    const problem = criuLinkNameProblem(name);
    if (problem) throw unsupported(`${problem}: rename the link (ip link set NAME name NEWNAME)`);
  }
  return { network: { innerLink: inner.name, mac: inner.mac, addresses, outerLink: outer.name, bridge: bridge.name }, outerIfindex: outer.ifindex };
}
