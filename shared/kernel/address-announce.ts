/**
 * A task's address announced, or probed, on a link, whichever its family: IPv4 by ARP (arp.ts: a gratuitous
 * ARP; an RFC 5227 probe), IPv6 by neighbor discovery (neighbor-discovery.ts: an unsolicited NA with override
 * set; a DAD solicitation). What `ferry run --net` does when the task starts, the dest's Negotiate answer to
 * ask who holds the task's addresses, and the copy (or the original, at a rollback) when its hold is let go.
 */
import { probeArp, sendGratuitousArp } from './arp.js';
import { cidrAddress, cidrFamily } from './ip-cidr.js';
import { probeNeighbor, sendUnsolicitedAdvertisement } from './neighbor-discovery.js';

export interface AnnounceOptions {
  /** Announcements sent; default 1. */
  count?: number;
  /** Between two; default 100 ms. */
  intervalMs?: number;
  signal?: AbortSignal;
}

/** Announces `cidr`'s address (ADDRESS/PREFIX, or a bare address) as `mac`'s from `link` of the namespace `netns`. */
export async function announceAddress(netns: string, link: string, mac: string, cidr: string, o: AnnounceOptions = {}): Promise<void> {
  const ip = cidrAddress(cidr);
  const count = o.count ?? 1;
  if (cidrFamily(ip) === 6) await sendUnsolicitedAdvertisement(netns, link, ip, mac, count, o.intervalMs, o.signal);
  else await sendGratuitousArp(netns, link, ip, mac, count, { intervalMs: o.intervalMs, signal: o.signal });
}

/** The MACs of the stations that answer for `ip` on `link` of `netns` within `timeoutMs`; [] when nobody holds it. */
export function probeAddress(netns: string, link: string, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
  const address = cidrAddress(ip);
  return cidrFamily(address) === 6 ? probeNeighbor(netns, link, address, timeoutMs, signal) : probeArp(netns, link, address, timeoutMs, signal);
}
