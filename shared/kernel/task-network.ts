/**
 * A task's own network identity (`ferry run --net`): its own network namespace, joined to its host by one veth
 * whose outer end is enslaved to a bridge in the agent's namespace. CRIU dumps and restores that namespace whole
 * (links with their MAC, addresses, routes, nft ruleset, sockets); what the coordinator adds is the veth's outer
 * end (re-created on the dest's bridge, removed from the source at commit), the hold that keeps both copies
 * off the wire between the freeze and the commit, and the announcement of the addresses (gratuitous ARP,
 * unsolicited NA) by the copy that runs. Measured recipe: ../shared/notes/netns-tcp-lab.md.
 */
export interface TaskNetwork {
  /** The task's end of the veth, inside its namespace (e.g. eth0). */
  innerLink: string;
  /** Its MAC, lower-case aa:bb:cc:dd:ee:ff: CRIU keeps it, so the segment sees the same station move. */
  mac: string;
  /** Its addresses on innerLink, ADDRESS/PREFIX: IPv4, and IPv6 (RFC 5952 text) but link-local ones. */
  addresses: string[];
  /** The veth's other end, in the agent's network namespace. */
  outerLink: string;
  /** The bridge outerLink is enslaved to, in the agent's network namespace. */
  bridge: string;
}

/** What differs between two readings of a task's network (addresses as a set), or undefined when none does. */
export function taskNetworkChange(before: TaskNetwork | undefined, now: TaskNetwork | undefined): string | undefined {
  if (before === undefined || now === undefined) {
    if (before === now) return undefined;
    return before === undefined ? 'the task has a network namespace of its own now' : 'the task no longer has a network namespace of its own';
  }
  const changed = (['innerLink', 'mac', 'outerLink', 'bridge'] as const).filter((k) => before[k] !== now[k]).map((k) => `${k} ${before[k]} -> ${now[k]}`);
  const sorted = (a: readonly string[]): string => [...a].sort().join(', ');
  if (sorted(before.addresses) !== sorted(now.addresses)) changed.push(`addresses ${sorted(before.addresses)} -> ${sorted(now.addresses)}`);
  return changed.length > 0 ? changed.join('; ') : undefined;
}
