/**
 * The dest's answer to a task's own network in Negotiate (NegotiateResponse.task_network): whether the bridge
 * the copy would join exists here, is a bridge and is up, and who answers the task's addresses on it. A probe
 * from the bridge asks each address (shared/kernel/address-announce.ts: an RFC 5227 ARP probe for IPv4, a DAD
 * solicitation for IPv6, whose NAs name the holders); during a migration the running original
 * answers with the task's own MAC, which counts as free: only another MAC means the address is taken. Runs in
 * the dest agent's network namespace, where criu restore re-creates the veth's outer end.
 */
import { probeAddress } from '../shared/kernel/address-announce.js';
import { cidrAddress } from '../shared/kernel/ip-cidr.js';
import { THIS_NETNS } from '../shared/kernel/netns-socket.js';
import { listLinks } from '../shared/kernel/rtnetlink.js';
import type { TaskNetworkAnswerMessage, TaskNetworkMessage } from '../shared/transport/messages.js';

/** A station on a LAN answers a probe within a millisecond; this bounds Negotiate's extra time. */
const PROBE_MS = 300;
/** The wire's bound (proto AddressHolders.macs). */
const MAX_MACS = 8;

/** `bridge`: the dest agent's configured bridge, else undefined for the source's bridge's name. */
export async function answerTaskNetwork(net: TaskNetworkMessage, bridge: string | undefined, signal?: AbortSignal): Promise<TaskNetworkAnswerMessage> {
  const name = bridge ?? net.bridge;
  const link = listLinks(THIS_NETNS).find((l) => l.name === name);
  const problem = !link ? `no link ${name}` : link.kind !== 'bridge' ? `${name} is a ${link.kind || 'link of no kind'}, not a bridge` : !link.up ? `${name} is down` : '';
  if (problem) return { bridge: name, bridgeProblem: problem, taken: [] };
  const probes = net.addresses.map(async (cidr) => {
    const address = cidrAddress(cidr);
    const macs = (await probeAddress(THIS_NETNS, name, address, PROBE_MS, signal)).filter((m) => m !== net.mac);
    return { address, macs: macs.slice(0, MAX_MACS) };
  });
  return { bridge: name, bridgeProblem: '', taken: (await Promise.all(probes)).filter((t) => t.macs.length > 0) };
}
